"""Folding a per-unit scaling of a layer's outputs into the layers reading them.

- `fold_importance`: `strip` folds an adaptive layer's importance into a plain reader.
- `scaled_normalization`: a BatchNormalization's statistics and `gamma` for inputs scaled per
  channel (`keras_awn.adapt`, and width changes made by the width search or `WidthAnnealing`).
"""

import keras
import numpy as np

from keras_awn._engine import running_state


def fold_importance(reader, importance) -> None:
    """Folds a producer's `importance` (numpy, one value per unit) into a plain Keras `reader`
    of its units, so that the reader computes from the unscaled units what it computed from
    the scaled ones (`strip`). `reader` is built, with as many input units as `importance`.

    - `Dense`, `Conv2D`: the kernel's input axis is multiplied, `W[..., i, :] * p[i]`.
    - `BatchNormalization`: its statistics follow the unscaled inputs (`mean / p`,
      `variance / p**2`) and `gamma` absorbs what the epsilon leaves (`scaled_normalization`
      with `1 / p`): inference computes the same, and training-mode batch statistics still
      agree with the moving ones, so the stripped model fine-tunes like the adaptive one.
    """
    importance = np.asarray(importance, dtype="float64")
    if isinstance(reader, keras.layers.BatchNormalization):
        for variable, value in normalization_assignments(reader, 1.0 / importance):
            variable.assign(value)
        return
    kernel = running_state.host_value(reader.kernel)
    shape = [1] * kernel.ndim
    shape[-2] = -1  # the input axis: 0 for Dense, 2 for Conv2D
    folded = kernel.astype("float64") * importance.reshape(shape)
    reader.kernel.assign(folded.astype(kernel.dtype))


def scaled_normalization(gamma, moving_mean, moving_variance, scale, epsilon):
    """`(gamma, moving_mean, moving_variance)` of a BatchNormalization that computes, in
    inference, from inputs `scale * x` (per channel, `scale > 0`) what it computed from `x`.

    The statistics follow the scaled inputs (`mean * s`, `variance * s**2`, so training-mode
    batch statistics and the moving ones still agree), and `gamma` absorbs what the epsilon
    leaves: `gamma * sqrt(s**2 v + eps) / (s sqrt(v + eps))`. Numpy arrays in, arrays of the
    same dtypes out.
    """
    s = np.asarray(scale, dtype="float64")
    variance = np.asarray(moving_variance, dtype="float64")
    scaled_variance = s**2 * variance
    new_gamma = (
        np.asarray(gamma, "float64")
        * np.sqrt(scaled_variance + epsilon)
        / (s * np.sqrt(variance + epsilon))
    )
    return (
        new_gamma.astype(np.asarray(gamma).dtype),
        (np.asarray(moving_mean, "float64") * s).astype(np.asarray(moving_mean).dtype),
        scaled_variance.astype(np.asarray(moving_variance).dtype),
    )


def normalization_assignments(reader, scale) -> list:
    """`[(variable, value)]` that make a built BatchNormalization `reader` compute, in
    inference, from its first `len(scale)` channels multiplied by `scale` what it computed from
    them before (`scaled_normalization`); its other channels are left as they are."""
    scale = np.asarray(scale, dtype="float64")
    kept = len(scale)
    variables = (reader.gamma, reader.moving_mean, reader.moving_variance)
    values = [running_state.host_value(variable) for variable in variables]
    rescaled = scaled_normalization(
        *(value[:kept] for value in values), scale, float(reader.epsilon)
    )
    assignments = []
    for variable, value, new in zip(variables, values, rescaled):
        value[:kept] = new  # host_value returns a copy
        assignments.append((variable, value))
    return assignments
