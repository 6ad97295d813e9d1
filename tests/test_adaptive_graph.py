"""Graph layers and batching: GIN aggregation and pooling against numpy, padded batches."""

import keras
import numpy as np
import pytest
from keras import ops

import keras_awn
from keras_awn.graphs import GraphBatches
from keras_awn.graphs import batch_graphs
from keras_awn.layers import AdaptiveGINConv
from keras_awn.layers import GINConv
from keras_awn.layers import GraphPooling
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


def test_adaptive_gin_trains_with_fit_and_infers_the_number_of_graphs():
    graphs, labels = cycles_and_paths(32)
    batches = GraphBatches(graphs, labels, batch_size=8)
    nodes, edges = keras.Input((1,)), keras.Input((2,), dtype="int32")
    graph_id = keras.Input((), dtype="int32")
    hidden = AdaptiveGINConv(4, initial_units=6)([nodes, edges])
    outputs = keras.layers.Dense(2)(GraphPooling(8)([hidden, graph_id]))
    model = keras_awn.Model([nodes, edges, graph_id], outputs)
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = model.fit(batches, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][-1])
    hidden_layer = keras_awn.graph.adaptive_layers(model)[0]
    assert hidden_layer._num_examples == 32


def test_bad_gin_arguments_are_refused():
    with pytest.raises(ValueError, match="Received: output_units"):
        AdaptiveGINConv(0)
    with pytest.raises(ValueError, match="Received: mlp"):
        GINConv(mlp=None)
    with pytest.raises(ValueError, match="Received: num_graphs"):
        GraphPooling(0)
    with pytest.raises(ValueError, match="edge_index"):
        AdaptiveGINConv(4)([np.ones((3, 2), "float32"), np.zeros((3, 3), "int32")])
