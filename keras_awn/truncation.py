"""Reading, truncating and stripping trained adaptive models.

- `widths(model)`: the current width of every adaptive layer.
- `truncate(model, fraction=..., units=...)`: a copy keeping each layer's most important units
  (units are ordered by importance, so these are the first ones); the importance is renormalised
  over the kept units. `fraction=0` changes no prediction.
- `strip(model)`: a copy made of plain Keras layers (`Dense` instead of `AdaptiveDense`, ...,
  the importance folded into the next layer), which loads without keras_awn.
"""

import math

import keras
from keras import ops

from keras_awn._engine import resize
from keras_awn._engine import saving
from keras_awn._engine import topology
from keras_awn._engine import validation
from keras_awn._engine.folding import fold_importance
from keras_awn.layers.adaptive_rnn import is_adaptive_rnn
from keras_awn.layers.adaptive_rnn import plain_recurrent_layer
from keras_awn.layers.adaptive_width import AdaptiveWidthLayer


def widths(model) -> dict:
    """Returns `{layer name: active width}` for every adaptive layer of `model`.

    Layers that share a name (the two directions of a `Bidirectional`) are keyed by their
    path instead.

    Example:

    >>> keras_awn.widths(model)
    {'adaptive_dense': 87, 'adaptive_dense_1': 41}
    """
    layers = [layer for layer in topology.adaptive_layers(model) if layer.built]
    return {name: layer.active_units for layer, name in topology.display_names(layers).items()}


def _copy(model):
    """An uncompiled copy of `model` with the same weights."""
    if isinstance(model, keras.Sequential) or topology.functional_graph(model) is not None:
        with saving.own_classes(model):
            clone = model.__class__.from_config(model.get_config())
    else:
        raise ValueError(
            "`truncate` and `strip` work on Sequential and functional models (which keras_awn "
            "can rebuild from their config). Received a subclassed model: "
            f"{type(model).__name__}. Build it functionally, or wrap its adaptive part in a "
            "functional model."
        )
    clone.set_weights(model.get_weights())
    return clone


def _kept_units(layer, fraction, requested):
    active = layer.active_units
    if requested is not None:
        keep = requested.get(layer.name)
        if keep is None:
            return active
        if not validation.is_integer(keep) or not 1 <= keep <= active:
            raise ValueError(
                f"`units['{layer.name}']` must be an integer between 1 and the layer's active "
                f"width {active}. Received: units['{layer.name}']={keep!r}"
            )
        return int(keep)
    # Drop floor(fraction * active) units; the small epsilon guards float rounding (0.3 * 10).
    dropped = int(math.floor(fraction * active + 1e-9))
    return max(active - dropped, 1)


def truncate(model, fraction: float | None = None, units: dict | None = None):
    """Returns a copy of `model` keeping only the most important units of each adaptive layer.

    Units are ordered by importance (unit 0 first), so truncation keeps units `0..k-1` of each
    adaptive layer, slices the layers reading them to match, and renormalises the importance
    over the kept units. The copy's widths are fixed at `k` (`max_units = capacity = k`). It is
    not compiled.

    Args:
        model: a trained `keras_awn.Sequential` or functional model.
        fraction: float in [0, 1), the share of each layer's active units to drop (rounded down,
            at least one unit kept). `fraction=0` gives the same predictions.
        units: `{layer name: units to keep}` for some adaptive layers (others keep their
            width); an alternative to `fraction`.

    Returns:
        The truncated model.

    Example:

    ```python
    small = keras_awn.truncate(model, fraction=0.3)  # drop the 30% least important units
    small = keras_awn.truncate(model, units={"adaptive_dense": 8})
    ```
    """
    if (fraction is None) == (units is None):
        raise ValueError(
            "Pass exactly one of `fraction` and `units`. "
            f"Received: fraction={fraction!r}, units={units!r}"
        )
    layers = topology.adaptive_layers(model)
    if fraction is not None:
        if not validation.is_number(fraction) or not 0 <= fraction < 1:
            raise ValueError(
                f"`fraction` must be a number in [0, 1). Received: fraction={fraction!r}"
            )
    else:
        if not isinstance(units, dict):
            raise ValueError(
                f"`units` must be a dict {{layer name: units}}. Received: units={units!r}"
            )
        known = {layer.name for layer in layers}
        unknown = sorted(set(units) - known)
        if unknown:
            raise ValueError(
                f"`units` names layers that are not adaptive layers of the model: {unknown}. "
                f"Adaptive layers: {sorted(known)}. Received: units={units!r}"
            )
    # Validate every request on the original before copying anything.
    kept = {layer.name: _kept_units(layer, fraction, units) for layer in layers}
    clone = _copy(model)
    clone_layers = topology.adaptive_layers(clone)
    resize.resize(clone, {layer: kept[layer.name] for layer in clone_layers})
    for layer in clone_layers:
        keep = kept[layer.name]
        layer.max_units = keep
        layer.min_units = min(layer.min_units, keep)
    return clone


# -- strip -------------------------------------------------------------------------------------


def _plain_replacement(layer):
    """A plain layer computing what `layer` computes once importances are folded, or None when
    `layer` holds nothing adaptive. Adaptive layers and blocks say what replaces them
    (`plain_layer()`, filled by `assign_plain_weights(plain)`)."""
    if callable(getattr(layer, "plain_layer", None)):
        return layer.plain_layer()
    if is_adaptive_rnn(layer):  # a plain keras.layers.RNN over an adaptive cell
        return plain_recurrent_layer(layer)
    if isinstance(layer, AdaptiveWidthLayer):
        raise ValueError(
            f"`strip` does not know how to replace layer '{layer.name}' "
            f"({type(layer).__name__}) with plain Keras layers: define `plain_layer()` and "
            "`assign_plain_weights(plain)` on it."
        )
    return None


def _plain_config(model):
    """`model`'s config with every adaptive layer replaced by its plain counterpart."""
    config = model.get_config()
    by_name = {layer.name: layer for layer in model.layers}
    for entry in config["layers"]:
        name = saving.config_entry_name(entry)
        layer = by_name.get(name)
        replacement = _plain_replacement(layer) if layer is not None else None
        if replacement is None:
            if layer is not None and topology.adaptive_layers(layer):
                raise ValueError(
                    f"`strip` cannot replace layer '{name}' ({entry['class_name']}), which holds "
                    "adaptive layers, with plain layers."
                )
            continue
        saving.replace_in_config(entry, replacement)
    return config


def strip(model):
    """Returns a model of plain layers that computes what `model` computes.

    Every adaptive layer becomes its plain counterpart with its active units (`AdaptiveDense` a
    `Dense`, `AdaptiveConv2D` a `Conv2D`, `AdaptiveMultiHeadAttention` a `MultiHeadAttention`
    with its active heads, `AdaptiveMLP`/`AdaptiveFeedForward` a `Sequential` of `Dense`
    layers, ...), and each importance vector is folded into the layer reading it
    (`W_next[:k] * p[:k, None]`; a `BatchNormalization` reader takes it in its statistics and
    `gamma`). The result is a `keras.Sequential` or functional `keras.Model`; when it holds only
    Keras layers its `.keras` file loads in a process that never imports keras_awn (the
    recurrent and graph layers have no Keras counterpart and become keras_awn's fixed-width
    `MLPRNNCell` and `GINConv`). It is not compiled.

    Example:

    ```python
    plain = keras_awn.strip(model)
    plain.save("plain.keras")  # keras.saving.load_model works without keras_awn
    ```
    """
    truncated = truncate(model, fraction=0.0)
    config = _plain_config(truncated)
    with saving.own_classes(truncated):
        if isinstance(truncated, keras.Sequential):
            plain = keras.Sequential.from_config(config)
        else:
            plain = keras.Model.from_config(config)
    plain_layers = {layer.name: layer for layer in plain.layers}
    for layer in truncated.layers:
        target = plain_layers[layer.name]
        if callable(getattr(layer, "plain_layer", None)):
            layer.assign_plain_weights(target)
        elif is_adaptive_rnn(layer):
            layer.cell.assign_plain_weights(target.cell)
        else:
            target.set_weights(layer.get_weights())
    # Importances of adaptive layers go into the layers reading them (blocks fold their own).
    for producer, links in topology.find_links(truncated).items():
        importance = ops.convert_to_numpy(producer.importance())
        for reader in links.direct_readers:
            fold_importance(plain_layers[reader.name], importance)
    return plain
