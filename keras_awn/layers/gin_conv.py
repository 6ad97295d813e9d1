"""`GINConv`: a graph isomorphism convolution over any Keras MLP.

Graphs travel as one disjoint union per batch (`keras_awn.graph_data.batch_graphs`): node
features `(num_nodes, features)`, an edge index `(num_edges, 2)` of `(source, target)` node
positions, and a graph id per node. Batches are padded to fixed sizes so that compiled steps are
reused.
"""

import keras
from keras import ops

from keras_awn._engine import validation
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
        if not validation.is_number(epsilon):
            raise ValueError(f"`epsilon` must be a finite float. Received: epsilon={epsilon!r}")
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
