"""Where keras_awn meets Keras saving: capacities in weight files, portable compile configs."""

import contextlib

from keras_awn._engine import keras_internals


def stored_capacity(layer, store):
    """The number of units the weights `store` holds for adaptive `layer`, or None if it cannot
    be read (Keras stores a layer's own variables by their position in its lists)."""
    variable, axis = layer.output_unit_variables()[0]
    position = next(
        (i for i, v in enumerate(keras_internals.own_variables(layer)) if v is variable), None
    )
    try:
        shape = store[f"{position}"].shape
    except (KeyError, TypeError, AttributeError):
        return None
    if len(shape) != len(variable.shape):
        return None
    return int(shape[axis])


@contextlib.contextmanager
def resizing_on_load(layers, resize_layer):
    """While active, an adaptive layer among `layers` whose stored weights hold another
    capacity is first reallocated by `resize_layer(layer, capacity)`, then loaded.

    Outside of it, such a file is refused (`AdaptiveWidthLayer.load_own_variables`).
    """
    for layer in layers:
        layer.training_state.resize_on_load = resize_layer
    try:
        yield
    finally:
        for layer in layers:
            layer.training_state.resize_on_load = None


def portable_compile_config(config):
    """Names optimizers by their public class so that a file loads on every backend.

    On torch, `keras.optimizers.Adam()` is an instance of a torch-only subclass that Keras
    serializes under its private module; loading such a file on JAX or TensorFlow would import
    torch and train with a torch optimizer.
    """
    config = dict(config)
    optimizer = config.get("optimizer")
    if isinstance(optimizer, dict) and str(optimizer.get("module", "")).startswith(
        "keras.src.backend."
    ):
        config["optimizer"] = {**optimizer, "module": "keras.optimizers", "registered_name": None}
    return config
