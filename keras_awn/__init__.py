"""keras_awn: Keras 3 layers that learn their own width during `model.fit`.

Implements "Adaptive Width Neural Networks" (Errica et al., ICLR 2026, arXiv:2501.15889) on the
TensorFlow, JAX and PyTorch backends.
"""

from keras_awn import callbacks
from keras_awn import datasets
from keras_awn import distributions
from keras_awn import graph_data
from keras_awn import layers
from keras_awn import plotting
from keras_awn._engine.topology import adaptive_layers
from keras_awn.conversion import adapt
from keras_awn.conversion import conversion_plan
from keras_awn.models import Model
from keras_awn.models import clone_model
from keras_awn.models import Sequential
from keras_awn.truncation import strip
from keras_awn.truncation import truncate
from keras_awn.truncation import widths

__version__ = "0.1.0"

__all__ = [
    "Model",
    "Sequential",
    "adapt",
    "adaptive_layers",
    "callbacks",
    "clone_model",
    "conversion_plan",
    "datasets",
    "distributions",
    "graph_data",
    "layers",
    "plotting",
    "strip",
    "truncate",
    "widths",
]
