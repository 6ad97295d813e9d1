"""Dynamic compression: annealing the width prior shrinks a trained network while it keeps learning.

An adaptive MLP first learns the one-turn spiral freely (a weak width prior centred on 4 units).
From `--start` epoch on, `keras_awn.callbacks.WidthAnnealing` lowers the prior's scale linearly
to `--final-fraction` of it (the paper anneals by 90%): the pull toward 4 units grows and the
widths fall, while the data keeps the units it needs. A twin trained without annealing is the
reference. Run it on any backend:

    KERAS_BACKEND=jax python examples/annealing.py
    KERAS_BACKEND=torch python examples/annealing.py --epochs 60

It prints, every few epochs, the widths and test accuracy of both runs, then the final table.
"""

import argparse
import os
import sys

import keras

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras_awn  # noqa: E402
from keras_awn import datasets  # noqa: E402


def build_model(initial_units, scale):
    # Annealing acts through the width parameter's gradient: the paper's width learning.
    annealed = {"width_prior": {"mean_units": 4, "scale": scale}, "width_learning": "gradient"}
    return keras_awn.Sequential(
        [
            keras.Input((2,)),
            keras_awn.layers.AdaptiveDense(initial_units, activation="relu", **annealed),
            keras_awn.layers.AdaptiveDense(initial_units, activation="relu", **annealed),
            keras.layers.Dense(2),
        ]
    )


class Trace(keras.callbacks.Callback):
    """Records the widths and test accuracy at the end of each epoch."""

    def __init__(self, x_test, y_test):
        super().__init__()
        self.x_test, self.y_test, self.rows = x_test, y_test, []

    def on_epoch_end(self, epoch, logs=None):
        logits = keras.ops.convert_to_numpy(self.model(self.x_test))
        accuracy = float((logits.argmax(axis=1) == self.y_test).mean())
        self.rows.append((epoch + 1, sum(keras_awn.widths(self.model).values()), accuracy))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=80)
    parser.add_argument("--start", type=int, default=30, help="first annealed epoch")
    parser.add_argument("--final-fraction", type=float, default=0.1)
    parser.add_argument("--initial-units", type=int, default=32)
    parser.add_argument("--scale", type=float, default=3.0, help="initial width prior scale")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    keras.utils.set_random_seed(args.seed)
    x, y = datasets.spirals(3000, turns=1.0, noise=0.05, seed=args.seed)
    split = 2400
    (x_train, y_train), (x_test, y_test) = (x[:split], y[:split]), (x[split:], y[split:])

    annealed = build_model(args.initial_units, args.scale)
    reference = build_model(args.initial_units, args.scale)
    reference.set_weights(annealed.get_weights())
    traces = {}
    for name, model in (("annealed", annealed), ("reference", reference)):
        model.compile(
            keras.optimizers.Adam(0.01),
            keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        trace = Trace(x_test, y_test)
        callbacks = [trace]
        if name == "annealed":
            callbacks.append(
                keras_awn.callbacks.WidthAnnealing(
                    args.start, args.epochs, final_fraction=args.final_fraction
                )
            )
        # The same shuffling for both: the runs are identical until annealing starts.
        keras.utils.set_random_seed(args.seed)
        model.fit(x_train, y_train, epochs=args.epochs, batch_size=64, verbose=0, callbacks=callbacks)
        traces[name] = trace.rows
        print(f"{name}: final widths {keras_awn.widths(model)}")

    print(
        "\n| epoch | annealed: total width | annealed: test accuracy "
        "| reference: total width | reference: test accuracy |"
    )
    print("| --- | --- | --- | --- | --- |")
    every = max(1, args.epochs // 8)
    for (epoch, width, accuracy), (_, ref_width, ref_accuracy) in zip(traces["annealed"], traces["reference"]):
        if epoch % every == 0 or epoch == args.epochs or epoch == args.start:
            print(f"| {epoch} | {width} | {accuracy:.3f} | {ref_width} | {ref_accuracy:.3f} |")
    at_start = traces["annealed"][args.start - 1]
    final = traces["annealed"][-1]
    print(
        f"\nAnnealing from epoch {args.start}: total width {at_start[1]} -> {final[1]}, "
        f"test accuracy {at_start[2]:.3f} -> {final[2]:.3f} "
        f"(reference: width {traces['reference'][-1][1]}, accuracy {traces['reference'][-1][2]:.3f})."
    )
    return {"annealed": traces["annealed"], "reference": traces["reference"]}


if __name__ == "__main__":
    main()
