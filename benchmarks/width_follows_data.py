"""Does the learned width follow task difficulty? Easy task (double moon) vs hard task (two spirals,
two turns), same model, same start, same settings, for both importance normalizations.

    KERAS_BACKEND=jax python benchmarks/width_follows_data.py [--epochs 30] [--seeds 3]

Prints a Markdown table: per seed and normalization, the learned widths and final training
accuracy on each task, and whether the hard task ended wider (sum of widths).
"""

import argparse
import os
import sys

import keras

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras_awn  # noqa: E402
from keras_awn import datasets  # noqa: E402


def run(task, normalization, seed, epochs, examples):
    keras.utils.set_random_seed(seed)
    if task == "hard_spiral":
        x, y = datasets.spirals(examples, turns=2.0, noise=0.02, seed=seed)
    else:
        x, y = datasets.moons(examples, noise=0.1, seed=seed)
    model = keras_awn.Sequential(
        [keras.Input((2,))]
        + [
            keras_awn.layers.AdaptiveDense(
                16, activation="relu", importance_normalization=normalization
            )
            for _ in range(2)
        ]
        + [keras.layers.Dense(2)]
    )
    model.compile(
        keras.optimizers.Adam(0.01),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    history = model.fit(x, y, batch_size=128, epochs=epochs, verbose=0)
    return list(keras_awn.widths(model).values()), history.history["accuracy"][-1]


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--examples", type=int, default=3000)
    args = parser.parse_args(argv)
    print(f"backend {keras.backend.backend()}, {args.examples} examples, {args.epochs} epochs, "
          "2 x AdaptiveDense(16), Adam 0.01, batch 128, quantile 0.9")
    print("| normalization | seed | moons widths (acc) | hard spiral widths (acc) | hard wider |")
    print("| --- | --- | --- | --- | --- |")
    for normalization in ("sum", "mean"):
        for seed in range(args.seeds):
            easy, easy_acc = run("moons", normalization, seed, args.epochs, args.examples)
            hard, hard_acc = run("hard_spiral", normalization, seed, args.epochs, args.examples)
            print(f"| {normalization} | {seed} | {easy} ({easy_acc:.3f}) | {hard} ({hard_acc:.3f}) "
                  f"| {'yes' if sum(hard) > sum(easy) else 'no'} |", flush=True)


if __name__ == "__main__":
    main()
