"""`AdaptiveFeedForward`: a Transformer feed-forward block whose hidden width is learned."""

import keras

from keras_awn.layers.adaptive_mlp import AdaptiveMLP


@keras.saving.register_keras_serializable(package="keras_awn")
class AdaptiveFeedForward(AdaptiveMLP):
    """Transformer feed-forward block (`Dense(hidden) -> Dense(model_dim)`) with a learned hidden
    width.

    The position-wise feed-forward network of a Transformer block: an `AdaptiveDense` hidden
    layer (its width is learned) followed by a `Dense(model_dim)`. Its input and output size
    stay `model_dim`, so it drops into any Keras Transformer block (residual connections and
    `LayerNormalization` around it are fine: they never see the adaptive units).

    Args:
        model_dim: int >= 1, the size of the block's output (the model's feature size).
        initial_units: int, the starting hidden width. Defaults to 64.
        activation: activation of the hidden layer. Defaults to `"gelu"`.
        dropout: float in [0, 1), dropout on the hidden units during training. Defaults to 0.
        **kwargs: the adaptive-width arguments passed to the hidden `AdaptiveDense`
            (`quantile`, `distribution`, `min_units`, `max_units`, `importance_normalization`,
            `weight_prior_scale`, `width_prior`) and base layer arguments (`name`, `dtype`).

    Input shape:
        `(batch_size, ..., model_dim)` (the input's last axis may differ from `model_dim`).

    Output shape:
        `(batch_size, ..., model_dim)`.

    Example:

    ```python
    tokens = keras.Input((16, 32))
    attended = keras.layers.MultiHeadAttention(4, key_dim=8)(tokens, tokens)
    hidden = keras.layers.LayerNormalization()(tokens + attended)
    feed_forward = keras_awn.layers.AdaptiveFeedForward(model_dim=32, initial_units=64)
    hidden = keras.layers.LayerNormalization()(hidden + feed_forward(hidden))
    model = keras_awn.Model(tokens, hidden)
    ```

    References:
        - [Errica et al., 2025](https://arxiv.org/abs/2501.15889), "Adaptive Width Neural
          Networks", ICLR 2026 (the Transformer experiment adapts this width).
    """

    def __init__(
        self,
        model_dim: int,
        initial_units: int = 64,
        activation="gelu",
        dropout: float = 0.0,
        **kwargs,
    ):
        for fixed in ("output_units", "hidden_layers", "output_activation"):
            kwargs.pop(fixed, None)  # present in configs saved by the parent class
        super().__init__(
            output_units=model_dim,
            hidden_layers=1,
            initial_units=initial_units,
            activation=activation,
            dropout=dropout,
            **kwargs,
        )

    @property
    def model_dim(self) -> int:
        return self.output_units

    def get_config(self):
        config = super().get_config()
        config["model_dim"] = config.pop("output_units")
        for fixed in ("hidden_layers", "output_activation"):
            config.pop(fixed)
        return config
