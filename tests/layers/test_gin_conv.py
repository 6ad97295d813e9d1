"""GINConv: the GIN update, checked against a dense adjacency in numpy."""

import keras
import numpy as np
from keras import ops

import keras_awn
from keras_awn.graph_data import batch_graphs
from keras_awn.layers import GINConv
from tests.layer_test_case import run_layer_test

TRIANGLE = (np.arange(6, dtype="float32").reshape(3, 2), [[0, 1], [1, 2], [2, 0]])
EDGE = (np.ones((2, 2), "float32"), [[0, 1]])


def numpy_adjacency(edge_index, num_nodes):
    adjacency = np.zeros((num_nodes, num_nodes))
    for source, target in edge_index:
        adjacency[target, source] += 1.0
    return adjacency


def test_gin_convolution_sums_neighbours():
    batch = batch_graphs([TRIANGLE, EDGE], num_nodes=7, num_edges=5)
    conv = GINConv(keras.layers.Dense(3, activation="relu"), epsilon=0.25)
    outputs = ops.convert_to_numpy(conv([batch["node_features"], batch["edge_index"]]))
    nodes = batch["node_features"].astype("float64")
    combined = 1.25 * nodes + numpy_adjacency(batch["edge_index"], 7) @ nodes
    kernel, bias = (ops.convert_to_numpy(v) for v in (conv.mlp.kernel, conv.mlp.bias))
    np.testing.assert_allclose(outputs, np.maximum(combined @ kernel + bias, 0), rtol=1e-5, atol=1e-5)


def test_layer_contract(tmp_path):
    nodes = np.random.default_rng(0).normal(size=(7, 3)).astype("float32")
    edges = np.array([[0, 1], [1, 0], [1, 2], [2, 1], [3, 4], [4, 3], [5, 6]], "int32")
    run_layer_test(
        keras_awn.layers.GINConv,
        {"mlp": keras.layers.Dense(5, activation="relu")},
        ([nodes, edges],),
        expected_output_shape=(7, 5),
        expected_num_trainable_weights=3,  # epsilon, kernel, bias
        expected_num_non_trainable_weights=0,
        tmp_path=tmp_path,
    )
