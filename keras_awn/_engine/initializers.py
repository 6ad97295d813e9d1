"""Host-side draws of Keras initializers, for the units a reallocation adds.

Reallocation runs between steps; drawing with the backend's RNG at a new shape compiles a kernel
per shape on JAX (about 0.3 s each), so Keras' built-in initializers are drawn with numpy from the
distributions Keras documents. Other initializers are called eagerly.
"""

import math
import random

import keras
import numpy as np
from keras import ops


def random_seed() -> int:
    # Python's RNG is seeded by keras.utils.set_random_seed, so reallocations are reproducible.
    return random.randint(0, 2**31 - 1)


def _fans(shape):
    """`(fan_in, fan_out)` as Keras computes them for a weight of `shape`."""
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return shape[0], shape[0]
    receptive_field = int(np.prod(shape[:-2])) if len(shape) > 2 else 1
    return shape[-2] * receptive_field, shape[-1] * receptive_field


def _truncated_normal(rng, shape, stddev):
    """Normal draws redrawn until within two standard deviations (Keras' truncation)."""
    values = rng.standard_normal(shape)
    outside = np.abs(values) > 2.0
    while outside.any():
        values[outside] = rng.standard_normal(int(outside.sum()))
        outside = np.abs(values) > 2.0
    return values * stddev


def _numpy_draw(initializer, shape, rng):
    """Draws `initializer` at `shape` on the host for Keras' built-in initializers, or None.

    Reallocation runs between steps; drawing with the backend's RNG at a new shape compiles a
    kernel per shape on JAX (about 0.3 s each), so the standard distributions are drawn with
    numpy from the same distributions Keras documents.
    """
    initializers = keras.initializers
    config = initializer.get_config()
    if isinstance(initializer, initializers.Zeros):
        return np.zeros(shape)
    if isinstance(initializer, initializers.Ones):
        return np.ones(shape)
    if type(initializer) is initializers.Constant:
        return np.full(shape, float(np.asarray(config["value"])))
    if type(initializer) is initializers.RandomNormal:
        return rng.normal(config["mean"], config["stddev"], shape)
    if type(initializer) is initializers.TruncatedNormal:
        return config["mean"] + _truncated_normal(rng, shape, config["stddev"])
    if type(initializer) is initializers.RandomUniform:
        return rng.uniform(config["minval"], config["maxval"], shape)
    if (
        isinstance(initializer, initializers.VarianceScaling)
        and type(initializer).__call__ is initializers.VarianceScaling.__call__
        and config.get("input_axes") is None
        and config.get("output_axes") is None
    ):
        fan_in, fan_out = _fans(shape)
        fans = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2.0}
        scale = initializer.scale / max(1.0, fans[initializer.mode])
        if initializer.distribution == "truncated_normal":
            return _truncated_normal(rng, shape, math.sqrt(scale) / 0.87962566103423978)
        if initializer.distribution == "untruncated_normal":
            return rng.normal(0.0, math.sqrt(scale), shape)
        limit = math.sqrt(3.0 * scale)
        return rng.uniform(-limit, limit, shape)
    return None


def draw(initializer, shape, dtype):
    """A fresh draw of `initializer` at `shape`, with a new seed (an unseeded Keras initializer
    reuses one default seed, which would repeat the same values at every reallocation)."""
    value = _numpy_draw(initializer, tuple(shape), np.random.default_rng(random_seed()))
    if value is not None:
        return value.astype(dtype)
    config = initializer.get_config()
    if "seed" in config:
        initializer = initializer.__class__.from_config({**config, "seed": random_seed()})
    return np.array(ops.convert_to_numpy(initializer(shape, dtype=dtype)), copy=True)
