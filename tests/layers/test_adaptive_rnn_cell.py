"""AdaptiveRNNCell and AdaptiveRNN: adaptive maps with a fixed state, the prior added once per step."""

import warnings

import keras
import numpy as np
import pytest
from keras import ops

import keras_awn
from keras_awn._engine import topology
from keras_awn.layers import AdaptiveRNN
from keras_awn.layers import AdaptiveRNNCell
from keras_awn.layers import MLPRNNCell
from tests.layer_test_case import run_layer_test


def test_adaptive_cell_maps_are_adaptive_mlps_with_a_fixed_state():
    cell = AdaptiveRNNCell(6, initial_units=4, hidden_layers=2)
    layer = keras.layers.RNN(cell)
    assert tuple(layer(np.zeros((2, 3, 5), "float32")).shape) == (2, 6)
    adaptive = topology.adaptive_layers(layer)
    assert len(adaptive) == 4  # two hidden layers in each of the two maps
    assert all(not hidden.adds_prior_in_call for hidden in adaptive)


def test_prior_is_added_once_per_step_not_per_time_step():
    sequences = np.random.default_rng(0).normal(size=(32, 6, 3)).astype("float32")
    labels = (sequences[:, :, 0].sum(axis=1) > 0).astype("int32")
    model = keras_awn.Sequential(
        [keras.Input((6, 3)), AdaptiveRNN(4, initial_units=5, weight_prior_scale=0.5), keras.layers.Dense(2)]
    )
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(sequences, labels, epochs=1, batch_size=32, verbose=0)
    loss = model.evaluate(sequences, labels, batch_size=32, verbose=0, return_dict=True)["loss"]
    logits = ops.convert_to_numpy(model(sequences)).astype("float64")
    log_softmax = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    cross_entropy = -log_softmax[np.arange(32), labels].mean()
    prior = 0.0
    for hidden in topology.adaptive_layers(model):
        width = hidden.active_units
        kernel = ops.convert_to_numpy(hidden.kernel)[:, :width]
        bias = ops.convert_to_numpy(hidden.bias)[:width]
        prior += ((kernel**2).sum() + (bias**2).sum()) / (2 * 0.5**2)
    np.testing.assert_allclose(loss, cross_entropy + prior / 32, rtol=1e-4)
    assert model.losses == []  # nothing was added from inside the loop


def test_a_plain_model_is_warned_that_the_cell_prior_is_missing():
    inputs = keras.Input((4, 3))
    outputs = keras.layers.Dense(2)(keras.layers.RNN(AdaptiveRNNCell(4))(inputs))
    model = keras.Model(inputs, outputs)
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    with pytest.warns(UserWarning, match="recurrent cell"):
        model.fit(
            np.zeros((8, 4, 3), "float32"), np.zeros(8, "int32"), epochs=1, verbose=0,
            callbacks=[keras_awn.callbacks.WidthController(num_examples=8)],
        )


def test_bad_arguments_name_the_argument():
    with pytest.raises(ValueError, match="Received: state_size"):
        AdaptiveRNNCell(0)
    with pytest.raises(ValueError, match="Received: state_size"):
        AdaptiveRNN(None)
    with pytest.raises(ValueError, match="Received: cell"):
        AdaptiveRNN(cell=keras.layers.SimpleRNNCell(4))
    with pytest.raises(ValueError, match="Received: input_map"):
        MLPRNNCell(4, input_map="dense", state_map=keras.layers.Dense(4))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        AdaptiveRNN(4, return_sequences=True)  # RNN arguments pass through


def test_layer_contract(tmp_path):
    # A cell is called by `keras.layers.RNN`, whose config carries it.
    run_layer_test(
        keras.layers.RNN,
        {"cell": keras_awn.layers.AdaptiveRNNCell(6, initial_units=4)},
        (np.random.default_rng(0).normal(size=(2, 5, 3)).astype("float32"),),
        expected_output_shape=(2, 6),
        expected_num_trainable_weights=10,  # two maps: hidden (3) and output Dense (2) each
        expected_num_non_trainable_weights=0,
        tmp_path=tmp_path,
    )


def test_adaptive_rnn_layer_contract(tmp_path):
    run_layer_test(
        keras_awn.layers.AdaptiveRNN,
        {"state_size": 6, "initial_units": 4, "return_sequences": True},
        (np.random.default_rng(0).normal(size=(2, 5, 3)).astype("float32"),),
        expected_output_shape=(2, 5, 6),
        expected_num_trainable_weights=10,
        expected_num_non_trainable_weights=0,
        tmp_path=tmp_path,
    )
