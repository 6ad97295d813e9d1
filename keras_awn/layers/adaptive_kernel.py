"""`AdaptiveKernelLayer`: what `AdaptiveDense` and `AdaptiveConv2D` share.

Both compute `activation(inputs (*) kernel + bias) * importance` with the units on the kernel's
last axis and the inputs on the axis before it, so their variables, initializers, plain weights
and build config are handled once here.
"""

import keras
from keras import ops

from keras_awn._engine import running_state
from keras_awn.layers.adaptive_width import AdaptiveWidthLayer


class AdaptiveKernelLayer(AdaptiveWidthLayer):
    """Base of adaptive layers with a `kernel` (units last, inputs second to last) and a `bias`.

    Subclasses build the kernel with `_build_kernel`, compute the pre-activation in `call` and
    finish with `_output_units`.

    Args:
        initial_units: int >= 1 or None, the width the layer starts with. None (default) starts
            at 16 units, a start from which the width search reaches the width a task needs
            (`keras_awn.layers.AdaptiveWidthLayer`).
        activation: activation applied before the importance scaling. Defaults to None.
        use_bias: whether the layer uses a bias vector. Defaults to True.
        kernel_initializer: initializer of the kernel.
        bias_initializer: initializer of the bias. Defaults to `"zeros"`.
        **kwargs: the width arguments of `AdaptiveWidthLayer` and base layer arguments.
    """

    def __init__(
        self,
        initial_units: int | None = None,
        activation=None,
        use_bias: bool = True,
        kernel_initializer="he_normal",
        bias_initializer="zeros",
        **kwargs,
    ):
        super().__init__(initial_units, **kwargs)
        self.activation = keras.activations.get(activation)
        self.use_bias = use_bias
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)

    def _build_kernel(self, kernel_shape):
        """Creates `kernel` (`kernel_shape + (capacity,)`), `bias` and the width parameter."""
        self.kernel = self.add_weight(
            name="kernel",
            shape=tuple(kernel_shape) + (self.capacity,),
            initializer=self.kernel_initializer,
        )
        self.bias = None
        if self.use_bias:
            self.bias = self.add_weight(
                name="bias", shape=(self.capacity,), initializer=self.bias_initializer
            )
        self._build_width_parameter()

    def _output_units(self, outputs, training):
        """Bias, activation, then the importance (and the prior's loss) on a pre-activation."""
        if self.bias is not None:
            outputs = ops.add(outputs, self.bias)
        outputs = self.activation(outputs)
        # Importance after the activation: masked units output exactly 0 whatever activation(0).
        importance, unit_mask = self.importance_and_mask()
        outputs = outputs * ops.cast(importance, outputs.dtype)
        outputs = self._stochastic_prefixes(outputs, unit_mask, training)
        self._add_prior_loss(training, unit_mask)
        return outputs

    def output_unit_variables(self):
        unit_variables = [(self.kernel, len(self.kernel.shape) - 1)]
        if self.bias is not None:
            unit_variables.append((self.bias, 0))
        return unit_variables

    def input_unit_variables(self):
        return [(self.kernel, len(self.kernel.shape) - 2)]

    def initializer_for(self, variable):
        return self.kernel_initializer if variable is self.kernel else self.bias_initializer

    def assign_plain_weights(self, plain):
        plain.kernel.assign(running_state.host_value(self.kernel))
        if self.use_bias:
            plain.bias.assign(running_state.host_value(self.bias))

    def _built_input_shape(self, input_units: int) -> tuple:
        """The input shape `build` would take for `input_units` input units."""
        raise NotImplementedError

    def get_build_config(self):
        # The input width follows the feeding layer's reallocations; report the current one.
        if not self.built:
            return super().get_build_config()
        return {"input_shape": self._built_input_shape(int(self.kernel.shape[-2]))}

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "activation": keras.activations.serialize(self.activation),
                "use_bias": self.use_bias,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer),
            }
        )
        return config
