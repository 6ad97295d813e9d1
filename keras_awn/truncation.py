"""Reading, truncating and stripping trained adaptive models.

- `widths(model)`: the current width of every adaptive layer.
- `truncate(model, fraction=..., widths=...)`: a copy keeping each layer's most important units
  (units are ordered by importance, so these are the first ones); the importance is renormalised
  over the kept units. `fraction=0` changes no prediction.
- `strip(model)`: a copy made of plain Keras layers only (`Dense` instead of `AdaptiveDense`,
  the importance folded into the next layer's kernel), which loads without keras_awn.
"""

import math

import keras
import numpy as np
from keras import ops

from keras_awn import graph
from keras_awn import reallocation
from keras_awn.layers.adaptive_dense import AdaptiveDense
from keras_awn.layers.adaptive_mlp import AdaptiveMLP
from keras_awn.layers.adaptive_width import AdaptiveWidthLayer


def widths(model) -> dict:
    """Returns `{layer name: active width}` for every adaptive layer of `model`.

    Example:

    >>> keras_awn.widths(model)
    {'adaptive_dense': 87, 'adaptive_dense_1': 41}
    """
    return {layer.name: layer.active_units for layer in graph.adaptive_layers(model) if layer.built}


def _copy(model):
    """An uncompiled copy of `model` with the same weights."""
    if isinstance(model, keras.Sequential) or graph.functional_graph(model) is not None:
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
        if isinstance(keep, bool) or not isinstance(keep, int) or not 1 <= keep <= active:
            raise ValueError(
                f"`widths['{layer.name}']` must be an integer between 1 and the layer's active "
                f"width {active}. Received: widths['{layer.name}']={keep!r}"
            )
        return keep
    # Drop floor(fraction * active) units; the small epsilon guards float rounding (0.3 * 10).
    dropped = int(math.floor(fraction * active + 1e-9))
    return max(active - dropped, 1)


def truncate(model, fraction: float | None = None, widths: dict | None = None):
    """Returns a copy of `model` keeping only the most important units of each adaptive layer.

    Units are ordered by importance (unit 0 first), so truncation keeps units `0..k-1` of each
    adaptive layer, slices the layers reading them to match, and renormalises the importance
    over the kept units. The copy's widths are fixed at `k` (`max_units = capacity = k`). It is
    not compiled.

    Args:
        model: a trained `keras_awn.Sequential` or functional model.
        fraction: float in [0, 1), the share of each layer's active units to drop (rounded down,
            at least one unit kept). `fraction=0` gives the same predictions.
        widths: `{layer name: units to keep}` for some adaptive layers (others keep their
            width); an alternative to `fraction`.

    Returns:
        The truncated model.

    Example:

    ```python
    small = keras_awn.truncate(model, fraction=0.3)  # drop the 30% least important units
    small = keras_awn.truncate(model, widths={"adaptive_dense": 8})
    ```
    """
    if (fraction is None) == (widths is None):
        raise ValueError(
            "Pass exactly one of `fraction` and `widths`. "
            f"Received: fraction={fraction!r}, widths={widths!r}"
        )
    layers = graph.adaptive_layers(model)
    if fraction is not None:
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 <= fraction < 1:
            raise ValueError(f"`fraction` must be a number in [0, 1). Received: fraction={fraction!r}")
    else:
        if not isinstance(widths, dict):
            raise ValueError(
                f"`widths` must be a dict {{layer name: units}}. Received: widths={widths!r}"
            )
        known = {layer.name for layer in layers}
        unknown = sorted(set(widths) - known)
        if unknown:
            raise ValueError(
                f"`widths` names layers that are not adaptive layers of the model: {unknown}. "
                f"Adaptive layers: {sorted(known)}. Received: widths={widths!r}"
            )
    # Validate every request on the original before copying anything.
    kept = {layer.name: _kept_units(layer, fraction, widths) for layer in layers}
    clone = _copy(model)
    clone_layers = graph.adaptive_layers(clone)
    reallocation.resize(clone, {layer: kept[layer.name] for layer in clone_layers})
    for layer in clone_layers:
        keep = kept[layer.name]
        layer.max_units = keep
        layer.min_units = min(layer.min_units, keep)
    return clone


# -- strip -------------------------------------------------------------------------------------


def _dense_like(layer: AdaptiveDense):
    return keras.layers.Dense(
        layer.capacity,
        activation=layer.activation,
        use_bias=layer.use_bias,
        dtype=layer.dtype_policy,
        name=layer.name,
        trainable=layer.trainable,
    )


def _plain_replacement(layer):
    """A plain Keras layer computing what `layer` computes once importances are folded, or None."""
    if isinstance(layer, AdaptiveDense):
        return _dense_like(layer)
    if isinstance(layer, AdaptiveMLP):
        return keras.Sequential(
            [_dense_like(hidden) for hidden in layer.hidden]
            + [
                keras.layers.Dense(
                    layer.output_units,
                    activation=layer.output_layer.activation,
                    use_bias=layer.output_layer.use_bias,
                    dtype=layer.dtype_policy,
                    name=layer.output_layer.name,
                )
            ],
            name=layer.name,
        )
    if isinstance(layer, AdaptiveWidthLayer):
        raise ValueError(
            f"`strip` does not know how to replace layer '{layer.name}' "
            f"({type(layer).__name__}) with plain Keras layers."
        )
    return None


def _plain_config(model):
    """`model`'s config with every adaptive layer replaced by its plain counterpart."""
    config = model.get_config()
    by_name = {layer.name: layer for layer in model.layers}
    for entry in config["layers"]:
        name = entry.get("name") or entry["config"].get("name")
        layer = by_name.get(name)
        replacement = _plain_replacement(layer) if layer is not None else None
        if replacement is None:
            registered = entry.get("registered_name") or ""
            if registered.startswith("keras_awn>"):
                raise ValueError(
                    f"`strip` cannot replace layer '{name}' ({entry['class_name']}) with plain "
                    "Keras layers."
                )
            continue
        serialized = keras.saving.serialize_keras_object(replacement)
        for key in ("module", "class_name", "config", "registered_name"):
            entry[key] = serialized[key]
        entry.pop("build_config", None)
    return config


def _own_variables(layer):
    # `layer.weights` of a container includes its sublayers' weights; only its own are wanted.
    return list(layer._trainable_variables) + list(layer._non_trainable_variables)


def _folded_weights(model):
    """{layer name: {variable name: array}} with each importance folded into its readers."""
    arrays = {}
    for layer in model._flatten_layers(include_self=False):
        if layer.built:
            arrays[layer.name] = {v.name: ops.convert_to_numpy(v) for v in _own_variables(layer)}
    for producer, (consumers, _) in graph.find_links(model).items():
        importance = ops.convert_to_numpy(producer.importance())
        for consumer in consumers:
            kernel = arrays[consumer.name]["kernel"]
            arrays[consumer.name]["kernel"] = (kernel * importance[:, None]).astype(kernel.dtype)
    return arrays


def strip(model):
    """Returns a model of plain Keras layers that computes what `model` computes.

    Every `AdaptiveDense` becomes a `keras.layers.Dense` with its active units, every
    `AdaptiveMLP` a `keras.Sequential` of `Dense` layers, and each layer's importance vector is
    folded into the kernel rows of the layer reading it (`W_next[:k] * p[:k, None]`). The result
    is a `keras.Sequential` or functional `keras.Model`; its `.keras` file loads in a process that
    never imports keras_awn. It is not compiled.

    Example:

    ```python
    plain = keras_awn.strip(model)
    plain.save("plain.keras")  # keras.saving.load_model works without keras_awn
    ```
    """
    truncated = truncate(model, fraction=0.0)
    config = _plain_config(truncated)
    if isinstance(truncated, keras.Sequential):
        plain = keras.Sequential.from_config(config)
    else:
        plain = keras.Model.from_config(config)
    arrays = _folded_weights(truncated)
    for layer in plain._flatten_layers(include_self=False):
        source = arrays.get(layer.name)
        if source is None:
            continue
        for variable in _own_variables(layer):
            variable.assign(source[variable.name])
    return plain
