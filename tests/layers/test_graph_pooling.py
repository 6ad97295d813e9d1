"""GraphPooling: node features pooled per graph, padding left out."""

import numpy as np
import pytest
from keras import ops

import keras_awn
from keras_awn.graph_data import batch_graphs
from keras_awn.layers import GraphPooling
from tests.layer_test_case import run_layer_test

TRIANGLE = (np.arange(6, dtype="float32").reshape(3, 2), [[0, 1], [1, 2], [2, 0]])
EDGE = (np.ones((2, 2), "float32"), [[0, 1]])


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_pooling_per_graph_leaves_padding_out(reduction):
    batch = batch_graphs([TRIANGLE, EDGE], num_graphs=3, num_nodes=7, num_edges=4)
    pooled = ops.convert_to_numpy(
        GraphPooling(3, reduction=reduction)([batch["node_features"], batch["graph_id"]])
    )
    reduce = np.sum if reduction == "sum" else np.mean
    np.testing.assert_allclose(pooled[0], reduce(TRIANGLE[0], axis=0))
    np.testing.assert_allclose(pooled[1], reduce(EDGE[0], axis=0))
    np.testing.assert_allclose(pooled[2], 0.0)  # a padding graph has no nodes


def test_layer_contract(tmp_path):
    nodes = np.random.default_rng(0).normal(size=(7, 5)).astype("float32")
    graph_id = np.array([0, 0, 0, 1, 1, 2, 2], "int32")  # id 2: padding, left out
    run_layer_test(
        keras_awn.layers.GraphPooling,
        {"num_graphs": 2},
        ([nodes, graph_id],),
        expected_output_shape=(2, 5),
        expected_num_trainable_weights=0,
        expected_num_non_trainable_weights=0,
        tmp_path=tmp_path,
    )
