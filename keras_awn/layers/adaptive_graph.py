"""Graph layers: a GIN convolution whose inner MLP has learned widths, and graph pooling.

Graphs travel as one disjoint union per batch (`keras_awn.graphs.batch_graphs`): node features
`(num_nodes, features)`, an edge index `(num_edges, 2)` of `(source, target)` node positions,
and a graph id per node. Batches are padded to fixed sizes so that compiled steps are reused.
"""

import keras
from keras import ops

from keras_awn.layers.adaptive_mlp import AdaptiveMLP
from keras_awn.layers.adaptive_width import _check_positive_int
from keras_awn.layers.adaptive_width import deserialize_layer


@keras.saving.register_keras_serializable(package="keras_awn")
class GINConv(keras.layers.Layer):
    """Graph isomorphism convolution: `x'_i = mlp((1 + epsilon) x_i + sum_{j -> i} x_j)`.

    The fixed-width form of `AdaptiveGINConv` (what `keras_awn.strip` produces), for any Keras
    layer as `mlp`.

    Args:
        mlp: the Keras layer applied to the aggregated node features.
        epsilon: float, the initial weight of each node's own features. Defaults to 0.
        learn_epsilon: whether epsilon is trained. Defaults to True.
        **kwargs: base layer arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: `[node_features, edge_index]`: `(num_nodes, features)` and `(num_edges, 2)`
            integer `(source, target)` positions. Messages flow from source to target.

    Output shape:
        `(num_nodes, mlp output size)`.

    Example:

    ```python
    conv = keras_awn.layers.GINConv(keras.layers.Dense(16, activation="relu"))
    updated = conv([node_features, edge_index])
    ```

    References:
        - [Xu et al., 2019](https://arxiv.org/abs/1810.00826), "How Powerful are Graph Neural
          Networks?".
    """

    def __init__(self, mlp=None, epsilon: float = 0.0, learn_epsilon: bool = True, **kwargs):
        super().__init__(**kwargs)
        mlp = deserialize_layer(mlp)
        if mlp is None:
            mlp = self._default_mlp()
        if not isinstance(mlp, keras.layers.Layer):
            raise ValueError(f"`mlp` must be a Keras layer. Received: mlp={mlp!r}")
        if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float)):
            raise ValueError(f"`epsilon` must be a float. Received: epsilon={epsilon!r}")
        self.mlp = mlp
        self.initial_epsilon = float(epsilon)
        self.learn_epsilon = bool(learn_epsilon)

    def _default_mlp(self):
        raise ValueError("GINConv needs an `mlp` layer. Received: mlp=None")

    def build(self, input_shape):
        if not isinstance(input_shape, (list, tuple)) or len(input_shape) != 2:
            raise ValueError(
                f"'{self.name}' expects inputs [node_features, edge_index]. "
                f"Received: input_shape={input_shape}"
            )
        node_shape, edge_shape = input_shape
        if len(node_shape) != 2 or node_shape[-1] is None:
            raise ValueError(
                f"`node_features` of '{self.name}' must be 2D (num_nodes, features) with known "
                f"features. Received: shape={node_shape}"
            )
        if len(edge_shape) != 2 or edge_shape[-1] != 2:
            raise ValueError(
                f"`edge_index` of '{self.name}' must have shape (num_edges, 2). "
                f"Received: shape={edge_shape}"
            )
        self.epsilon = self.add_weight(
            name="epsilon",
            shape=(),
            initializer=keras.initializers.Constant(self.initial_epsilon),
            trainable=self.learn_epsilon,
        )
        if not self.mlp.built:
            self.mlp.build(tuple(node_shape))

    def call(self, inputs, training=None):
        nodes, edges = inputs
        edges = ops.cast(edges, "int32")
        messages = ops.take(nodes, edges[:, 0], axis=0)
        aggregated = ops.segment_sum(messages, edges[:, 1], num_segments=ops.shape(nodes)[0])
        combined = (1.0 + ops.cast(self.epsilon, nodes.dtype)) * nodes + aggregated
        return self.mlp(combined, training=training)

    def compute_output_shape(self, input_shape):
        return self.mlp.compute_output_shape(tuple(input_shape[0]))

    def get_config(self):
        config = super().get_config()
        mlp = keras.saving.serialize_keras_object(self.mlp)
        mlp.pop("build_config", None)  # built by this layer from its input shape
        config.update(
            {"mlp": mlp, "epsilon": self.initial_epsilon, "learn_epsilon": self.learn_epsilon}
        )
        return config


@keras.saving.register_keras_serializable(package="keras_awn")
class AdaptiveGINConv(GINConv):
    """GIN graph convolution whose inner MLP has learned hidden widths.

    `x'_i = mlp((1 + epsilon) x_i + sum_{j -> i} x_j)`, with `mlp` an `AdaptiveMLP`
    (`hidden_layers` adaptive hidden layers, then a `Dense(output_units)`) and epsilon learned:
    the paper's graph experiment. Neighbours are summed with `keras.ops.segment_sum` over the
    edge index, so it runs on every backend.

    Args:
        output_units: int >= 1, the size of the updated node features.
        initial_units: int, the starting hidden width of the MLP. Defaults to 16.
        hidden_layers: int >= 1, the MLP's adaptive hidden layers. Defaults to 1.
        activation: activation of the hidden layers. Defaults to `"relu"`.
        output_activation: activation of the MLP's output. Defaults to `"relu"`.
        epsilon: float, the initial weight of each node's own features. Defaults to 0.
        learn_epsilon: whether epsilon is trained. Defaults to True.
        quantile, distribution, min_units, max_units, importance_normalization,
        weight_prior_scale, width_prior: passed to every adaptive hidden layer.
        mlp: a saved MLP, used when a saved layer is loaded. Leave to None.
        **kwargs: base layer arguments (`name`, `dtype`, ...).

    Example:

    ```python
    nodes = keras.Input((4,))
    edges = keras.Input((2,), dtype="int32")
    graph_id = keras.Input((), dtype="int32")
    hidden = keras_awn.layers.AdaptiveGINConv(16)([nodes, edges])
    hidden = keras_awn.layers.AdaptiveGINConv(16)([hidden, edges])
    pooled = keras_awn.layers.GraphPooling(num_graphs=32)([hidden, graph_id])
    model = keras_awn.Model([nodes, edges, graph_id], keras.layers.Dense(2)(pooled))
    ```

    References:
        - [Errica et al., 2025](https://arxiv.org/abs/2501.15889), "Adaptive Width Neural
          Networks", ICLR 2026.
        - [Xu et al., 2019](https://arxiv.org/abs/1810.00826), "How Powerful are Graph Neural
          Networks?".
    """

    def __init__(
        self,
        output_units: int,
        initial_units: int = 16,
        hidden_layers: int = 1,
        activation="relu",
        output_activation="relu",
        epsilon: float = 0.0,
        learn_epsilon: bool = True,
        quantile: float = 0.9,
        distribution="exponential",
        min_units: int = 1,
        max_units: int | None = None,
        importance_normalization: str = "mean",
        weight_prior_scale: float | None = 1.0,
        width_prior: dict | None = None,
        mlp=None,
        **kwargs,
    ):
        _check_positive_int("output_units", output_units)
        self.mlp_arguments = {
            "output_units": output_units,
            "hidden_layers": hidden_layers,
            "initial_units": initial_units,
            "activation": activation,
            "output_activation": output_activation,
            "quantile": quantile,
            "distribution": distribution,
            "min_units": min_units,
            "max_units": max_units,
            "importance_normalization": importance_normalization,
            "weight_prior_scale": weight_prior_scale,
            "width_prior": width_prior,
        }
        super().__init__(mlp=mlp, epsilon=epsilon, learn_epsilon=learn_epsilon, **kwargs)

    def _default_mlp(self):
        return AdaptiveMLP(dtype=self.dtype_policy, name=f"{self.name}_mlp", **self.mlp_arguments)

    def plain_layer(self):
        """The `GINConv` with a plain `Dense` MLP computing what this layer computes."""
        return GINConv(
            self.mlp.plain_layer(),
            epsilon=self.initial_epsilon,
            learn_epsilon=self.learn_epsilon,
            dtype=self.dtype_policy,
            name=self.name,
        )

    def assign_plain_weights(self, plain):
        plain.epsilon.assign(ops.convert_to_numpy(self.epsilon))
        self.mlp.assign_plain_weights(plain.mlp)

    def get_config(self):
        config = super().get_config()
        arguments = dict(self.mlp_arguments)
        if not isinstance(arguments["distribution"], str):
            arguments["distribution"] = keras.saving.serialize_keras_object(arguments["distribution"])
        config.update(arguments)
        return config


@keras.saving.register_keras_serializable(package="keras_awn")
class GraphPooling(keras.layers.Layer):
    """Sums (or averages) node features per graph: `(num_nodes, F) -> (num_graphs, F)`.

    Nodes whose graph id is `num_graphs` or more (the padding that `keras_awn.graphs` adds) are
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
        _check_positive_int("num_graphs", num_graphs)
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
