"""Figures of an adaptive model's training and truncation (needs matplotlib: `keras-awn[plot]`).

- `plot_widths`: the width of each adaptive layer over training, from a `fit` history.
- `truncation_curve` and `plot_truncation`: accuracy as a growing fraction of each layer's units
  is removed, for an adaptive model (least important units first) and for a plain Keras MLP (its
  last units: a fixed-width network has no order, so any choice is as good as another).
- `plot_accuracy_vs_parameters`: accuracy against parameter count, one marker series per model kind.

Each plotting function draws on `ax` (a new figure when None) and returns the axes.

Example:

```python
model = keras_awn.Sequential([
    keras.Input((2,)),
    keras_awn.layers.AdaptiveDense(8, activation="relu"),
    keras_awn.layers.AdaptiveDense(8, activation="relu"),
    keras.layers.Dense(2),
])
model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
history = model.fit(x, y, epochs=3, verbose=0)
ax = keras_awn.plotting.plot_widths(history)          # ax.figure.savefig("widths.png")
fractions = [0.0, 0.25, 0.5]
curves = {"adaptive": keras_awn.plotting.truncation_curve(model, x, y, fractions)}
keras_awn.plotting.plot_truncation(fractions, curves)
```
"""

import math

import keras
import numpy as np

from keras_awn._engine import topology
from keras_awn import truncation

_WIDTH_SUFFIX = "_width"


def _pyplot():
    try:
        # The backend is the user's (matplotlib falls back to Agg where there is no display).
        import matplotlib.pyplot as plt
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError(
            "keras_awn.plotting needs matplotlib: pip install 'keras-awn[plot]'"
        ) from error
    return plt


def _axes(ax):
    if ax is not None:
        return ax
    _, ax = _pyplot().subplots(figsize=(5, 3.5))
    return ax


def width_histories(history) -> dict:
    """`{layer name: [width per epoch]}` from a `keras.callbacks.History` or its `history` dict.

    keras_awn models log one `<layer name>_width` entry per adaptive layer and epoch.
    """
    logs = getattr(history, "history", history)
    if not isinstance(logs, dict):
        raise ValueError(
            f"`history` must be a keras History or a dict of lists. Received: history={history!r}"
        )
    widths = {
        key[: -len(_WIDTH_SUFFIX)]: [int(round(float(v))) for v in values]
        for key, values in logs.items()
        if key.endswith(_WIDTH_SUFFIX) and not key.startswith("val_")
    }
    if not widths:
        raise ValueError(
            "`history` has no `<layer>_width` entries (train a keras_awn.Model or "
            f"keras_awn.Sequential). Received keys: {sorted(logs)}"
        )
    return widths


def plot_widths(history, ax=None, title="Width per layer"):
    """Draws each adaptive layer's width against the epoch; returns the axes."""
    widths = width_histories(history)
    ax = _axes(ax)
    for name, values in widths.items():
        ax.plot(range(1, len(values) + 1), values, label=name)
    ax.set(xlabel="epoch", ylabel="units", title=title)
    ax.legend(fontsize=8)
    return ax


def _check_fractions(fractions):
    fractions = [float(f) for f in fractions]
    if not fractions or any(not 0.0 <= f < 1.0 for f in fractions):
        raise ValueError(
            "`fractions` must be a non-empty list of values in [0, 1). "
            f"Received: fractions={fractions}"
        )
    return fractions


def _truncate_plain_mlp(model, fraction):
    """A copy of a plain Sequential of Dense layers without the last units of each hidden Dense."""
    dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    others = [
        layer
        for layer in model.layers
        if not isinstance(layer, (keras.layers.Dense, keras.layers.Dropout))
    ]
    if not isinstance(model, keras.Sequential) or others or len(dense) < 2:
        raise ValueError(
            "truncation_curve cuts plain Keras models only when they are a Sequential of Dense "
            f"(and Dropout) layers. Received: model={model.name!r} with layers "
            f"{[type(layer).__name__ for layer in model.layers]}"
        )
    new_layers, weights, kept_inputs = [keras.Input(model.inputs[0].shape[1:])], [], None
    for index, layer in enumerate(dense):
        kernel, *bias = layer.get_weights()
        if kept_inputs is not None:
            kernel = kernel[:kept_inputs]
        units = layer.units
        if index < len(dense) - 1:
            units = max(1, int(math.ceil(layer.units * (1.0 - fraction))))
            kernel, bias = kernel[:, :units], [b[:units] for b in bias]
        config = layer.get_config()
        config.update(units=units, name=layer.name)
        new_layers.append(keras.layers.Dense.from_config(config))
        weights.append([kernel, *bias])
        kept_inputs = units
    copy = keras.Sequential(new_layers)
    for layer, values in zip(copy.layers, weights):
        layer.set_weights(values)
    return copy


def truncation_curve(model, x, y, fractions, batch_size=1024) -> list:
    """Test accuracy of `model` with each fraction of every layer's units removed.

    Args:
        model: a model with adaptive layers (cut by `keras_awn.truncate`, least important units
            first) or a plain `keras.Sequential` of `Dense` layers (its hidden layers lose their
            last units).
        x, y: test inputs and integer labels.
        fractions: fractions in [0, 1) of each layer's active units to remove.
        batch_size: prediction batch size.

    Returns:
        A list of accuracies, one per fraction.
    """
    fractions = _check_fractions(fractions)
    y = np.asarray(y)
    adaptive = bool(topology.adaptive_layers(model))
    accuracies = []
    for fraction in fractions:
        if adaptive:
            cut = truncation.truncate(model, fraction=fraction)
        else:
            cut = _truncate_plain_mlp(model, fraction)
        logits = cut.predict(x, verbose=0, batch_size=batch_size)
        accuracies.append(float(np.mean(np.argmax(logits, axis=-1) == y)))
    return accuracies


def plot_truncation(fractions, curves, ax=None, title="Accuracy as units are removed"):
    """Draws `{label: accuracies}` against the fraction of units removed; returns the axes."""
    fractions = _check_fractions(fractions)
    if not isinstance(curves, dict) or not curves:
        raise ValueError(
            f"`curves` must be a non-empty dict of label -> accuracies. Received: curves={curves!r}"
        )
    ax = _axes(ax)
    for label, accuracies in curves.items():
        if len(accuracies) != len(fractions):
            raise ValueError(
                f"Each curve needs one accuracy per fraction ({len(fractions)}). "
                f"Received: {len(accuracies)} for {label!r}"
            )
        ax.plot(fractions, accuracies, marker="o", label=label)
    ax.set(xlabel="fraction of each layer's units removed", ylabel="test accuracy", title=title)
    ax.legend(fontsize=8)
    return ax


def plot_accuracy_vs_parameters(points, ax=None, title="Accuracy vs parameters"):
    """Draws `{label: [(parameters, accuracy), ...]}` on a log parameter axis; returns the axes."""
    if not isinstance(points, dict) or not points:
        raise ValueError(
            "`points` must be a non-empty dict of label -> [(parameters, accuracy)]. "
            f"Received: points={points!r}"
        )
    ax = _axes(ax)
    for index, (label, pairs) in enumerate(points.items()):
        pairs = np.asarray(pairs, dtype="float64").reshape(-1, 2)
        ax.scatter(pairs[:, 0], pairs[:, 1], label=label, marker="os^vD"[index % 5], alpha=0.8)
    ax.set_xscale("log")
    ax.set(xlabel="parameters", ylabel="test accuracy", title=title)
    ax.legend(fontsize=8)
    return ax
