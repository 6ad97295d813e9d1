"""`AdaptiveDense`: a densely-connected layer whose number of units is learned."""

import keras
from keras import ops

from keras_awn.layers.adaptive_width import AdaptiveWidthLayer


@keras.saving.register_keras_serializable(package="keras_awn")
class AdaptiveDense(AdaptiveWidthLayer):
    """Densely-connected layer whose number of units is learned during `fit`.

    Computes `activation(inputs @ kernel + bias) * importance`, where `importance` (one value per
    unit, decreasing with the unit's index) comes from a learned width distribution and is zero
    beyond the layer's current width. Units are ordered by importance, so the layer can later be
    truncated by dropping its last units. The kernel has `capacity` columns; the width moves inside
    the compiled step and `keras_awn.callbacks.WidthController` reallocates the capacity between
    steps when needed, carrying weights and optimizer state over.

    The layer's prior (a Gaussian on its active weights, optionally one on its width parameter)
    is added to the model's loss, scaled by 1/N with N the number of training examples, once the
    controller knows N.

    Args:
        initial_units: int >= 1, the width the layer starts with.
        activation: activation applied before the importance scaling. Defaults to None.
        use_bias: whether the layer uses a bias vector. Defaults to True.
        kernel_initializer: initializer of the kernel. Defaults to `"he_normal"`. When another
            adaptive layer feeds this one inside a `keras_awn.Sequential`, `keras_awn.Model` or
            `keras_awn.layers.AdaptiveMLP`, the kernel is instead drawn from
            `N(0, 2 / sum(p ** 2))` with `p` the feeding layer's importance (the paper), which
            compensates the importance scaling.
        bias_initializer: initializer of the bias. Defaults to `"zeros"`.
        quantile: float in (0, 1), the share of the importance mass the width covers.
            Defaults to 0.9.
        distribution: `"exponential"` (default), `"power_law"`, or a
            `keras_awn.distributions.WidthDistribution` instance.
        min_units: int >= 1, lower bound on the width. Defaults to 1.
        max_units: int or None, upper bound on the width. Defaults to None (unbounded).
        capacity: int or None, units physically allocated at build. Defaults to twice
            `initial_units`, and at least 64 (`min_capacity`), within `max_units`.
        importance_normalization: `"mean"` (default, importances average 1) or `"sum"` (the
            paper, importances sum to 1).
        weight_prior_scale: standard deviation of the Gaussian weight prior, or None.
            Defaults to 1.0.
        width_prior: None or `{"mean_units": int, "scale": float}`.
        **kwargs: base layer arguments (`name`, `dtype`, ...).

    Input shape:
        N-D tensor with shape `(batch_size, ..., input_dim)`.

    Output shape:
        N-D tensor with shape `(batch_size, ..., capacity)`; units from the current width on are
        exactly zero.

    Example:

    ```python
    model = keras_awn.Sequential([
        keras.Input((2,)),
        keras_awn.layers.AdaptiveDense(initial_units=16, activation="relu"),
        keras.layers.Dense(2),
    ])
    model.compile("adam", "mse")
    model.fit(x, y, epochs=10)
    keras_awn.widths(model)  # {"adaptive_dense": ...}
    ```

    References:
        - [Errica et al., 2025](https://arxiv.org/abs/2501.15889), "Adaptive Width Neural
          Networks", ICLR 2026.
    """

    def __init__(
        self,
        initial_units: int,
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

    def build(self, input_shape):
        input_dim = input_shape[-1]
        if input_dim is None:
            raise ValueError(
                f"The last dimension of the inputs to '{self.name}' must be defined. "
                f"Received: input_shape={input_shape}"
            )
        self.kernel = self.add_weight(
            name="kernel",
            shape=(input_dim, self.capacity),
            initializer=self.kernel_initializer,
        )
        self.bias = None
        if self.use_bias:
            self.bias = self.add_weight(
                name="bias", shape=(self.capacity,), initializer=self.bias_initializer
            )
        self._build_width_parameter()
        self.input_spec = keras.InputSpec(min_ndim=2, axes={-1: input_dim})

    def call(self, inputs, training=None):
        outputs = ops.matmul(inputs, self.kernel)
        if self.bias is not None:
            outputs = ops.add(outputs, self.bias)
        outputs = self.activation(outputs)
        # Importance after the activation: masked units output exactly 0 whatever activation(0).
        importance, unit_mask = self.importance_and_mask()
        outputs = outputs * ops.cast(importance, outputs.dtype)
        self._add_prior_loss(training, unit_mask)
        return outputs

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.capacity,)

    def output_unit_variables(self):
        unit_variables = [(self.kernel, 1)]
        if self.bias is not None:
            unit_variables.append((self.bias, 0))
        return unit_variables

    def input_unit_variables(self):
        return [(self.kernel, 0)]

    def initializer_for(self, variable):
        return self.kernel_initializer if variable is self.kernel else self.bias_initializer

    def plain_layer(self):
        """The `keras.layers.Dense` computing this layer's output before its importance."""
        return keras.layers.Dense(
            self.capacity,
            activation=self.activation,
            use_bias=self.use_bias,
            dtype=self.dtype_policy,
            name=self.name,
            trainable=self.trainable,
        )

    def assign_plain_weights(self, plain):
        plain.kernel.assign(ops.convert_to_numpy(self.kernel))
        if self.use_bias:
            plain.bias.assign(ops.convert_to_numpy(self.bias))

    def get_build_config(self):
        # The input width follows the feeding layer's reallocations; report the current one.
        if not self.built:
            return super().get_build_config()
        return {"input_shape": (None, int(self.kernel.shape[0]))}

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
