"""GraphPooling: node features pooled per graph, padding left out."""

import numpy as np
import pytest
from keras import ops

from keras_awn.graph_data import batch_graphs
from keras_awn.layers import GraphPooling

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
