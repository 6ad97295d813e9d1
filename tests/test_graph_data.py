"""keras_awn.graph_data: graphs joined into padded, fixed-size batches."""

import numpy as np
import pytest

from keras_awn.graph_data import GraphBatches
from keras_awn.graph_data import batch_graphs
from tests.families import cycles_and_paths

TRIANGLE = (np.arange(6, dtype="float32").reshape(3, 2), [[0, 1], [1, 2], [2, 0]])
EDGE = (np.ones((2, 2), "float32"), [[0, 1]])


def test_batch_graphs_joins_and_pads():
    batch = batch_graphs([TRIANGLE, EDGE], num_graphs=3, num_nodes=8, num_edges=6)
    np.testing.assert_array_equal(batch["graph_id"], [0, 0, 0, 1, 1, 3, 3, 3])
    np.testing.assert_array_equal(batch["edge_index"][:4], [[0, 1], [1, 2], [2, 0], [3, 4]])
    # Padding edges join the last (padding) node to itself: no real node receives them.
    np.testing.assert_array_equal(batch["edge_index"][4:], [[7, 7], [7, 7]])
    np.testing.assert_array_equal(batch["node_features"][5:], 0.0)
    default = batch_graphs([TRIANGLE, TRIANGLE])
    assert default["node_features"].shape == (7, 2)
    assert default["graph_id"].tolist() == [0, 0, 0, 1, 1, 1, 2]


@pytest.mark.parametrize(
    "graphs,kwargs,message",
    [
        ([], {}, "Received: graphs"),
        ([(np.ones((2, 1)), [[0, 2]])], {}, "does not exist"),
        ([(np.ones(3), [])], {}, "must be 2D"),
        ([TRIANGLE], {"num_nodes": 3}, "num_nodes"),
        ([TRIANGLE, EDGE], {"num_graphs": 1}, "num_graphs"),
        ([TRIANGLE, (np.ones((2, 3)), [])], {}, "same number of node features"),
    ],
)
def test_bad_graphs_are_refused_clearly(graphs, kwargs, message):
    with pytest.raises(ValueError, match=message):
        batch_graphs(graphs, **kwargs)


def test_graph_batches_have_fixed_shapes_and_weight_out_padding():
    graphs, labels = cycles_and_paths(21)
    batches = GraphBatches(graphs, labels, batch_size=8, shuffle=True, seed=0)
    assert len(batches) == 3 and batches.num_examples == 21
    shapes = {tuple(tuple(a.shape) for a in batches[i][0]) for i in range(3)}
    assert len(shapes) == 1  # one compiled step for every batch
    (_, _, graph_id), last_labels, weights = batches[2]
    np.testing.assert_array_equal(weights, [1] * 5 + [0] * 3)
    assert set(np.unique(graph_id)) <= set(range(5)) | {8}
    with pytest.raises(ValueError, match="one entry per graph"):
        GraphBatches(graphs, labels[:3])
    with pytest.raises(ValueError, match="Received: batch_size"):
        GraphBatches(graphs, labels, batch_size=0)
