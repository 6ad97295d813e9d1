"""MLPRNNCell: the recurrence with any two Keras maps (the fixed-width form of the adaptive cell)."""


import keras
import numpy as np
from keras import ops

import keras_awn
from keras_awn.layers import MLPRNNCell
from tests.layer_test_case import run_layer_test


def numpy_dense(layer, x):
    kernel, bias = (ops.convert_to_numpy(v).astype("float64") for v in (layer.kernel, layer.bias))
    return x @ kernel + bias


def test_mlp_cell_runs_the_recurrence():
    cell = MLPRNNCell(
        5, input_map=keras.layers.Dense(5), state_map=keras.layers.Dense(5, use_bias=False)
    )
    rnn = keras.layers.RNN(cell, return_sequences=True)
    sequences = np.random.default_rng(0).normal(size=(2, 4, 3)).astype("float32")
    outputs = ops.convert_to_numpy(rnn(sequences))
    state = np.zeros((2, 5))
    kernel_h = ops.convert_to_numpy(cell.state_map.kernel).astype("float64")
    for step in range(4):
        state = np.tanh(numpy_dense(cell.input_map, sequences[:, step]) + state @ kernel_h)
        np.testing.assert_allclose(outputs[:, step], state, rtol=1e-5, atol=1e-5)


def test_layer_contract(tmp_path):
    cell = keras_awn.layers.MLPRNNCell(
        6, input_map=keras.layers.Dense(6), state_map=keras.layers.Dense(6)
    )
    run_layer_test(
        keras.layers.RNN,
        {"cell": cell},
        (np.random.default_rng(0).normal(size=(2, 5, 3)).astype("float32"),),
        expected_output_shape=(2, 6),
        expected_num_trainable_weights=4,
        expected_num_non_trainable_weights=0,
        tmp_path=tmp_path,
    )
