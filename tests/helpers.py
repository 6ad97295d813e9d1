"""Shared test helpers: small models, data, a numpy reference forward pass, subprocess runs."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
from keras import ops

import keras_awn
from keras_awn import datasets

BACKENDS = ("jax", "tensorflow", "torch")


def spiral_data(num_examples=256, seed=0):
    return datasets.spirals(num_examples, turns=1.0, noise=0.05, seed=seed)


def _small_capacity(units, layer_kwargs):
    """`layer_kwargs` with a capacity of twice `units` unless given: below the dense layers'
    64-unit floor, so that the tests' short fits reallocate."""
    return {"capacity": 2 * units, **layer_kwargs}


def sequential_model(initial_units=(8, 8), activation="relu", **layer_kwargs):
    layers = [keras.Input((2,))]
    layers += [
        keras_awn.layers.AdaptiveDense(
            units, activation=activation, **_small_capacity(units, layer_kwargs)
        )
        for units in initial_units
    ]
    layers.append(keras.layers.Dense(2))
    return keras_awn.Sequential(layers)


def functional_model(initial_units=(8, 8), **layer_kwargs):
    inputs = keras.Input((2,))
    x = inputs
    for units in initial_units:
        x = keras_awn.layers.AdaptiveDense(
            units, activation="relu", **_small_capacity(units, layer_kwargs)
        )(x)
    outputs = keras.layers.Dense(2)(x)
    return keras_awn.Model(inputs, outputs)


def compile_classifier(model, optimizer=None):
    model.compile(
        optimizer or keras.optimizers.Adam(0.01),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def numpy_exponential_importance(raw, capacity, active, normalization):
    """Closed-form importance of the exponential distribution, in float64 numpy."""
    rate = np.log1p(np.exp(raw))
    index = np.arange(capacity)
    mass = np.exp(-rate * index) * (1.0 - np.exp(-rate))
    mass = np.where(index < active, mass, 0.0)
    if normalization == "sum":
        return mass / mass.sum()
    return mass * active / mass.sum()


def numpy_exponential_width(raw, quantile, min_units=1, max_units=None):
    rate = np.log1p(np.exp(raw))
    width = np.ceil(-np.log1p(-quantile) / rate) + 2
    return int(np.clip(width, min_units, max_units if max_units is not None else np.inf))


ACTIVATIONS = {
    "relu": lambda z: np.maximum(z, 0.0),
    "linear": lambda z: z,
    "tanh": np.tanh,
    "sigmoid": lambda z: 1.0 / (1.0 + np.exp(-z)),
}


def numpy_adaptive_dense(layer, x, activation="relu"):
    """Reference forward pass of an exponential AdaptiveDense, computed in numpy."""
    kernel = ops.convert_to_numpy(layer.kernel).astype("float64")
    bias = ops.convert_to_numpy(layer.bias).astype("float64")
    raw = float(ops.convert_to_numpy(layer.width_parameter))
    width = numpy_exponential_width(raw, layer.quantile, layer.min_units, layer.max_units)
    active = min(width, layer.capacity)
    importance = numpy_exponential_importance(
        raw, layer.capacity, active, layer.importance_normalization
    )
    return ACTIVATIONS[activation](x @ kernel + bias) * importance


def run_python(code, backend, env_extra=None, timeout=300):
    """Runs `code` in a fresh Python process on `backend`; returns its JSON printed last line."""
    env = dict(os.environ)
    env["KERAS_BACKEND"] = backend
    env.update(env_extra or {})
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )
    if result.returncode != 0:
        raise AssertionError(
            f"Subprocess on {backend} failed ({result.returncode}):\n{result.stderr[-4000:]}"
        )
    return json.loads(result.stdout.strip().splitlines()[-1])


class BatchLossRecorder(keras.callbacks.Callback):
    """Records the running loss reported after every batch."""

    def __init__(self):
        super().__init__()
        self.losses = []

    def on_train_batch_end(self, batch, logs=None):
        self.losses.append(float(logs["loss"]))
