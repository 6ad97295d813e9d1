"""Recurrent layers in the paper's form: a cell whose two maps are MLPs with learned widths.

- `MLPRNNCell`: `h_t = state_activation(input_map(x_t) + state_map(h_{t-1}))` for any two Keras
  layers mapping to the state size (what `keras_awn.strip` turns an adaptive cell into).
- `AdaptiveRNNCell`: that cell with two `AdaptiveMLP` maps; use it as `keras.layers.RNN(cell)`.
- `AdaptiveRNN`: `keras.layers.RNN` over an `AdaptiveRNNCell`, built from the cell's arguments.
"""

import keras

from keras_awn.layers.adaptive_mlp import AdaptiveMLP
from keras_awn.layers.adaptive_width import _check_positive_int
from keras_awn.layers.adaptive_width import deserialize_layer


@keras.saving.register_keras_serializable(package="keras_awn")
class MLPRNNCell(keras.layers.Layer):
    """Recurrent cell `h_t = state_activation(input_map(x_t) + state_map(h_{t-1}))`.

    The fixed-width form of `AdaptiveRNNCell` (what `keras_awn.strip` produces): both maps are
    Keras layers whose output size is `state_size`.

    Args:
        state_size: int >= 1, the size of the state (and of the output).
        input_map: the Keras layer applied to each input `x_t`.
        state_map: the Keras layer applied to the previous state.
        state_activation: activation of the new state. Defaults to `"tanh"`.
        **kwargs: base layer arguments (`name`, `dtype`, ...).

    Example:

    ```python
    cell = keras_awn.layers.MLPRNNCell(
        8, input_map=keras.layers.Dense(8), state_map=keras.layers.Dense(8)
    )
    outputs = keras.layers.RNN(cell)(keras.Input((5, 3)))
    ```
    """

    def __init__(
        self,
        state_size: int,
        input_map=None,
        state_map=None,
        state_activation="tanh",
        **kwargs,
    ):
        _check_positive_int("state_size", state_size)
        super().__init__(**kwargs)
        self.state_size = state_size
        self.output_size = state_size
        self.state_activation = keras.activations.get(state_activation)
        input_map, state_map = deserialize_layer(input_map), deserialize_layer(state_map)
        if input_map is None or state_map is None:
            input_map, state_map = self._default_maps(input_map, state_map)
        for name, layer in (("input_map", input_map), ("state_map", state_map)):
            if not isinstance(layer, keras.layers.Layer):
                raise ValueError(
                    f"`{name}` must be a Keras layer. Received: {name}={layer!r}"
                )
        self.input_map = input_map
        self.state_map = state_map

    def _default_maps(self, input_map, state_map):
        raise ValueError(
            "MLPRNNCell needs both `input_map` and `state_map`. "
            f"Received: input_map={input_map!r}, state_map={state_map!r}"
        )

    def build(self, input_shape):
        if not self.input_map.built:
            self.input_map.build(tuple(input_shape))
        if not self.state_map.built:
            self.state_map.build((input_shape[0], self.state_size))

    def call(self, inputs, states, training=None):
        state = states[0] if isinstance(states, (list, tuple)) else states
        summed = self.input_map(inputs, training=training) + self.state_map(state, training=training)
        new_state = self.state_activation(summed)
        return new_state, [new_state]

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "state_size": self.state_size,
                "state_activation": keras.activations.serialize(self.state_activation),
                "input_map": self._map_config(self.input_map),
                "state_map": self._map_config(self.state_map),
            }
        )
        return config

    @staticmethod
    def _map_config(layer):
        config = keras.saving.serialize_keras_object(layer)
        config.pop("build_config", None)  # the cell builds its maps from its input shape
        return config


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
        quantile, distribution, min_units, max_units, importance_normalization,
        weight_prior_scale, width_prior: passed to every adaptive hidden layer.
        input_map, state_map: saved maps, used when a saved cell is loaded. Leave to None.
        **kwargs: base layer arguments (`name`, `dtype`, ...).

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
        quantile: float = 0.9,
        distribution="exponential",
        min_units: int = 1,
        max_units: int | None = None,
        importance_normalization: str = "mean",
        weight_prior_scale: float | None = 1.0,
        width_prior: dict | None = None,
        input_map=None,
        state_map=None,
        **kwargs,
    ):
        self.map_arguments = {
            "hidden_layers": hidden_layers,
            "initial_units": initial_units,
            "activation": activation,
            "quantile": quantile,
            "distribution": distribution,
            "min_units": min_units,
            "max_units": max_units,
            "importance_normalization": importance_normalization,
            "weight_prior_scale": weight_prior_scale,
            "width_prior": width_prior,
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
                layer._prior_in_call = False

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
        arguments = dict(self.map_arguments)
        distribution = arguments["distribution"]
        if not isinstance(distribution, str):
            arguments["distribution"] = keras.saving.serialize_keras_object(distribution)
        config.update(arguments)
        return config


def plain_recurrent_layer(layer):
    """A `keras.layers.RNN` over the plain form of `layer`'s adaptive cell."""
    config = layer.get_config()
    config["cell"] = keras.saving.serialize_keras_object(layer.cell.plain_layer())
    return keras.layers.RNN.from_config(config)


@keras.saving.register_keras_serializable(package="keras_awn")
class AdaptiveRNN(keras.layers.RNN):
    """`keras.layers.RNN` over an `AdaptiveRNNCell`, built from the cell's arguments.

    Args:
        state_size: int >= 1, the size of the state.
        initial_units: int, the starting hidden width of the cell's maps. Defaults to 16.
        return_sequences, return_state, go_backwards, stateful, unroll: as in
            `keras.layers.RNN`.
        cell: a saved cell, used when a saved layer is loaded. Leave to None.
        **kwargs: `AdaptiveRNNCell` arguments (`hidden_layers`, `activation`,
            `state_activation`, `quantile`, ...) and base layer arguments (`name`, `dtype`).

    Example:

    ```python
    model = keras_awn.Sequential([
        keras.Input((8, 8)),
        keras_awn.layers.AdaptiveRNN(32, initial_units=16),
        keras.layers.Dense(10),
    ])
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(sequences, labels, epochs=10)
    keras_awn.widths(model)
    ```
    """

    _CELL_ARGUMENTS = (
        "hidden_layers", "activation", "state_activation", "quantile", "distribution",
        "min_units", "max_units", "importance_normalization", "weight_prior_scale",
        "width_prior",
    )

    def __init__(self, state_size: int | None = None, initial_units: int = 16, cell=None, **kwargs):
        cell_arguments = {k: kwargs.pop(k) for k in self._CELL_ARGUMENTS if k in kwargs}
        cell = deserialize_layer(cell)
        if cell is None:
            if state_size is None:
                raise ValueError(
                    "`state_size` must be an integer >= 1. Received: state_size=None"
                )
            base = {k: kwargs[k] for k in ("dtype",) if k in kwargs}
            cell = AdaptiveRNNCell(state_size, initial_units=initial_units, **cell_arguments, **base)
        elif not isinstance(cell, AdaptiveRNNCell):
            raise ValueError(
                f"`cell` must be an AdaptiveRNNCell. Received: cell={cell!r}"
            )
        super().__init__(cell, **kwargs)

    def plain_layer(self):
        return plain_recurrent_layer(self)

    def assign_plain_weights(self, plain):
        self.cell.assign_plain_weights(plain.cell)

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        cell = keras.saving.deserialize_keras_object(config.pop("cell"), custom_objects=custom_objects)
        return cls(cell=cell, **config)


def is_adaptive_rnn(layer) -> bool:
    """A `keras.layers.RNN` (or subclass) whose cell is adaptive."""
    return isinstance(layer, keras.layers.RNN) and isinstance(layer.cell, AdaptiveRNNCell)

