"""Folding an adaptive layer's importance into the plain Keras layer reading its units (`strip`)."""

import keras
import numpy as np

from keras_awn._engine import running_state


def fold_importance(reader, importance) -> None:
    """Folds a producer's `importance` (numpy, one value per unit) into a plain Keras `reader`
    of its units, so that the reader computes from the unscaled units what it computed from
    the scaled ones (`strip`). `reader` is built, with as many input units as `importance`.

    - `Dense`, `Conv2D`: the kernel's input axis is multiplied, `W[..., i, :] * p[i]`.
    - `BatchNormalization` (inference): `gamma * p` and `moving_mean / p`, since
      `(p x - m) / s = p (x - m / p) / s`.
    """
    importance = np.asarray(importance, dtype="float64")
    if isinstance(reader, keras.layers.BatchNormalization):
        gamma = running_state.host_value(reader.gamma).astype("float64")
        mean = running_state.host_value(reader.moving_mean).astype("float64")
        reader.gamma.assign((gamma * importance).astype(reader.gamma.dtype))
        reader.moving_mean.assign((mean / importance).astype(reader.moving_mean.dtype))
        return
    kernel = running_state.host_value(reader.kernel)
    shape = [1] * kernel.ndim
    shape[-2] = -1  # the input axis: 0 for Dense, 2 for Conv2D
    folded = kernel.astype("float64") * importance.reshape(shape)
    reader.kernel.assign(folded.astype(kernel.dtype))
