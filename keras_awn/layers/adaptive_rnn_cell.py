"""`AdaptiveRNNCell`: a recurrent cell whose input and state maps are MLPs with learned widths."""

import keras

from keras_awn.layers.adaptive_mlp import AdaptiveMLP
from keras_awn.layers.adaptive_width import deserialize_layer
from keras_awn.layers.adaptive_width import pop_width_arguments
from keras_awn.layers.adaptive_width import serialize_width_arguments
from keras_awn.layers.mlp_rnn_cell import MLPRNNCell


@keras.saving.register_keras_serializable(package="keras_awn")
class AdaptiveRNNCell(MLPRNNCell):
    """Recurrent cell whose input-to-state and state-to-state maps are MLPs with learned widths.

    `h_t = state_activation(input_map(x_t) + state_map(h_{t-1}))`, with each map an
    `AdaptiveMLP` (`hidden_layers` adaptive hidden layers, then a `Dense(state_size)`): the
    paper's recurrent form. The state size is fixed; the hidden widths of both maps are learned
    (the same widths at every time step). Use it as `keras.layers.RNN(cell)` or through
    `keras_awn.layers.AdaptiveRNN`.

    The cell runs inside the recurrent loop, where a loss cannot be added once per step, so its
    prior is added by `keras_awn.Model`/`keras_awn.Sequential` in `compute_loss`: train it
    inside one of them.

    Args:
        state_size: int >= 1, the size of the state (and of the output).
        initial_units: int, the starting hidden width of both maps. Defaults to 16.
        hidden_layers: int >= 1, adaptive hidden layers per map. Defaults to 1.
        activation: activation of the hidden layers. Defaults to `"relu"`.
        state_activation: activation of the new state. Defaults to `"tanh"`.
        input_map, state_map: saved maps, used when a saved cell is loaded. Leave to None.
        **kwargs: the width arguments of `AdaptiveWidthLayer` (`quantile`, `distribution`,
            `min_units`, `max_units`, `importance_normalization`, `weight_prior_scale`,
            `width_prior`), passed to every adaptive hidden layer, and base layer arguments
            (`name`, `dtype`, ...).

    Example:

    ```python
    model = keras_awn.Sequential([
        keras.Input((8, 8)),  # 8 time steps of 8 features
        keras.layers.RNN(keras_awn.layers.AdaptiveRNNCell(32, initial_units=16)),
        keras.layers.Dense(10),
    ])
    ```

    References:
        - [Errica et al., 2025](https://arxiv.org/abs/2501.15889), "Adaptive Width Neural
          Networks", ICLR 2026.
    """

    def __init__(
        self,
        state_size: int,
        initial_units: int = 16,
        hidden_layers: int = 1,
        activation="relu",
        state_activation="tanh",
        input_map=None,
        state_map=None,
        **kwargs,
    ):
        given = [deserialize_layer(block) for block in (input_map, state_map)]
        if any(block is not None for block in given) and not all(
            isinstance(block, AdaptiveMLP) for block in given
        ):
            raise ValueError(
                "`input_map` and `state_map` hold a saved cell's `AdaptiveMLP` maps, both or "
                "neither: leave them None (the cell builds its maps from `initial_units` and "
                "`hidden_layers`), or use `keras_awn.layers.MLPRNNCell` for maps of your own. "
                f"Received: input_map={input_map!r}, state_map={state_map!r}"
            )
        input_map, state_map = given
        self.map_arguments = {
            "hidden_layers": hidden_layers,
            "initial_units": initial_units,
            "activation": activation,
            **pop_width_arguments(kwargs),
        }
        super().__init__(
            state_size,
            input_map=input_map,
            state_map=state_map,
            state_activation=state_activation,
            **kwargs,
        )
        for block in (self.input_map, self.state_map):
            for layer in block.hidden:
                # Called once per time step: the model adds the prior once per step instead.
                layer.adds_prior_in_call = False

    def _default_maps(self, input_map, state_map):
        return [
            AdaptiveMLP(
                output_units=self.state_size,
                dtype=self.dtype_policy,
                name=f"{self.name}_{role}",
                **self.map_arguments,
            )
            for role in ("input_map", "state_map")
        ]

    def plain_layer(self):
        """The `MLPRNNCell` with plain `Dense` maps computing what this cell computes."""
        return MLPRNNCell(
            self.state_size,
            input_map=self.input_map.plain_layer(),
            state_map=self.state_map.plain_layer(),
            state_activation=self.state_activation,
            dtype=self.dtype_policy,
            name=self.name,
        )

    def assign_plain_weights(self, plain):
        self.input_map.assign_plain_weights(plain.input_map)
        self.state_map.assign_plain_weights(plain.state_map)

    def get_config(self):
        config = super().get_config()
        config.update(serialize_width_arguments(self.map_arguments))
        return config
