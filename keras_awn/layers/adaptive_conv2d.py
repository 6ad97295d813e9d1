"""`AdaptiveConv2D`: a 2D convolution whose number of filters is learned."""

import keras
from keras import ops

from keras_awn._engine import validation
from keras_awn.layers.adaptive_kernel import AdaptiveKernelLayer


def _pair(name, value):
    """`value` as a tuple of two positive ints (Keras accepts an int or a pair)."""
    if validation.is_integer(value):
        value = (value, value)
    if (
        not isinstance(value, (tuple, list))
        or len(value) != 2
        or any(not validation.is_integer(v) or v < 1 for v in value)
    ):
        raise ValueError(
            f"`{name}` must be a positive int or a tuple of 2 positive ints. "
            f"Received: {name}={value!r}"
        )
    return tuple(int(v) for v in value)


def _output_length(length, kernel, stride, dilation, padding):
    if length is None:
        return None
    if padding == "same":
        return (length + stride - 1) // stride
    return (length - dilation * (kernel - 1) - 1) // stride + 1


@keras.saving.register_keras_serializable(package="keras_awn")
class AdaptiveConv2D(AdaptiveKernelLayer):
    """2D convolution whose number of filters (output channels) is learned during `fit`.

    Computes `activation(conv2d(inputs, kernel) + bias) * importance`, with one importance per
    filter (decreasing with the filter's index, zero beyond the layer's current width). The
    kernel has `capacity` filters; `keras_awn.callbacks.WidthController` reallocates them between
    steps. The paper kept convolution channels fixed; here they are learned like dense units.

    The output may feed `Conv2D`/`AdaptiveConv2D` (their input channels follow the width),
    `BatchNormalization` (its per-channel parameters and statistics follow it), pooling layers,
    and `GlobalAveragePooling2D`/`GlobalMaxPooling2D` followed by `Dense`. A `BatchNormalization`
    normalizes each channel, undoing the importance scaling: behind one, the width learns only
    from its prior. Put the adaptive convolution where its output reaches a convolution or a
    pooling first (see docs/layers/conv2d.md).

    Args:
        initial_filters: int >= 1 or None, the number of filters the layer starts with. None
            (default) starts at 16, from which the width search reaches what a task needs.
        kernel_size: int or tuple of 2 ints, the height and width of the convolution window.
        strides: int or tuple of 2 ints. Defaults to 1.
        padding: `"valid"` (default) or `"same"`.
        dilation_rate: int or tuple of 2 ints. Defaults to 1.
        activation: activation applied before the importance scaling. Defaults to None.
        use_bias: whether the layer uses a bias vector. Defaults to True.
        kernel_initializer: initializer of the kernel. Defaults to `"he_normal"` (readers of
            another adaptive layer get the paper's compensating initialisation instead, as for
            `AdaptiveDense`).
        bias_initializer: initializer of the bias. Defaults to `"zeros"`.
        data_format: only `"channels_last"` (or None with that image data format) is supported.
        **kwargs: the adaptive-width arguments of `keras_awn.layers.AdaptiveWidthLayer`
            (`quantile`, `distribution`, `min_units`, `max_units`, `capacity`,
            `importance_normalization`, `weight_prior_scale`, `width_prior`; here they count
            filters) and base layer arguments (`name`, `dtype`, ...).

    Input shape:
        4D tensor `(batch_size, height, width, channels)`.

    Output shape:
        4D tensor `(batch_size, new_height, new_width, capacity)`; channels from the current
        width on are exactly zero.

    Example:

    ```python
    model = keras_awn.Sequential([
        keras.Input((8, 8, 1)),
        keras_awn.layers.AdaptiveConv2D(8, 3, padding="same", activation="relu"),
        keras.layers.MaxPooling2D(),
        keras_awn.layers.AdaptiveConv2D(8, 3, padding="same", activation="relu"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(10),
    ])
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(images, labels, epochs=10)
    keras_awn.widths(model)  # {"adaptive_conv2d": ..., "adaptive_conv2d_1": ...}
    ```

    References:
        - [Errica et al., 2025](https://arxiv.org/abs/2501.15889), "Adaptive Width Neural
          Networks", ICLR 2026.
    """

    # A filter costs one product per output position: no capacity floor (see
    # AdaptiveWidthLayer).
    min_capacity = 1

    def __init__(
        self,
        initial_filters: int | None = None,
        kernel_size=None,
        strides=1,
        padding: str = "valid",
        dilation_rate=1,
        activation=None,
        use_bias: bool = True,
        kernel_initializer="he_normal",
        bias_initializer="zeros",
        data_format: str | None = None,
        **kwargs,
    ):
        # Saved configs name the filters like every adaptive layer does.
        initial_filters = kwargs.pop("initial_units", initial_filters)
        if kernel_size is None:
            raise ValueError(
                "`kernel_size` is required: an int or a tuple of 2 ints. "
                f"Received: kernel_size={kernel_size!r}"
            )
        self.kernel_size = _pair("kernel_size", kernel_size)
        self.strides = _pair("strides", strides)
        self.dilation_rate = _pair("dilation_rate", dilation_rate)
        if not isinstance(padding, str) or padding.lower() not in ("valid", "same"):
            raise ValueError(f"`padding` must be 'valid' or 'same'. Received: padding={padding!r}")
        if data_format is None:
            data_format = keras.config.image_data_format()
        if data_format != "channels_last":
            raise ValueError(
                "AdaptiveConv2D supports only channels_last inputs (its filters are the last "
                f"axis that readers follow). Received: data_format={data_format!r}"
            )
        super().__init__(
            initial_filters,
            activation=activation,
            use_bias=use_bias,
            kernel_initializer=kernel_initializer,
            bias_initializer=bias_initializer,
            **kwargs,
        )
        self.padding = padding.lower()
        self.data_format = data_format

    @property
    def initial_filters(self) -> int:
        return self.initial_units

    def build(self, input_shape):
        if len(input_shape) != 4 or input_shape[-1] is None:
            raise ValueError(
                f"'{self.name}' expects 4D inputs (batch, height, width, channels) with a known "
                f"number of channels. Received: input_shape={input_shape}"
            )
        input_channels = input_shape[-1]
        self._build_kernel(self.kernel_size + (input_channels,))
        self.input_spec = keras.InputSpec(ndim=4, axes={-1: input_channels})

    def call(self, inputs, training=None):
        outputs = ops.conv(
            inputs,
            self.kernel,
            strides=self.strides,
            padding=self.padding,
            data_format=self.data_format,
            dilation_rate=self.dilation_rate,
        )
        return self._output_units(outputs, training)

    def compute_output_shape(self, input_shape):
        spatial = [
            _output_length(length, kernel, stride, dilation, self.padding)
            for length, kernel, stride, dilation in zip(
                input_shape[1:3], self.kernel_size, self.strides, self.dilation_rate
            )
        ]
        return (input_shape[0], *spatial, self.capacity)

    def _built_input_shape(self, input_units):
        return (None, None, None, input_units)

    def plain_layer(self):
        """The `keras.layers.Conv2D` computing this layer's output before its importance."""
        return keras.layers.Conv2D(
            self.capacity,
            self.kernel_size,
            strides=self.strides,
            padding=self.padding,
            dilation_rate=self.dilation_rate,
            activation=self.activation,
            use_bias=self.use_bias,
            dtype=self.dtype_policy,
            name=self.name,
            trainable=self.trainable,
        )

    def get_config(self):
        config = super().get_config()
        config["initial_filters"] = config.pop("initial_units")
        config.update(
            {
                "kernel_size": self.kernel_size,
                "strides": self.strides,
                "padding": self.padding,
                "dilation_rate": self.dilation_rate,
                "data_format": self.data_format,
            }
        )
        return config
