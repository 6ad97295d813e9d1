"""`AdaptiveMLP`: a multi-layer perceptron block whose hidden widths are learned."""

import keras
from keras import ops

from keras_awn._engine import topology
from keras_awn._engine import validation
from keras_awn._engine.folding import fold_importance
from keras_awn.layers.adaptive_dense import AdaptiveDense
from keras_awn.layers.adaptive_width import pop_width_arguments
from keras_awn.layers.adaptive_width import serialize_width_arguments


@keras.saving.register_keras_serializable(package="keras_awn")
class AdaptiveMLP(keras.layers.Layer):
    """MLP block with a fixed input and output size and adaptive hidden layers.

    Stacks `hidden_layers` `AdaptiveDense` layers and a `keras.layers.Dense(output_units)`. The
    hidden widths are learned; the block's outer interface never changes, so it can sit anywhere
    in a model, including a subclassed model's `call`, where keras_awn could not see which layers
    read a bare adaptive layer.

    Args:
        output_units: int >= 1, the size of the block's output.
        hidden_layers: int >= 1, the number of adaptive hidden layers. Defaults to 2.
        initial_units: int, or a list with one int per hidden layer: the starting widths.
            Defaults to 16.
        activation: activation of the hidden layers. Defaults to `"relu"`.
        output_activation: activation of the output layer. Defaults to None.
        dropout: float in [0, 1), the dropout rate applied to each hidden layer's output during
            training. Defaults to 0.
        hidden_layer_configs: serialized hidden layers, used when a saved block is loaded
            (they carry each layer's current capacity). Leave to None.
        **kwargs: the width arguments of `AdaptiveWidthLayer` (`quantile`, `distribution`,
            `min_units`, `max_units`, `importance_normalization`, `weight_prior_scale`,
            `width_prior`), passed to every hidden `AdaptiveDense`, and base layer arguments
            (`name`, `dtype`, ...).

    Example:

    ```python
    class Classifier(keras_awn.Model):
        def __init__(self):
            super().__init__()
            self.mlp = keras_awn.layers.AdaptiveMLP(output_units=10, hidden_layers=2)

        def call(self, inputs):
            return self.mlp(inputs)

    model = Classifier()
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=20)
    keras_awn.widths(model)
    ```
    """

    def __init__(
        self,
        output_units: int,
        hidden_layers: int = 2,
        initial_units=16,
        activation="relu",
        output_activation=None,
        dropout: float = 0.0,
        hidden_layer_configs: list | None = None,
        **kwargs,
    ):
        output_units = validation.check_int("output_units", output_units)
        hidden_layers = validation.check_int("hidden_layers", hidden_layers)
        if isinstance(initial_units, (list, tuple)):
            if len(initial_units) != hidden_layers:
                raise ValueError(
                    "`initial_units` must be an int or a list with one int per hidden layer "
                    f"({hidden_layers}). Received: initial_units={initial_units!r}"
                )
            initial_units = list(initial_units)
        validation.check_fraction("dropout", dropout)
        width_arguments = pop_width_arguments(kwargs)
        super().__init__(**kwargs)
        self.dropout = float(dropout)
        self.output_units = output_units
        self.hidden_layers = hidden_layers
        self.initial_units = initial_units
        self.activation = keras.activations.get(activation)
        self.output_activation = keras.activations.get(output_activation)
        self.adaptive_arguments = width_arguments
        if hidden_layer_configs is not None:
            self.hidden = [
                keras.saving.deserialize_keras_object(config) for config in hidden_layer_configs
            ]
        else:
            per_layer = (
                initial_units
                if isinstance(initial_units, list)
                else [initial_units] * hidden_layers
            )
            self.hidden = [
                AdaptiveDense(
                    units,
                    activation=activation,
                    dtype=self.dtype_policy,
                    name=f"{self.name}_hidden_{index}",
                    **self.adaptive_arguments,
                )
                for index, units in enumerate(per_layer)
            ]
        self.output_layer = keras.layers.Dense(
            output_units,
            activation=output_activation,
            dtype=self.dtype_policy,
            name=f"{self.name}_output",
        )
        # Dropout keeps masked units at zero; one layer serves every hidden output.
        self.dropout_layer = keras.layers.Dropout(self.dropout) if self.dropout else None
        readers = self.hidden[1:] + [self.output_layer]
        for producer, reader in zip(self.hidden, readers):
            topology.compensate(producer, reader)

    def build(self, input_shape):
        shape = tuple(input_shape)
        for layer in self.hidden:
            if not layer.built:
                layer.build(shape)
            shape = layer.compute_output_shape(shape)
        if not self.output_layer.built:
            self.output_layer.build(shape)
        topology.link(self)

    def adaptive_links(self):
        """`[(adaptive layer, [readers])]`: each hidden layer feeds the next layer of the block."""
        readers = self.hidden[1:] + [self.output_layer]
        return [(layer, [reader]) for layer, reader in zip(self.hidden, readers)]

    def call(self, inputs, training=None):
        x = inputs
        for layer in self.hidden:
            x = layer(x, training=training)
            if self.dropout_layer is not None:
                x = self.dropout_layer(x, training=training)
        return self.output_layer(x)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.output_units,)

    def plain_layer(self):
        """A `keras.Sequential` of `Dense` (and `Dropout`) layers computing what the block does."""
        layers = []
        for hidden in self.hidden:
            layers.append(hidden.plain_layer())
            if self.dropout:
                layers.append(keras.layers.Dropout(self.dropout, name=f"{hidden.name}_dropout"))
        output = self.output_layer
        layers.append(
            keras.layers.Dense(
                output.units,
                activation=output.activation,
                use_bias=output.use_bias,
                dtype=self.dtype_policy,
                name=output.name,
            )
        )
        return keras.Sequential(layers, name=self.name)

    def assign_plain_weights(self, plain):
        dense = [layer for layer in plain.layers if isinstance(layer, keras.layers.Dense)]
        for hidden, target in zip(self.hidden, dense):
            hidden.assign_plain_weights(target)
        dense[-1].set_weights(self.output_layer.get_weights())
        # Each hidden layer's importance goes into the kernel of the layer reading it.
        for hidden, reader in zip(self.hidden, dense[1:]):
            fold_importance(reader, ops.convert_to_numpy(hidden.importance()))

    @staticmethod
    def _hidden_config(layer):
        config = keras.saving.serialize_keras_object(layer)
        # The block builds its layers itself (from its own input shape).
        config.pop("build_config", None)
        return config

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "output_units": self.output_units,
                "hidden_layers": self.hidden_layers,
                "initial_units": self.initial_units,
                "activation": keras.activations.serialize(self.activation),
                "output_activation": keras.activations.serialize(self.output_activation),
                "dropout": self.dropout,
                **serialize_width_arguments(self.adaptive_arguments),
                "hidden_layer_configs": [self._hidden_config(layer) for layer in self.hidden],
            }
        )
        return config
