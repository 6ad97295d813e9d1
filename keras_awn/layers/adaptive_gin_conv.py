"""`AdaptiveGINConv`: a GIN convolution whose inner MLP has learned widths (the paper's graph form).

Graphs travel as one disjoint union per batch (`keras_awn.graph_data.batch_graphs`): node
features `(num_nodes, features)`, an edge index `(num_edges, 2)` of `(source, target)` node
positions, and a graph id per node. Batches are padded to fixed sizes so that compiled steps are
reused.
"""

import keras

from keras_awn._engine import running_state
from keras_awn._engine import validation
from keras_awn.layers.adaptive_mlp import AdaptiveMLP
from keras_awn.layers.adaptive_width import pop_width_arguments
from keras_awn.layers.adaptive_width import serialize_width_arguments
from keras_awn.layers.gin_conv import GINConv


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
        mlp: a saved MLP, used when a saved layer is loaded. Leave to None.
        **kwargs: the width arguments of `AdaptiveWidthLayer` (`quantile`, `distribution`,
            `min_units`, `max_units`, `importance_normalization`, `weight_prior_scale`,
            `width_prior`), passed to every adaptive hidden layer, and base layer arguments
            (`name`, `dtype`, ...).

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
        mlp=None,
        **kwargs,
    ):
        output_units = validation.check_int("output_units", output_units)
        self.mlp_arguments = {
            "output_units": output_units,
            "hidden_layers": hidden_layers,
            "initial_units": initial_units,
            "activation": activation,
            "output_activation": output_activation,
            **pop_width_arguments(kwargs),
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
        plain.epsilon.assign(running_state.host_value(self.epsilon))
        self.mlp.assign_plain_weights(plain.mlp)

    def get_config(self):
        config = super().get_config()
        config.update(serialize_width_arguments(self.mlp_arguments))
        return config
