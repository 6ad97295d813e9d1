"""`AdaptiveDense`: a densely-connected layer whose number of units is learned."""

import keras
from keras import ops

from keras_awn.layers.adaptive_kernel import AdaptiveKernelLayer


@keras.saving.register_keras_serializable(package="keras_awn")
class AdaptiveDense(AdaptiveKernelLayer):
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
        initial_units: int >= 1 or None, the width the layer starts with. None (default) starts
            at 16 units, a start from which the width search reaches the width a task needs
            (`keras_awn.layers.AdaptiveWidthLayer`).
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
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=10)
    keras_awn.widths(model)  # {"adaptive_dense": ...}
    ```

    References:
        - [Errica et al., 2025](https://arxiv.org/abs/2501.15889), "Adaptive Width Neural
          Networks", ICLR 2026.
    """

    def build(self, input_shape):
        input_dim = input_shape[-1]
        if input_dim is None:
            raise ValueError(
                f"The last dimension of the inputs to '{self.name}' must be defined. "
                f"Received: input_shape={input_shape}"
            )
        self._build_kernel((input_dim,))
        self.input_spec = keras.InputSpec(min_ndim=2, axes={-1: input_dim})

    def call(self, inputs, training=None):
        return self._output_units(ops.matmul(inputs, self.kernel), training)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.capacity,)

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

    def _built_input_shape(self, input_units):
        return (None, input_units)
