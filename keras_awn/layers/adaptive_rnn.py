"""`AdaptiveRNN`: `keras.layers.RNN` over an `AdaptiveRNNCell`, built from the cell's arguments."""

import keras

from keras_awn.layers.adaptive_rnn_cell import AdaptiveRNNCell
from keras_awn.layers.adaptive_width import deserialize_layer
from keras_awn.layers.adaptive_width import pop_width_arguments


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
            `state_activation` and the width arguments of `AdaptiveWidthLayer`) and base layer
            arguments (`name`, `dtype`).

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

    # The cell's own arguments besides its width arguments.
    _CELL_ARGUMENTS = ("hidden_layers", "activation", "state_activation")

    def __init__(self, state_size: int | None = None, initial_units: int = 16, cell=None, **kwargs):
        cell_arguments = {k: kwargs.pop(k) for k in self._CELL_ARGUMENTS if k in kwargs}
        cell_arguments.update(pop_width_arguments(kwargs))
        cell = deserialize_layer(cell)
        if cell is None:
            if state_size is None:
                raise ValueError("`state_size` must be an integer >= 1. Received: state_size=None")
            base = {k: kwargs[k] for k in ("dtype",) if k in kwargs}
            cell = AdaptiveRNNCell(
                state_size, initial_units=initial_units, **cell_arguments, **base
            )
        elif not isinstance(cell, AdaptiveRNNCell):
            raise ValueError(f"`cell` must be an AdaptiveRNNCell. Received: cell={cell!r}")
        super().__init__(cell, **kwargs)

    def plain_layer(self):
        return plain_recurrent_layer(self)

    def assign_plain_weights(self, plain):
        self.cell.assign_plain_weights(plain.cell)

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        cell = keras.saving.deserialize_keras_object(
            config.pop("cell"), custom_objects=custom_objects
        )
        return cls(cell=cell, **config)


def plain_recurrent_layer(layer):
    """A `keras.layers.RNN` over the plain form of `layer`'s adaptive cell."""
    config = layer.get_config()
    config["cell"] = keras.saving.serialize_keras_object(layer.cell.plain_layer())
    return keras.layers.RNN.from_config(config)


def is_adaptive_rnn(layer) -> bool:
    """A `keras.layers.RNN` (or subclass) whose cell is adaptive."""
    return isinstance(layer, keras.layers.RNN) and isinstance(layer.cell, AdaptiveRNNCell)
