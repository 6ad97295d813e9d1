"""AdaptiveGINConv: a GIN convolution with an adaptive MLP, trained with `fit` on graph batches."""

import keras
import numpy as np
import pytest

import keras_awn
from keras_awn.graph_data import GraphBatches
from keras_awn.layers import AdaptiveGINConv
from keras_awn.layers import GINConv
from keras_awn.layers import GraphPooling
from keras_awn._engine import topology
from tests.families import cycles_and_paths
from tests.layer_test_case import run_layer_test

TRIANGLE = (np.arange(6, dtype="float32").reshape(3, 2), [[0, 1], [1, 2], [2, 0]])
EDGE = (np.ones((2, 2), "float32"), [[0, 1]])


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
    hidden_layer = topology.adaptive_layers(model)[0]
    assert hidden_layer.training_state.num_examples == 32


def test_bad_gin_arguments_are_refused():
    with pytest.raises(ValueError, match="Received: output_units"):
        AdaptiveGINConv(0)
    with pytest.raises(ValueError, match="Received: mlp"):
        GINConv(mlp=None)
    with pytest.raises(ValueError, match="Received: num_graphs"):
        GraphPooling(0)
    with pytest.raises(ValueError, match="edge_index"):
        AdaptiveGINConv(4)([np.ones((3, 2), "float32"), np.zeros((3, 3), "int32")])


def test_layer_contract(tmp_path):
    nodes = np.random.default_rng(0).normal(size=(7, 3)).astype("float32")
    edges = np.array([[0, 1], [1, 0], [1, 2], [2, 1], [3, 4], [4, 3], [5, 6]], "int32")
    run_layer_test(
        keras_awn.layers.AdaptiveGINConv,
        {"output_units": 5, "initial_units": 4},
        ([nodes, edges],),
        expected_output_shape=(7, 5),
        expected_num_trainable_weights=6,  # epsilon, hidden (3), output Dense (2)
        expected_num_non_trainable_weights=0,
        tmp_path=tmp_path,
    )
