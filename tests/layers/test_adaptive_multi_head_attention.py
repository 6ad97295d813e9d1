"""`AdaptiveMultiHeadAttention` against Keras' own `MultiHeadAttention` (an independent
implementation)."""

import keras
import numpy as np
import pytest
from keras import ops

import keras_awn
from keras_awn.layers import AdaptiveDense
from keras_awn.layers import AdaptiveMultiHeadAttention
from tests.layer_test_case import run_layer_test


def keras_attention_like(layer, query, value):
    """A Keras MultiHeadAttention with `layer`'s weights, each head's output projection scaled by
    the head's importance (the closed form of what the adaptive layer computes)."""
    reference = keras.layers.MultiHeadAttention(
        num_heads=layer.capacity, key_dim=layer.key_dim, value_dim=layer.value_dim
    )
    reference(query, value)
    importance = ops.convert_to_numpy(layer.importance())
    for dense, kernel, bias in (
        (reference._query_dense, layer.query_kernel, layer.query_bias),
        (reference._key_dense, layer.key_kernel, layer.key_bias),
        (reference._value_dense, layer.value_kernel, layer.value_bias),
    ):
        dense.set_weights([ops.convert_to_numpy(kernel), ops.convert_to_numpy(bias)])
    output_kernel = ops.convert_to_numpy(layer.output_kernel) * importance[:, None, None]
    reference._output_dense.set_weights([output_kernel, ops.convert_to_numpy(layer.output_bias)])
    return reference


@pytest.mark.parametrize("masking", ["none", "attention_mask", "causal"])
def test_matches_keras_multi_head_attention_with_importance_scaled_heads(masking):
    rng = np.random.default_rng(0)
    query = rng.normal(size=(2, 5, 6)).astype("float32")
    value = rng.normal(size=(2, 7, 4)).astype("float32")
    layer = AdaptiveMultiHeadAttention(3, key_dim=4)
    layer(query, value)
    reference = keras_attention_like(layer, query, value)
    kwargs = {}
    if masking == "attention_mask":
        kwargs["attention_mask"] = rng.random((2, 5, 7)) > 0.3
    if masking == "causal":
        value = query[:, :, :4]
        kwargs["use_causal_mask"] = True
    outputs = ops.convert_to_numpy(layer(query, value, **kwargs))
    expected = ops.convert_to_numpy(reference(query, value, **kwargs))
    assert outputs.shape == (2, 5, 6)
    np.testing.assert_allclose(outputs, expected, rtol=1e-5, atol=1e-5)


def test_heads_are_ordered_by_importance():
    layer = AdaptiveMultiHeadAttention(2, key_dim=4, capacity=6)
    tokens = np.random.default_rng(0).normal(size=(2, 3, 8)).astype("float32")
    layer(tokens, tokens)
    importance = ops.convert_to_numpy(layer.importance())
    active = layer.active_units
    assert active in range(1, 6)
    assert np.all(np.diff(importance[:active]) < 0) and np.all(importance[active:] == 0)


@pytest.mark.parametrize(
    "arguments,name",
    [
        ({"initial_heads": 0, "key_dim": 4}, "initial_units"),
        ({"initial_heads": 2, "key_dim": 0}, "key_dim"),
        ({"initial_heads": 2, "key_dim": 4, "value_dim": -1}, "value_dim"),
        ({"initial_heads": 2, "key_dim": 4, "dropout": 1.5}, "dropout"),
        ({"initial_heads": 2, "key_dim": 4, "quantile": 1.0}, "quantile"),
    ],
)
def test_bad_arguments_name_the_argument(arguments, name):
    with pytest.raises(ValueError, match=f"Received: {name}"):
        AdaptiveMultiHeadAttention(**arguments)


def test_non_sequence_inputs_are_refused():
    layer = AdaptiveMultiHeadAttention(2, key_dim=4)
    with pytest.raises(ValueError, match="3D `query`"):
        layer(np.zeros((2, 8), "float32"), np.zeros((2, 8), "float32"))


def test_an_adaptive_layer_cannot_feed_attention_directly():
    tokens = keras.Input((4, 8))
    hidden = AdaptiveDense(8, activation="relu")(tokens)
    attended = AdaptiveMultiHeadAttention(2, key_dim=4, name="attention_reader")(hidden, hidden)
    with pytest.raises(ValueError, match="attention_reader"):
        keras_awn.Model(tokens, keras.layers.Dense(2)(attended))


def test_layer_contract(tmp_path):
    rng = np.random.default_rng(0)
    query = rng.normal(size=(2, 5, 8)).astype("float32")
    value = rng.normal(size=(2, 4, 6)).astype("float32")
    run_layer_test(
        keras_awn.layers.AdaptiveMultiHeadAttention,
        {"initial_heads": 2, "key_dim": 4},
        (query, value),
        expected_output_shape=(2, 5, 8),
        # Query, key, value and output projections (kernel and bias), the width parameter.
        expected_num_trainable_weights=9,
        expected_num_non_trainable_weights=0,
        tmp_path=tmp_path,
    )
