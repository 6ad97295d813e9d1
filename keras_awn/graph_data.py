"""Batching graphs for `AdaptiveGINConv` and `GraphPooling`.

A batch of graphs is one disjoint union: node features `(num_nodes, F)`, an edge index
`(num_edges, 2)` of `(source, target)` positions in the union, and the graph id of each node.
Compiled steps need fixed shapes, so batches are padded to fixed totals: padding nodes (zero
features) belong to graph `num_graphs` (which `GraphPooling` leaves out) and padding edges join
a padding node to itself, so no real node receives a message from padding.
"""

import math

import keras
import numpy as np

from keras_awn._engine import validation


def _check_graph(index, graph):
    if not isinstance(graph, (tuple, list)) or len(graph) != 2:
        raise ValueError(
            "Each graph must be a pair (node_features, edge_index). "
            f"Received: graphs[{index}]={graph!r}"
        )
    nodes = np.asarray(graph[0], dtype="float32")
    edges = (
        np.asarray(graph[1], dtype="int32").reshape(-1, 2)
        if len(graph[1])
        else np.zeros((0, 2), "int32")
    )
    if nodes.ndim != 2:
        raise ValueError(
            f"graphs[{index}] node features must be 2D (num_nodes, features). "
            f"Received: shape={nodes.shape}"
        )
    if edges.size and (edges.min() < 0 or edges.max() >= len(nodes)):
        raise ValueError(
            f"graphs[{index}] has an edge to a node that does not exist: node indices must be "
            f"in [0, {len(nodes)}). Received: edges from {edges.min()} to {edges.max()}"
        )
    return nodes, edges


def batch_graphs(graphs, num_graphs=None, num_nodes=None, num_edges=None) -> dict:
    """Joins graphs into one padded disjoint union.

    Args:
        graphs: list of `(node_features, edge_index)` pairs: `(n, F)` floats and `(e, 2)`
            integer `(source, target)` node positions within the graph.
        num_graphs: int or None, the number of graphs in the batch (padding graphs have no
            nodes). Defaults to `len(graphs)`.
        num_nodes: int or None, the total number of node slots; must exceed the real nodes
            (one padding node receives the padding edges). Defaults to real nodes + 1.
        num_edges: int or None, the total number of edge slots. Defaults to the real edges.

    Returns:
        A dict with `node_features` `(num_nodes, F)`, `edge_index` `(num_edges, 2)` and
        `graph_id` `(num_nodes,)`.

    Example:

    >>> triangle = (np.ones((3, 1)), [[0, 1], [1, 2], [2, 0]])
    >>> batch = keras_awn.graph_data.batch_graphs([triangle, triangle])
    >>> batch["node_features"].shape, batch["graph_id"].tolist()
    ((7, 1), [0, 0, 0, 1, 1, 1, 2])
    """
    if not isinstance(graphs, (list, tuple)) or not graphs:
        raise ValueError(
            f"`graphs` must be a non-empty list of graphs. Received: graphs={graphs!r}"
        )
    checked = [_check_graph(i, g) for i, g in enumerate(graphs)]
    features = {nodes.shape[1] for nodes, _ in checked}
    if len(features) != 1:
        raise ValueError(
            f"All graphs must have the same number of node features. Received: {sorted(features)}"
        )
    real_nodes = sum(len(nodes) for nodes, _ in checked)
    real_edges = sum(len(edges) for _, edges in checked)
    num_graphs = len(graphs) if num_graphs is None else num_graphs
    num_nodes = real_nodes + 1 if num_nodes is None else num_nodes
    num_edges = real_edges if num_edges is None else num_edges
    if num_graphs < len(graphs):
        raise ValueError(
            f"`num_graphs` must be >= {len(graphs)}. Received: num_graphs={num_graphs}"
        )
    if num_nodes <= real_nodes:
        raise ValueError(
            f"`num_nodes` must exceed the {real_nodes} real nodes (one padding node receives the "
            f"padding edges). Received: num_nodes={num_nodes}"
        )
    if num_edges < real_edges:
        raise ValueError(f"`num_edges` must be >= {real_edges}. Received: num_edges={num_edges}")
    node_features = np.zeros((num_nodes, features.pop()), "float32")
    graph_id = np.full((num_nodes,), num_graphs, "int32")
    padding_node = num_nodes - 1
    edge_index = np.full((num_edges, 2), padding_node, "int32")
    node_offset = edge_offset = 0
    for index, (nodes, edges) in enumerate(checked):
        node_features[node_offset : node_offset + len(nodes)] = nodes
        graph_id[node_offset : node_offset + len(nodes)] = index
        edge_index[edge_offset : edge_offset + len(edges)] = edges + node_offset
        node_offset += len(nodes)
        edge_offset += len(edges)
    return {"node_features": node_features, "edge_index": edge_index, "graph_id": graph_id}


class GraphBatches(keras.utils.PyDataset):
    """A `PyDataset` of padded graph batches for `fit`, `evaluate` and `predict`.

    Every batch holds `batch_size` graph slots and the same node and edge totals, so the compiled
    step is traced once. Inputs are `(node_features, edge_index, graph_id)`; with labels, each
    batch also gives the labels and a sample weight of 0 for padding graphs.

    Args:
        graphs: list of `(node_features, edge_index)` pairs (see `batch_graphs`).
        labels: array of one label per graph, or None (for `predict`).
        batch_size: int >= 1, graphs per batch. Defaults to 32.
        shuffle: whether to shuffle the graphs at each epoch. Defaults to False.
        seed: int or None, the shuffling seed.
        **kwargs: `keras.utils.PyDataset` arguments (`workers`, ...).

    Attributes:
        num_examples: the number of graphs (pass it to `WidthController(num_examples=...)`).

    Example:

    ```python
    nodes = keras.Input((1,))
    edges = keras.Input((2,), dtype="int32")
    graph_id = keras.Input((), dtype="int32")
    hidden = keras_awn.layers.AdaptiveGINConv(16)([nodes, edges])
    pooled = keras_awn.layers.GraphPooling(num_graphs=32)([hidden, graph_id])
    model = keras_awn.Model([nodes, edges, graph_id], keras.layers.Dense(2)(pooled))
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    batches = keras_awn.graph_data.GraphBatches(graphs, labels, batch_size=32, shuffle=True)
    model.fit(batches, epochs=20)  # N is the batches' `num_examples`: the number of graphs
    ```
    """

    def __init__(
        self, graphs, labels=None, batch_size: int = 32, shuffle: bool = False, seed=None, **kwargs
    ):
        super().__init__(**kwargs)
        batch_size = validation.check_int("batch_size", batch_size)
        self.graphs = [_check_graph(i, g) for i, g in enumerate(graphs)]
        if labels is not None:
            labels = np.asarray(labels)
            if len(labels) != len(self.graphs):
                raise ValueError(
                    f"`labels` must have one entry per graph ({len(self.graphs)}). "
                    f"Received: {len(labels)} labels"
                )
        self.labels = labels
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.num_examples = len(self.graphs)
        self._rng = np.random.default_rng(seed)
        self._order = np.arange(len(self.graphs))
        # The largest totals any batch can have, whatever the shuffling.
        largest = min(batch_size, len(self.graphs))
        self.num_nodes = (
            int(sum(sorted((len(n) for n, _ in self.graphs), reverse=True)[:largest])) + 1
        )
        self.num_edges = int(sum(sorted((len(e) for _, e in self.graphs), reverse=True)[:largest]))
        if shuffle:
            self._rng.shuffle(self._order)

    def __len__(self):
        return math.ceil(len(self.graphs) / self.batch_size)

    def __getitem__(self, index):
        chosen = self._order[index * self.batch_size : (index + 1) * self.batch_size]
        batch = batch_graphs(
            [self.graphs[i] for i in chosen],
            num_graphs=self.batch_size,
            num_nodes=self.num_nodes,
            num_edges=self.num_edges,
        )
        inputs = (batch["node_features"], batch["edge_index"], batch["graph_id"])
        if self.labels is None:
            return (inputs,)
        labels = np.zeros((self.batch_size,) + self.labels.shape[1:], self.labels.dtype)
        labels[: len(chosen)] = self.labels[chosen]
        weights = np.zeros((self.batch_size,), "float32")
        weights[: len(chosen)] = 1.0
        return inputs, labels, weights

    def on_epoch_end(self):
        if self.shuffle:
            self._rng.shuffle(self._order)
