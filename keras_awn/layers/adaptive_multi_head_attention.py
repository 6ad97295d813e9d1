"""`AdaptiveMultiHeadAttention`: multi-head attention whose number of heads is learned."""

import keras
from keras import ops

from keras_awn.layers.adaptive_width import AdaptiveWidthLayer
from keras_awn._engine import keras_internals
from keras_awn._engine import running_state
from keras_awn._engine import validation


@keras.saving.register_keras_serializable(package="keras_awn")
class AdaptiveMultiHeadAttention(AdaptiveWidthLayer):
    """Multi-head attention whose number of heads is learned during `fit`.

    Computes the attention of `keras.layers.MultiHeadAttention` (same weights, same layout)
    with one importance per head, decreasing with the head's index and zero beyond the current
    number of heads. Each head's output is scaled by its importance before the output
    projection, so heads are ordered by importance and the layer truncates by dropping its last
    heads. The key/value size per head is fixed; the output size equals the query's feature
    size. The paper kept the heads fixed; here they are learned like dense units.

    The heads are internal: the output size never changes, so any layer may read it.
    `keras_awn.strip` turns the layer into a `keras.layers.MultiHeadAttention` with the active
    heads (the importance folded into the output projection).

    Args:
        initial_heads: int >= 1, the number of heads the layer starts with.
        key_dim: int >= 1, the size of each head for query and key.
        value_dim: int or None, the size of each head for value. Defaults to `key_dim`.
        dropout: float in [0, 1), dropout on the attention probabilities. Defaults to 0.
        use_bias: whether the projections use biases. Defaults to True.
        kernel_initializer: initializer of the projection kernels. Defaults to
            `"glorot_uniform"` (as `keras.layers.MultiHeadAttention`).
        bias_initializer: initializer of the biases. Defaults to `"zeros"`.
        **kwargs: the adaptive-width arguments of `keras_awn.layers.AdaptiveWidthLayer`
            (`quantile`, `distribution`, `min_units`, `max_units`, `capacity`,
            `importance_normalization`, `weight_prior_scale`, `width_prior`,
            `width_learning`; here they count heads) and base layer arguments (`name`,
            `dtype`, ...). `width_learning` defaults to `"gradient"` here (the paper's): the
            width search judges widths of 8 units and more, and a layer has a few heads.

    Call arguments:
        query: `(batch_size, target_length, query_dim)`.
        value: `(batch_size, source_length, value_features)`.
        key: optional `(batch_size, source_length, key_features)`; defaults to `value`.
        attention_mask: optional boolean `(batch_size, target_length, source_length)`, True
            where attention is allowed.
        training: whether dropout is active.
        use_causal_mask: whether each position attends only to earlier ones.

    Output shape:
        `(batch_size, target_length, query_dim)`.

    Example:

    ```python
    tokens = keras.Input((16, 32))
    attended = keras_awn.layers.AdaptiveMultiHeadAttention(4, key_dim=8)(tokens, tokens)
    hidden = keras.layers.LayerNormalization()(tokens + attended)
    outputs = keras.layers.Dense(10)(keras.layers.GlobalAveragePooling1D()(hidden))
    model = keras_awn.Model(tokens, outputs)
    ```

    References:
        - [Errica et al., 2025](https://arxiv.org/abs/2501.15889), "Adaptive Width Neural
          Networks", ICLR 2026.
        - [Vaswani et al., 2017](https://arxiv.org/abs/1706.03762), "Attention Is All You
          Need".
    """

    # The heads feed this layer's own output projection; its output size is fixed.
    exposes_units = False
    # A head costs `key_dim` projections per token: no capacity floor (see AdaptiveWidthLayer).
    min_capacity = 1

    def __init__(
        self,
        initial_heads: int,
        key_dim: int,
        value_dim: int | None = None,
        dropout: float = 0.0,
        use_bias: bool = True,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        **kwargs,
    ):
        # Heads learn their number by gradient, as in the paper: the width search judges
        # widths of 8 units and more, and a layer has a handful of heads.
        kwargs.setdefault("width_learning", "gradient")
        initial_heads = kwargs.pop("initial_units", initial_heads)
        key_dim = validation.check_int("key_dim", key_dim)
        value_dim = validation.check_int("value_dim", value_dim, allow_none=True)
        validation.check_fraction("dropout", dropout)
        super().__init__(initial_heads, **kwargs)
        self.key_dim = key_dim
        self.value_dim = value_dim if value_dim is not None else key_dim
        self.dropout = float(dropout)
        self.use_bias = use_bias
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.dropout_layer = keras.layers.Dropout(self.dropout)

    @property
    def initial_heads(self) -> int:
        return self.initial_units

    def _projection(self, name, input_dim, head_dim):
        kernel = self.add_weight(
            name=f"{name}_kernel",
            shape=(input_dim, self.capacity, head_dim),
            initializer=self.kernel_initializer,
        )
        bias = None
        if self.use_bias:
            bias = self.add_weight(
                name=f"{name}_bias",
                shape=(self.capacity, head_dim),
                initializer=self.bias_initializer,
            )
        return kernel, bias

    def build(self, query_shape, value_shape, key_shape=None):
        key_shape = value_shape if key_shape is None else key_shape
        for name, shape in (("query", query_shape), ("value", value_shape), ("key", key_shape)):
            if len(shape) != 3 or shape[-1] is None:
                raise ValueError(
                    f"'{self.name}' expects 3D `{name}` inputs (batch, length, features) with "
                    f"known features. Received: {name}_shape={shape}"
                )
        self.query_dim = int(query_shape[-1])
        self.query_kernel, self.query_bias = self._projection(
            "query", query_shape[-1], self.key_dim
        )
        self.key_kernel, self.key_bias = self._projection("key", key_shape[-1], self.key_dim)
        self.value_kernel, self.value_bias = self._projection(
            "value", value_shape[-1], self.value_dim
        )
        self.output_kernel = self.add_weight(
            name="output_kernel",
            shape=(self.capacity, self.value_dim, self.query_dim),
            initializer=self.kernel_initializer,
        )
        self.output_bias = None
        if self.use_bias:
            self.output_bias = self.add_weight(
                name="output_bias", shape=(self.query_dim,), initializer=self.bias_initializer
            )
        self._build_width_parameter()

    @staticmethod
    def _project(inputs, kernel, bias):
        projected = ops.einsum("btd,dhk->bthk", inputs, kernel)
        return projected if bias is None else projected + bias

    def call(
        self,
        query,
        value,
        key=None,
        attention_mask=None,
        training=None,
        use_causal_mask=False,
    ):
        key = value if key is None else key
        queries = self._project(query, self.query_kernel, self.query_bias)
        keys = self._project(key, self.key_kernel, self.key_bias)
        values = self._project(value, self.value_kernel, self.value_bias)
        queries = queries * ops.cast(1.0 / self.key_dim**0.5, queries.dtype)
        scores = ops.einsum("bthk,bshk->bhts", queries, keys)
        mask = None
        if attention_mask is not None:
            mask = ops.cast(attention_mask, "bool")[:, None, :, :]
        if use_causal_mask:
            target, source = ops.shape(scores)[2], ops.shape(scores)[3]
            causal = ops.tril(ops.ones((target, source), dtype="bool"))[None, None]
            mask = causal if mask is None else ops.logical_and(mask, causal)
        if mask is not None:
            # The most negative finite value of the scores' dtype, so float16 does not overflow.
            floor = -65504.0 if scores.dtype == "float16" else -1e9
            scores = ops.where(mask, scores, ops.cast(floor, scores.dtype))
        probabilities = ops.softmax(scores, axis=-1)
        probabilities = self.dropout_layer(probabilities, training=training)
        heads = ops.einsum("bhts,bshv->bthv", probabilities, values)
        # Each head's output scaled by its importance: masked heads contribute exactly zero.
        importance, unit_mask = self.importance_and_mask()
        heads = heads * ops.cast(importance, heads.dtype)[:, None]
        outputs = ops.einsum("bthv,hvd->btd", heads, self.output_kernel)
        if self.output_bias is not None:
            outputs = outputs + self.output_bias
        self._add_prior_loss(training, unit_mask)
        return outputs

    def compute_output_shape(self, query_shape, value_shape, key_shape=None):
        return tuple(query_shape)

    def adaptive_links(self):
        """The heads are read by the layer's own output projection: no outside reader."""
        return [(self, [])]

    def output_unit_variables(self):
        unit_variables = []
        for kernel, bias in (
            (self.query_kernel, self.query_bias),
            (self.key_kernel, self.key_bias),
            (self.value_kernel, self.value_bias),
        ):
            unit_variables.append((kernel, 1))
            if bias is not None:
                unit_variables.append((bias, 0))
        unit_variables.append((self.output_kernel, 0))
        return unit_variables

    def input_unit_variables(self):
        return []

    def initializer_for(self, variable):
        return self.bias_initializer if len(variable.shape) < 3 else self.kernel_initializer

    def plain_layer(self):
        """The `keras.layers.MultiHeadAttention` with this layer's active heads."""
        return keras.layers.MultiHeadAttention(
            num_heads=self.capacity,
            key_dim=self.key_dim,
            value_dim=self.value_dim,
            dropout=self.dropout,
            use_bias=self.use_bias,
            dtype=self.dtype_policy,
            name=self.name,
            trainable=self.trainable,
        )

    def assign_plain_weights(self, plain):
        def value(variable):
            return running_state.host_value(variable)

        query, key, value_dense, output = keras_internals.multi_head_attention_projections(plain)
        for dense, kernel, bias in (
            (query, self.query_kernel, self.query_bias),
            (key, self.key_kernel, self.key_bias),
            (value_dense, self.value_kernel, self.value_bias),
        ):
            dense.kernel.assign(value(kernel))
            if bias is not None:
                dense.bias.assign(value(bias))
        importance = ops.convert_to_numpy(self.importance())
        output_kernel = value(self.output_kernel) * importance[:, None, None]
        output.kernel.assign(output_kernel.astype(value(self.output_kernel).dtype))
        if self.output_bias is not None:
            output.bias.assign(value(self.output_bias))

    def get_config(self):
        config = super().get_config()
        config["initial_heads"] = config.pop("initial_units")
        config.update(
            {
                "key_dim": self.key_dim,
                "value_dim": self.value_dim,
                "dropout": self.dropout,
                "use_bias": self.use_bias,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer),
            }
        )
        return config
