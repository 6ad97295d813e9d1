"""Two interleaved spirals: an adaptive MLP learns its own widths, then is saved, truncated and stripped.

Run it on any backend:

    KERAS_BACKEND=jax python examples/demo.py
    KERAS_BACKEND=torch python examples/demo.py --epochs 40

`--normalization sum` shows the paper's importance normalization instead of keras_awn's default
("mean"): with it, the first layer collapsed to 3 units and 0.76 accuracy on TensorFlow with these
settings (docs/choosing-settings.md explains why).

It prints the widths and accuracy as training goes, how many times the compiled train step was
rebuilt (each layer's growths against the bound log2(final width / initial width) + 2), the
accuracy of truncated copies, and checks that the stripped plain-Keras model predicts the same.
"""

import argparse
import math
import os
import sys
import tempfile
import time

import keras
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras_awn  # noqa: E402
from keras_awn import datasets  # noqa: E402


class PrintProgress(keras.callbacks.Callback):
    """Prints accuracy and widths every few epochs."""

    def __init__(self, every):
        super().__init__()
        self.every = every

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every and epoch + 1 != self.params["epochs"]:
            return
        widths = {
            k[: -len("_width")]: int(v)
            for k, v in logs.items()
            if k.endswith("_width") and not k.startswith("val_")
        }
        print(
            f"epoch {epoch + 1:4d}  loss {logs['loss']:.4f}  accuracy {logs['accuracy']:.3f}  "
            f"val_accuracy {logs.get('val_accuracy', float('nan')):.3f}  widths {widths}"
        )


def build_model(initial_units, normalization):
    return keras_awn.Sequential(
        [
            keras.Input((2,)),
            keras_awn.layers.AdaptiveDense(
                initial_units, activation="relu", importance_normalization=normalization
            ),
            keras_awn.layers.AdaptiveDense(
                initial_units, activation="relu", importance_normalization=normalization
            ),
            keras.layers.Dense(2),
        ]
    )


def accuracy(model, x, y):
    return float(np.mean(np.argmax(model.predict(x, verbose=0), axis=1) == y))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=2000)
    parser.add_argument("--turns", type=float, default=1.0)
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--initial-units", type=int, default=4)
    parser.add_argument(
        "--normalization",
        choices=["sum", "mean"],
        default="mean",
        help="importance normalization: 'mean' (keras_awn's default) or 'sum' (the paper)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=None, help="where to save the .keras files")
    args = parser.parse_args(argv)

    keras.utils.set_random_seed(args.seed)
    x, y = datasets.spirals(args.examples, turns=args.turns, noise=0.03, seed=args.seed)
    (x_train, y_train), (x_test, y_test) = datasets.split(x, y)
    print(
        f"backend: {keras.backend.backend()}  spirals: {args.examples} points, {args.turns} turns  "
        f"initial width: {args.initial_units}  normalization: {args.normalization}"
    )

    model = build_model(args.initial_units, args.normalization)
    model.compile(
        keras.optimizers.Adam(0.01),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    # A capacity floor of 8 units instead of the dense layers' 64, so that this small model
    # shows its reallocations (above 64 units the default floor changes nothing).
    controller = keras_awn.callbacks.WidthController(min_capacity=8)
    start = time.perf_counter()
    model.fit(
        x_train,
        y_train,
        batch_size=args.batch_size,
        epochs=args.epochs,
        validation_data=(x_test, y_test),
        callbacks=[controller, PrintProgress(every=max(args.epochs // 10, 1))],
        verbose=0,
    )
    seconds = time.perf_counter() - start

    widths = keras_awn.widths(model)
    test_accuracy = accuracy(model, x_test, y_test)
    print(f"\ntrained in {seconds:.1f} s  test accuracy {test_accuracy:.3f}  learned widths {widths}")

    # Growths of each layer against log2(final / initial) + 2; the reductions (settle, shrink)
    # are each made once the masked units they remove have cost a rebuild (measured), so they
    # are as many as the rebuild's price allows (docs/capacity-policy.md).
    print("\nreallocations (each rebuilds the compiled train step once):")
    capacities = {layer.name: layer.capacity for layer in keras_awn.adaptive_layers(model)}
    within_bound = True
    for name, width in widths.items():
        events = [event for event in controller.reallocations if event["layer"] == name]
        growths = sum(event["reason"] in ("grow", "regrow") for event in events)
        bound = abs(math.log2(width / args.initial_units)) + 2
        within_bound &= growths <= bound
        print(
            f"  {name}: width {width} in capacity {capacities[name]}, {growths} growth(s) "
            f"(bound {bound:.2f}), {len(events) - growths} reduction(s) paid for by masked "
            "compute"
        )
    print(f"  train step rebuilt {controller.rebuilds} time(s) in total")

    # Without --output the files go to a temporary folder, removed when the demo ends.
    scratch = tempfile.TemporaryDirectory(prefix="keras_awn_spiral_") if not args.output else None
    folder = args.output or scratch.name
    os.makedirs(folder, exist_ok=True)
    adaptive_path = os.path.join(folder, "spiral_adaptive.keras")
    model.save(adaptive_path)
    reloaded = keras.saving.load_model(adaptive_path)
    reload_error = float(np.abs(reloaded.predict(x_test, verbose=0) - model.predict(x_test, verbose=0)).max())
    print(f"\nsaved {adaptive_path} (reload max prediction difference {reload_error:.1e})")

    print("\ntruncation (drop the least important units of each layer):")
    truncation = {}
    for fraction in (0.0, 0.25, 0.5, 0.75):
        small = keras_awn.truncate(model, fraction=fraction)
        truncation[fraction] = accuracy(small, x_test, y_test)
        print(
            f"  fraction {fraction:.2f}  widths {keras_awn.widths(small)}  "
            f"test accuracy {truncation[fraction]:.3f}"
        )

    plain = keras_awn.strip(model)
    reference = model.predict(x_test, verbose=0)
    strip_error = float(np.abs(plain.predict(x_test, verbose=0) - reference).max())
    logit_scale = float(np.abs(reference).max())
    plain_path = os.path.join(folder, "spiral_plain.keras")
    plain.save(plain_path)
    print(
        f"\nstripped to plain Keras {[type(l).__name__ for l in plain.layers]}: max prediction "
        f"difference {strip_error:.1e}; saved {plain_path} (loads without keras_awn)"
    )
    if scratch is not None:
        scratch.cleanup()
    return {
        "seconds": seconds,
        "test_accuracy": test_accuracy,
        "widths": widths,
        "capacities": capacities,
        "rebuilds": controller.rebuilds,
        "reallocations": controller.reallocations,
        "within_rebuild_bound": within_bound,
        "reload_error": reload_error,
        "strip_error": strip_error,
        "logit_scale": logit_scale,
        "truncation": truncation,
    }


if __name__ == "__main__":
    main()
