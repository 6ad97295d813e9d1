"""Adaptive-width layers."""

from keras_awn.layers.adaptive_dense import AdaptiveDense
from keras_awn.layers.adaptive_mlp import AdaptiveMLP
from keras_awn.layers.adaptive_width import AdaptiveWidthLayer

__all__ = ["AdaptiveDense", "AdaptiveMLP", "AdaptiveWidthLayer"]
