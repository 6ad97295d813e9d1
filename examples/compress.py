"""Compress a trained Keras CNN: `keras_awn.adapt`, fine-tune to a size, `keras_awn.strip`.

    python examples/compress.py                 # a quarter of the filters and hidden units
    python examples/compress.py --fraction 0.5 --epochs 30

The recipe of docs/adapt.md on scikit-learn's 8x8 digits (shipped with scikit-learn, nothing is
downloaded): a plain functional CNN with BatchNormalization and global pooling is trained, made
adaptive with the same predictions, fine-tuned while `WidthAnnealing` cuts its least important
filters and units down to `--fraction` of them, and stripped back to plain Keras layers.
"""

import argparse
import os
import tempfile

import keras
import numpy as np
from sklearn.datasets import load_digits

import keras_awn


def digits(seed=0):
    data = load_digits()
    order = np.random.default_rng(seed).permutation(len(data.target))
    x = (data.images[order][..., None] / 16.0).astype("float32")
    y = data.target[order].astype("int32")
    return (x[:1437], y[:1437]), (x[1437:], y[1437:])


def plain_cnn():
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(32, 3, padding="same", use_bias=False, name="conv_1")(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Conv2D(64, 3, padding="same", activation="relu", name="conv_2")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(64, activation="relu", name="hidden")(x)
    return keras.Model(inputs, keras.layers.Dense(10, name="logits")(x))


def compile_model(model, learning_rate=3e-3):
    model.compile(
        keras.optimizers.Adam(learning_rate),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def accuracy(model, x, y):
    return float(np.mean(np.argmax(model.predict(x, verbose=0), axis=-1) == y))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fraction", type=float, default=0.25)
    parser.add_argument("--epochs", type=int, default=40, help="training the plain model")
    parser.add_argument("--fine-tune-epochs", type=int, default=8)
    args = parser.parse_args(argv)
    keras.utils.set_random_seed(0)
    (x, y), (x_test, y_test) = digits()

    trained = compile_model(plain_cnn())
    trained.fit(x, y, epochs=args.epochs, batch_size=64, verbose=0)
    print(f"trained:    accuracy {accuracy(trained, x_test, y_test):.3f}, "
          f"{trained.count_params():,} parameters")

    # 1. The same function, with learned widths (the layers it keeps are printed).
    model = keras_awn.adapt(trained)
    before = np.abs(model.predict(x_test, verbose=0) - trained.predict(x_test, verbose=0)).max()
    print(f"adapted:    largest prediction change {before:.1e}")

    # 2. Fine-tune while the widths fall to the target (in the first quarter), then hold there.
    compile_model(model)
    anneal = keras_awn.callbacks.WidthAnnealing(
        0, max(1, args.fine_tune_epochs // 4), target_fraction=args.fraction
    )
    history = model.fit(
        x, y, epochs=args.fine_tune_epochs, batch_size=64, verbose=0, callbacks=[anneal]
    )
    print("widths per epoch:", {k: v for k, v in history.history.items() if k.endswith("_width")})

    # 3. Plain Keras layers again: the file loads without keras_awn.
    small = keras_awn.strip(model)
    path = os.path.join(tempfile.mkdtemp(), "small.keras")
    small.save(path)
    small = keras.saving.load_model(path)
    print(f"compressed: accuracy {accuracy(small, x_test, y_test):.3f}, "
          f"{small.count_params():,} parameters, widths {keras_awn.widths(model)}")
    return small


if __name__ == "__main__":
    main()
