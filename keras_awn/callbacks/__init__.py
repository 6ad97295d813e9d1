"""Callbacks that manage adaptive widths during `fit`."""

from keras_awn.callbacks.width_annealing import WidthAnnealing
from keras_awn.callbacks.width_controller import WidthController

__all__ = ["WidthAnnealing", "WidthController"]
