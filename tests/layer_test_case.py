"""`run_layer_test`: the contract every keras_awn layer keeps, checked the same way for each.

In the spirit of Keras' own `testing.TestCase.run_layer_test` (which is private to Keras), each
layer test file calls it once for its layer with small inputs.
"""

import copy

import keras
import numpy as np
from keras import ops

from keras_awn.layers import AdaptiveWidthLayer


def _symbolic(value):
    """A `keras.Input` like `value` (its first axis is the batch, or the nodes of a graph)."""
    if isinstance(value, (list, tuple)):
        return [_symbolic(v) for v in value]
    value = np.asarray(value)
    return keras.Input(value.shape[1:], dtype=str(value.dtype))


def _flat(value):
    if isinstance(value, (list, tuple)):
        return [leaf for item in value for leaf in _flat(item)]
    return [value]


def _numpy(value):
    return ops.convert_to_numpy(value)


def _adaptive(layer):
    """The layer and its nested adaptive layers (a block's hidden layers, a cell's maps)."""
    found, stack = [], [layer]
    while stack:
        current = stack.pop()
        if isinstance(current, AdaptiveWidthLayer):
            found.append(current)
        stack.extend(getattr(current, "_layers", []))
        cell = getattr(current, "cell", None)
        if isinstance(cell, keras.layers.Layer):
            stack.append(cell)
    return found


def run_layer_test(
    layer_cls,
    init_kwargs,
    inputs,
    expected_output_shape,
    expected_num_trainable_weights=None,
    expected_num_non_trainable_weights=None,
    tmp_path=None,
):
    """Checks the contract of `layer_cls(**init_kwargs)` called on `inputs`.

    1. `get_config` round-trips through `from_config` (the same config, a working layer).
    2. An eager call returns `expected_output_shape`, and `compute_output_shape` agrees.
    3. A symbolic call (on `keras.Input`s) gives the same shape with an unknown first axis.
    4. The layer holds the expected numbers of trainable and non-trainable weights.
    5. Inference is deterministic, and a `.keras` file of a model holding the layer (written
       under `tmp_path`) loads and predicts the same.
    6. Every adaptive layer inside it keeps the masked-capacity invariants: importances
       positive and strictly decreasing over the active units, zero beyond; a layer that
       exposes its units outputs exactly zero on masked ones.

    Args:
        layer_cls: the layer class.
        init_kwargs: its constructor arguments.
        inputs: a tuple of the positional call arguments (arrays, or lists of arrays for
            layers taking a list).
        expected_output_shape: the output shape of the eager call.
        expected_num_trainable_weights: int or None (not checked).
        expected_num_non_trainable_weights: int or None (not checked).
        tmp_path: a directory for the `.keras` round trip, or None to skip it.

    Returns:
        The built layer.
    """
    layer = layer_cls(**init_kwargs)
    config = layer.get_config()
    clone = layer_cls.from_config(copy.deepcopy(config))  # some from_config pop keys
    assert clone.get_config() == config, "get_config/from_config must round-trip"

    outputs = layer(*inputs)
    assert tuple(outputs.shape) == tuple(expected_output_shape)
    input_shapes = [keras.tree.map_structure(lambda v: tuple(np.shape(v)), x) for x in inputs]
    if len(input_shapes) == 1:
        computed = layer.compute_output_shape(input_shapes[0])
    else:
        computed = layer.compute_output_shape(*input_shapes)
    assert tuple(computed) == tuple(expected_output_shape)

    symbolic_inputs = [_symbolic(x) for x in inputs]
    symbolic_outputs = layer(*symbolic_inputs)
    assert tuple(symbolic_outputs.shape)[1:] == tuple(expected_output_shape)[1:]

    if expected_num_trainable_weights is not None:
        assert len(layer.trainable_weights) == expected_num_trainable_weights
    if expected_num_non_trainable_weights is not None:
        assert len(layer.non_trainable_weights) == expected_num_non_trainable_weights

    first, second = _numpy(layer(*inputs)), _numpy(layer(*inputs))
    np.testing.assert_array_equal(first, second)

    adaptive = _adaptive(layer)
    for inner in adaptive:
        importance = _numpy(inner.importance())
        active = inner.active_units
        assert np.all(importance[:active] > 0)
        assert np.all(np.diff(importance[:active]) < 0)
        assert np.all(importance[active:] == 0)
    if isinstance(layer, AdaptiveWidthLayer) and layer.exposes_units:
        assert layer.active_units < layer.capacity, "the check needs masked units"
        np.testing.assert_array_equal(first[..., layer.active_units :], 0.0)

    if tmp_path is not None:
        model = keras.Model(symbolic_inputs, symbolic_outputs)
        flat_inputs = _flat(list(inputs))
        reference = _numpy(model(flat_inputs if len(flat_inputs) > 1 else flat_inputs[0]))
        path = str(tmp_path / f"{layer.name}.keras")
        model.save(path)
        loaded = keras.saving.load_model(path)
        predicted = _numpy(loaded(flat_inputs if len(flat_inputs) > 1 else flat_inputs[0]))
        np.testing.assert_allclose(predicted, reference, rtol=1e-5, atol=1e-6)
    return layer
