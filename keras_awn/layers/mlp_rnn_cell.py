"""`MLPRNNCell`: the paper's recurrent cell, with any two Keras layers as its maps."""

import keras

from keras_awn._engine import validation
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
        state_size = validation.check_int("state_size", state_size)
        super().__init__(**kwargs)
        self.state_size = state_size
        self.output_size = state_size
        self.state_activation = keras.activations.get(state_activation)
        input_map, state_map = deserialize_layer(input_map), deserialize_layer(state_map)
        if input_map is None or state_map is None:
            input_map, state_map = self._default_maps(input_map, state_map)
        for name, layer in (("input_map", input_map), ("state_map", state_map)):
            if not isinstance(layer, keras.layers.Layer):
                raise ValueError(f"`{name}` must be a Keras layer. Received: {name}={layer!r}")
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
        summed = self.input_map(inputs, training=training) + self.state_map(
            state, training=training
        )
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
