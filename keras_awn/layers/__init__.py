"""Adaptive-width layers, and the fixed-width forms `keras_awn.strip` produces where Keras has
none (`MLPRNNCell`, `GINConv`)."""

from keras_awn.layers.adaptive_conv2d import AdaptiveConv2D
from keras_awn.layers.adaptive_dense import AdaptiveDense
from keras_awn.layers.adaptive_feed_forward import AdaptiveFeedForward
from keras_awn.layers.adaptive_gin_conv import AdaptiveGINConv
from keras_awn.layers.adaptive_mlp import AdaptiveMLP
from keras_awn.layers.adaptive_multi_head_attention import AdaptiveMultiHeadAttention
from keras_awn.layers.adaptive_rnn import AdaptiveRNN
from keras_awn.layers.adaptive_rnn_cell import AdaptiveRNNCell
from keras_awn.layers.adaptive_width import AdaptiveWidthLayer
from keras_awn.layers.gin_conv import GINConv
from keras_awn.layers.graph_pooling import GraphPooling
from keras_awn.layers.mlp_rnn_cell import MLPRNNCell

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
