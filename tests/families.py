"""One small model per adaptive layer family, with data, shared by the family tests.

Each family gives a model builder (uncompiled), training data (arrays or a dataset), and a probe
input to compare predictions on.
"""

import keras
import numpy as np
from sklearn.datasets import load_digits

import keras_awn
from keras_awn import layers


def _digits(num_examples):
    digits = load_digits()
    images = (digits.images[:num_examples] / 16.0).astype("float32")
    return images, digits.target[:num_examples].astype("int32")


class Family:
    """A model family: `build()`, `fit_data()` ({"x", "y"} or {"x": dataset}), `probe()`."""

    name = None
    batch_size = 32

    def build(self):
        raise NotImplementedError

    def fit_data(self):
        raise NotImplementedError

    def probe(self):
        raise NotImplementedError

    def fit_arguments(self, **overrides):
        data = self.fit_data()
        # Unshuffled, so that twin models see the same batches (Keras also shuffles the batch
        # order of a PyDataset unless told not to).
        arguments = dict(data, shuffle=False)
        if "y" in data:
            arguments["batch_size"] = self.batch_size
        arguments.update(overrides)
        return arguments


class Convolution(Family):
    """Adaptive filters feeding pooling, another adaptive convolution, a BatchNormalization, a
    Conv2D and a global pooling followed by Dense."""

    name = "conv"

    def build(self):
        return keras_awn.Sequential(
            [
                keras.Input((8, 8, 1)),
                layers.AdaptiveConv2D(4, 3, padding="same", activation="relu"),
                keras.layers.MaxPooling2D(),
                layers.AdaptiveConv2D(4, 3, padding="same", activation="relu"),
                keras.layers.BatchNormalization(),
                keras.layers.Conv2D(6, 3, padding="same", activation="relu"),
                keras.layers.GlobalAveragePooling2D(),
                keras.layers.Dense(10),
            ]
        )

    def fit_data(self):
        images, labels = _digits(256)
        return {"x": images[..., None], "y": labels}

    def probe(self):
        return self.fit_data()["x"][:16]


class Transformer(Family):
    """A Transformer block with adaptive heads and an adaptive feed-forward width."""

    name = "transformer"

    def build(self):
        tokens = keras.Input((8, 8))
        attended = layers.AdaptiveMultiHeadAttention(2, key_dim=4)(tokens, tokens)
        hidden = keras.layers.LayerNormalization()(tokens + attended)
        feed_forward = layers.AdaptiveFeedForward(model_dim=8, initial_units=8)
        hidden = keras.layers.LayerNormalization()(hidden + feed_forward(hidden))
        pooled = keras.layers.GlobalAveragePooling1D()(hidden)
        return keras_awn.Model(tokens, keras.layers.Dense(10)(pooled))

    def fit_data(self):
        images, labels = _digits(256)
        return {"x": images, "y": labels}  # each image row is a token

    def probe(self):
        return self.fit_data()["x"][:16]


class Recurrent(Family):
    """Digits read row by row by a recurrent layer with adaptive maps."""

    name = "recurrent"

    def build(self):
        return keras_awn.Sequential(
            [
                keras.Input((8, 8)),
                layers.AdaptiveRNN(16, initial_units=4),
                keras.layers.Dense(10),
            ]
        )

    def fit_data(self):
        images, labels = _digits(256)
        return {"x": images, "y": labels}

    def probe(self):
        return self.fit_data()["x"][:16]


def cycles_and_paths(num_graphs, seed=0):
    """Graphs that are a cycle (label 1) or a path (label 0) of 4 to 9 nodes, constant features."""
    rng = np.random.default_rng(seed)
    graphs, labels = [], []
    for index in range(num_graphs):
        size = int(rng.integers(4, 10))
        is_cycle = index % 2
        edges = [[i, (i + 1) % size] for i in range(size if is_cycle else size - 1)]
        edges += [[b, a] for a, b in edges]
        graphs.append((np.ones((size, 1), "float32"), np.asarray(edges, "int32")))
        labels.append(is_cycle)
    return graphs, np.asarray(labels, "int32")


class Graph(Family):
    """Two adaptive GIN convolutions, sum pooling per graph, a Dense classifier."""

    name = "graph"
    batch_size = 16

    def build(self):
        nodes = keras.Input((1,))
        edges = keras.Input((2,), dtype="int32")
        graph_id = keras.Input((), dtype="int32")
        hidden = layers.AdaptiveGINConv(8, initial_units=8)([nodes, edges])
        hidden = layers.AdaptiveGINConv(8, initial_units=8)([hidden, edges])
        pooled = layers.GraphPooling(num_graphs=self.batch_size)([hidden, graph_id])
        return keras_awn.Model([nodes, edges, graph_id], keras.layers.Dense(2)(pooled))

    def batches(self):
        graphs, labels = cycles_and_paths(64)
        return keras_awn.graph_data.GraphBatches(graphs, labels, batch_size=self.batch_size)

    def fit_data(self):
        return {"x": self.batches()}

    def probe(self):
        return list(self.batches()[0][0])


FAMILIES = {family.name: family for family in (Convolution(), Transformer(), Recurrent(), Graph())}
