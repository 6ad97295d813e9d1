"""Adaptive-width layers, and the fixed-width forms `keras_awn.strip` produces where Keras has
none (`MLPRNNCell`, `GINConv`)."""

from keras_awn.layers.adaptive_attention import AdaptiveMultiHeadAttention
from keras_awn.layers.adaptive_conv import AdaptiveConv2D
from keras_awn.layers.adaptive_dense import AdaptiveDense
from keras_awn.layers.adaptive_feed_forward import AdaptiveFeedForward
from keras_awn.layers.adaptive_graph import AdaptiveGINConv
from keras_awn.layers.adaptive_graph import GINConv
from keras_awn.layers.adaptive_graph import GraphPooling
from keras_awn.layers.adaptive_mlp import AdaptiveMLP
from keras_awn.layers.adaptive_recurrent import AdaptiveRNN
from keras_awn.layers.adaptive_recurrent import AdaptiveRNNCell
from keras_awn.layers.adaptive_recurrent import MLPRNNCell
from keras_awn.layers.adaptive_width import AdaptiveWidthLayer

__all__ = [
    "AdaptiveConv2D",
    "AdaptiveDense",
    "AdaptiveFeedForward",
    "AdaptiveGINConv",
    "AdaptiveMLP",
    "AdaptiveMultiHeadAttention",
    "AdaptiveRNN",
    "AdaptiveRNNCell",
    "AdaptiveWidthLayer",
    "GINConv",
    "GraphPooling",
    "MLPRNNCell",
]
