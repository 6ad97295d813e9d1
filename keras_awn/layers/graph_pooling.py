"""`GraphPooling`: node features summed (or averaged) per graph of a batch.

Graphs travel as one disjoint union per batch (`keras_awn.graph_data.batch_graphs`): node
features `(num_nodes, features)`, an edge index `(num_edges, 2)` of `(source, target)` node
positions, and a graph id per node. Batches are padded to fixed sizes so that compiled steps are
reused.
"""

import keras
from keras import ops

from keras_awn._engine import validation


@keras.saving.register_keras_serializable(package="keras_awn")
class GraphPooling(keras.layers.Layer):
    """Sums (or averages) node features per graph: `(num_nodes, F) -> (num_graphs, F)`.

    Nodes whose graph id is `num_graphs` or more (the padding that `keras_awn.graph_data` adds) are
    left out. The number of graphs per batch is fixed so that compiled steps are reused.

    Args:
        num_graphs: int >= 1, the number of graphs in every batch.
        reduction: `"sum"` (default, as GIN) or `"mean"`.
        **kwargs: base layer arguments.

    Call arguments:
        inputs: `[node_features, graph_id]`, `(num_nodes, F)` and `(num_nodes,)` integers.

    Example:

    ```python
    pooled = keras_awn.layers.GraphPooling(num_graphs=32)([node_features, graph_id])
    ```
    """

    def __init__(self, num_graphs: int, reduction: str = "sum", **kwargs):
        num_graphs = validation.check_int("num_graphs", num_graphs)
        if reduction not in ("sum", "mean"):
            raise ValueError(
                f"`reduction` must be 'sum' or 'mean'. Received: reduction={reduction!r}"
            )
        super().__init__(**kwargs)
        self.num_graphs = num_graphs
        self.reduction = reduction

    def call(self, inputs):
        nodes, graph_id = inputs
        graph_id = ops.cast(ops.reshape(graph_id, (-1,)), "int32")
        # Padding nodes carry ids >= num_graphs: one extra segment collects them, then is dropped
        # (backends differ on out-of-range segment ids).
        graph_id = ops.minimum(graph_id, self.num_graphs)
        pooled = ops.segment_sum(nodes, graph_id, num_segments=self.num_graphs + 1)
        if self.reduction == "mean":
            ones = ops.ones_like(nodes[:, :1])
            counts = ops.segment_sum(ones, graph_id, num_segments=self.num_graphs + 1)
            pooled = pooled / ops.maximum(counts, 1.0)
        return pooled[: self.num_graphs]

    def compute_output_shape(self, input_shape):
        return (self.num_graphs, input_shape[0][-1])

    def get_config(self):
        config = super().get_config()
        config.update({"num_graphs": self.num_graphs, "reduction": self.reduction})
        return config
