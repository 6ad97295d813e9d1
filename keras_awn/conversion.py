"""Making an existing Keras model adaptive: `adapt` and `conversion_plan`.

`adapt(model)` returns a `keras_awn` model computing what `model` computes, in which every
`Dense` and `Conv2D` whose readers can follow a width becomes an `AdaptiveDense` /
`AdaptiveConv2D`, and every `MultiHeadAttention` an `AdaptiveMultiHeadAttention`, each starting
at its current width with its trained weights:

1. Each converted layer's units are put in order of *saliency*, most salient first, so that the
   importance ordering (and `truncate`, and the width search's prefixes) is meaningful from the
   first step. The permutation is applied to the layer's outputs and to its readers' inputs:
   the function is unchanged.
2. An adaptive layer scales unit `i` by its importance `p_i`. The layers reading it get the
   inverse of what `strip` folds into them: a `Dense`/`Conv2D` reader's input rows are divided
   by `p_i`; a `BatchNormalization` reader's statistics follow the scaled units (`mean * p`,
   `variance * p**2`) and its `gamma` absorbs what the epsilon leaves
   (`gamma * sqrt(p**2 v + eps) / (p sqrt(v + eps))`). The converted model computes the same
   function, to float rounding.

The saliency orders the units (`saliency=`):

- `"magnitude"` (default): the L1 norm of each unit's incoming weights (a head's query, key,
  value and output weights), the criterion of structured magnitude pruning;
- `"contribution"`: what removing the unit takes from the layers reading it,
  `sum over readers r of rms(input of r)_i * ||row i of r's kernel||`, measured on a sample `x`
  (attention heads are still ordered from their weights, as below);
- `"weight_norm"`: the same estimated from the weights (the norm of the unit's incoming weights,
  or `sqrt(gamma**2 + beta**2)` past a `BatchNormalization`; attention heads by
  `||value kernel of the head|| * ||output kernel of the head||`).

The default is the one that fine-tuned best, measured in benchmarks/compression.py
(docs/compression.md): contribution keeps more accuracy with no fine-tuning on some models, and
less after it.
"""

import keras
import numpy as np

from keras_awn._engine import folding
from keras_awn._engine import keras_internals
from keras_awn._engine import running_state
from keras_awn._engine import saving
from keras_awn._engine import topology
from keras_awn.layers.adaptive_conv2d import AdaptiveConv2D
from keras_awn.layers.adaptive_dense import AdaptiveDense
from keras_awn.layers.adaptive_multi_head_attention import AdaptiveMultiHeadAttention
from keras_awn.layers.adaptive_width import WIDTH_ARGUMENTS

CONVERTIBLE_TYPES = (keras.layers.Dense, keras.layers.Conv2D, keras.layers.MultiHeadAttention)
SALIENCIES = ("magnitude", "contribution", "weight_norm")
# The share of the importance mass a converted layer's width covers, unless `adapt` is given a
# `quantile`. The readers of a unit hold its outgoing weights divided by its importance, and
# Adam's steps do not depend on a weight's scale: unit i's contribution then moves p_i times as
# fast as in the plain model. 0.5 keeps a layer's importances within a factor of about 2 (4 at
# 4 units); 0.9, the layers' default, spreads them over 10 to 13 (100 at 4 units). Fine-tuning a
# Transformer block compressed to a quarter measured 0.990 against 0.955 (docs/adapt.md).
ADAPT_QUANTILE = 0.5

# What `keras.layers.MultiHeadAttention.call` may receive for its adaptive counterpart to
# compute the same: `AdaptiveMultiHeadAttention.call` takes these and nothing else.
_ATTENTION_CALL_ARGUMENTS = {
    "query",
    "value",
    "key",
    "attention_mask",
    "training",
    "use_causal_mask",
}


# -- Which layers convert, and why the others do not ---------------------------------------------


def _graph_of(model):
    graph = topology.functional_graph(model)
    if graph is None:
        if isinstance(model, keras.Sequential):
            raise ValueError(
                f"Sequential model '{model.name}' is not built: give it a `keras.Input` or call "
                "it once before `keras_awn.adapt`, so that its layers have weights to keep."
            )
        raise ValueError(
            "`keras_awn.adapt` converts Sequential and functional models (whose graph shows "
            "which layers read which). Received a subclassed model: "
            f"model={type(model).__name__}. Build it functionally."
        )
    return graph


def _nodes_in(graph, layer):
    nodes = {id(node) for depth in graph._nodes_by_depth.values() for node in depth}
    return [node for node in layer._inbound_nodes if id(node) in nodes]


def _layer_reason(layer):
    """Why `layer` itself (whatever reads it) has no adaptive counterpart, or None."""
    if type(layer) not in CONVERTIBLE_TYPES:
        return (
            f"a {type(layer).__name__} subclass: only Dense, Conv2D and MultiHeadAttention convert"
        )
    if not layer.built:
        return "not built"
    config = layer.get_config()
    for attribute in (
        "kernel_regularizer",
        "bias_regularizer",
        "activity_regularizer",
        "kernel_constraint",
        "bias_constraint",
    ):
        # Read from the config: MultiHeadAttention keeps them in private attributes.
        if config.get(attribute) is not None:
            return f"it has a `{attribute}`, which adaptive layers do not take"
    if getattr(layer, "lora_enabled", False):
        return "LoRA is enabled on it"
    if getattr(layer, "quantization_mode", None):
        return f"it is quantized ({layer.quantization_mode})"
    if isinstance(layer, keras.layers.Conv2D):
        if layer.data_format != "channels_last":
            return f"data_format={layer.data_format!r}: adaptive filters are the last axis"
        if layer.groups != 1:
            return f"groups={layer.groups}: a grouped convolution's filters cannot be reordered"
    if isinstance(layer, keras.layers.MultiHeadAttention):
        for name, default in (
            ("output_shape", None),
            ("attention_axes", None),
            ("use_gate", False),
            ("sliding_window", None),
        ):
            value = config.get(name, default)
            # Built on 3D inputs, Keras records the sequence axis, which is what the adaptive
            # layer attends over.
            if name == "attention_axes" and value in ((1,), [1]):
                continue
            if value != default:
                return f"{name}={config[name]!r}: AdaptiveMultiHeadAttention has no such option"
    return None


def _call_reason(graph, layer):
    """Why the way `graph` calls `layer` prevents converting it, or None."""
    nodes = _nodes_in(graph, layer)
    if len(nodes) != 1:
        return f"it is called {len(nodes)} times in the model (a shared layer)"
    if isinstance(layer, keras.layers.MultiHeadAttention):
        node = nodes[0]
        arguments = dict(node.arguments.kwargs)
        if arguments.get("return_attention_scores"):
            return "it is called with return_attention_scores=True"
        for name in ("query_mask", "value_mask", "key_mask"):
            if arguments.get(name) is not None:
                return f"it is called with `{name}`, which AdaptiveMultiHeadAttention does not take"
        unknown = sorted(
            name
            for name, value in arguments.items()
            if name not in _ATTENTION_CALL_ARGUMENTS and value is not None and value is not False
        )
        if unknown:
            return f"it is called with {unknown}, which AdaptiveMultiHeadAttention does not take"
    return None


def _before_normalization(graph, passthrough, producer):
    """Whether `passthrough` sees `producer`'s importance-scaled units: no BatchNormalization
    (which normalizes the scaling away) sits between them."""
    layer = passthrough
    while layer is not producer:
        (node,) = _nodes_in(graph, layer)
        layer = node.arguments.keras_tensors[0]._keras_history[0]
        if topology.is_normalization(layer):
            return False
    return True


def _readers_reason(graph, layer):
    """Why the layers reading `layer` cannot follow a width (or undo the importance), or None."""
    if isinstance(layer, keras.layers.MultiHeadAttention):
        return None  # its heads feed its own output projection
    try:
        links = topology.graph_links(graph, layer)
    except topology.UnsupportedConsumerError as error:
        return error.reason
    for passthrough in links.passthrough:
        if len(_nodes_in(graph, passthrough)) != 1:
            # Its other calls would be taken for readers of this layer.
            return f"'{passthrough.name}' between it and its readers is a shared layer"
        if _before_normalization(graph, passthrough, layer) and not (
            topology.commutes_with_scaling(passthrough)
        ):
            return (
                f"'{passthrough.name}' ({type(passthrough).__name__}) sits between it and its "
                "readers and does not commute with a per-unit scaling, so the converted model "
                "would not compute the same function"
            )
    for consumer in links.consumers:
        if len(_nodes_in(graph, consumer)) != 1:
            return f"its reader '{consumer.name}' is a shared layer"
    return None


def _matches(layer, selector):
    if isinstance(selector, str):
        return layer.name == selector
    return isinstance(layer, selector)


def _check_selectors(argument, selectors, names):
    if selectors is None:
        return []
    if isinstance(selectors, (str, type)):
        selectors = [selectors]
    if not isinstance(selectors, (list, tuple, set)) or not selectors:
        raise ValueError(
            f"`{argument}` must be None or a non-empty list of layer names and layer classes "
            f"(keras.layers.Dense, ...). Received: {argument}={selectors!r}"
        )
    for selector in selectors:
        if isinstance(selector, str):
            if selector not in names:
                raise ValueError(
                    f"`{argument}` names a layer the model does not have: {selector!r}. "
                    f"Layers: {sorted(names)}. Received: {argument}={selectors!r}"
                )
        elif not (isinstance(selector, type) and issubclass(selector, CONVERTIBLE_TYPES)):
            raise ValueError(
                f"`{argument}` may hold layer names and the classes keras.layers.Dense, "
                "keras.layers.Conv2D and keras.layers.MultiHeadAttention. Received: "
                f"{argument}={selectors!r}"
            )
    return list(selectors)


def conversion_plan(model, layers=None, exclude=None) -> dict:
    """Says which layers `keras_awn.adapt` converts, and why it keeps the others.

    Args:
        model: a built `keras.Sequential` or functional model.
        layers: None (every layer that can be converted) or a list of layer names and classes
            (`keras.layers.Dense`, `keras.layers.Conv2D`, `keras.layers.MultiHeadAttention`).
        exclude: layer names and classes to keep as they are.

    Returns:
        `{layer name: None (converted) or the reason it is kept}`, for every `Dense`, `Conv2D`
        and `MultiHeadAttention` of the model (subclasses included, since they are kept too)
        and every nested model, in the order they are applied.

    Example:

    ```python
    keras_awn.conversion_plan(model)
    # {"hidden": None, "logits": "its output is a model output: the model's output width is
    #  fixed"}
    ```
    """
    graph = _graph_of(model)
    operations = list(graph._operations)
    names = {operation.name for operation in operations}
    chosen = _check_selectors("layers", layers, names)
    excluded = _check_selectors("exclude", exclude, names)
    plan = {}
    for layer in operations:
        if isinstance(layer, keras.Model):
            plan[layer.name] = (
                "a nested model: adapt converts the layers of the outer graph (adapt the nested "
                "model on its own)"
            )
            continue
        if not isinstance(layer, CONVERTIBLE_TYPES):
            continue
        if chosen and not any(_matches(layer, selector) for selector in chosen):
            plan[layer.name] = "not selected by `layers`"
        elif any(_matches(layer, selector) for selector in excluded):
            plan[layer.name] = "excluded by `exclude`"
        else:
            plan[layer.name] = (
                _layer_reason(layer) or _call_reason(graph, layer) or _readers_reason(graph, layer)
            )
    return plan


# -- Saliency ------------------------------------------------------------------------------------


def _rms_per_unit(values):
    values = np.asarray(values, dtype="float64")
    return np.sqrt(np.mean(values**2, axis=tuple(range(values.ndim - 1))))


def _unit_norms(array, axis, order=2):
    """The L1 (`order=1`) or L2 norm of each slice of `array` along `axis` (one per unit)."""
    moved = np.moveaxis(np.asarray(array, dtype="float64"), axis, 0)
    return np.linalg.norm(moved.reshape(moved.shape[0], -1), ord=order, axis=1)


def _host(variable):
    return running_state.host_value(variable)


def _incoming_norms(layer):
    norms = _unit_norms(_host(layer.kernel), -1)
    if layer.use_bias:
        norms = np.hypot(norms, _host(layer.bias).astype("float64"))
    return norms


def _normalization_scale(layer):
    """The root mean square of a BatchNormalization's outputs per channel (`gamma` and `beta`
    are their standard deviation and mean when its statistics hold)."""
    gamma = np.asarray(running_state.host_value(layer.gamma), "float64")
    beta = 0.0
    if layer.beta is not None:
        beta = np.asarray(running_state.host_value(layer.beta), "float64")
    return np.sqrt(gamma**2 + beta**2)


def _attention_saliency(layer):
    _, _, value_dense, output_dense = keras_internals.multi_head_attention_projections(layer)
    return _unit_norms(_host(value_dense.kernel), 1) * _unit_norms(_host(output_dense.kernel), 0)


def _magnitude(layer):
    """The L1 norm of each unit's incoming weights (a head's query, key, value and output
    weights), the criterion of structured magnitude pruning."""
    if isinstance(layer, keras.layers.MultiHeadAttention):
        query, key, value, output = keras_internals.multi_head_attention_projections(layer)
        # The heads are the second axis of the input projections, the first of the output one.
        return sum(
            _unit_norms(_host(dense.kernel), 1, order=1) for dense in (query, key, value)
        ) + (_unit_norms(_host(output.kernel), 0, order=1))
    return _unit_norms(_host(layer.kernel), -1, order=1)


def _reader_inputs(graph, reader):
    return _nodes_in(graph, reader)[0].arguments.keras_tensors[0]


def _saliencies(graph, converted, links, x, saliency):
    """`{layer: saliency per unit}` for the converted layers."""
    measured = {}
    if saliency == "contribution":
        readers = sorted(
            {
                id(reader): reader
                for layer in converted
                if layer in links
                for reader in links[layer].consumers
                if not topology.is_normalization(reader)
            }.values(),
            key=lambda reader: reader.name,
        )
        if readers:
            probe = keras.Model(graph.inputs, [_reader_inputs(graph, r) for r in readers])
            outputs = probe.predict(x, batch_size=256, verbose=0)
            if len(readers) == 1:
                outputs = [outputs]
            measured = {
                id(reader): _rms_per_unit(running_state.host_value(output))
                for reader, output in zip(readers, outputs)
            }
    result = {}
    for layer in converted:
        if saliency == "magnitude":
            result[layer] = _magnitude(layer)
            continue
        if isinstance(layer, keras.layers.MultiHeadAttention):
            result[layer] = _attention_saliency(layer)
            continue
        layer_links = links[layer]
        incoming = _incoming_norms(layer)
        through_normalization = None
        for consumer in layer_links.consumers:
            if topology.is_normalization(consumer):
                through_normalization = _normalization_scale(consumer)
        total = np.zeros(incoming.shape)
        for reader in layer_links.consumers:
            if topology.is_normalization(reader):
                continue
            rows = _unit_norms(_host(reader.kernel), -2)  # the input axis
            if id(reader) in measured:
                scale = measured[id(reader)]
            elif reader in layer_links.direct_readers or through_normalization is None:
                scale = incoming
            else:
                scale = through_normalization
            total += scale * rows
        result[layer] = total
    return result


def unit_saliency(model, saliency="magnitude", x=None, layers=None, exclude=None) -> dict:
    """The saliency of each unit of the layers `keras_awn.adapt` would convert.

    What `adapt` orders units by (most salient first); see the module docstring.

    Args:
        model: a built `keras.Sequential` or functional model.
        saliency: `"magnitude"` (default), `"contribution"` or `"weight_norm"` (see
            `keras_awn.adapt`).
        x: a sample of the model's inputs, for `saliency="contribution"` only.
        layers: None or layer names and classes to score (as `keras_awn.adapt` takes them).
        exclude: layer names and classes not to score.

    Returns:
        `{layer name: numpy array with one value per unit (per head for attention)}`.

    Example:

    ```python
    plain = keras.Sequential([keras.Input((2,)), keras.layers.Dense(8, name="hidden"),
                              keras.layers.Dense(2)])
    scores = keras_awn.conversion.unit_saliency(plain, "contribution", x=x[:512])
    scores["hidden"].argsort()[::-1]  # the hidden units, most salient first
    ```
    """
    saliency = _check_saliency(saliency, x)
    graph = _graph_of(model)
    plan = conversion_plan(model, layers=layers, exclude=exclude)
    by_name = {layer.name: layer for layer in graph._operations}
    converted = [by_name[name] for name, reason in plan.items() if reason is None]
    links = _links(graph, converted)
    scores = _saliencies(graph, converted, links, x, saliency)
    return {layer.name: scores[layer] for layer in converted}


def _check_saliency(saliency, x):
    if saliency not in SALIENCIES:
        raise ValueError(f"`saliency` must be one of {SALIENCIES}. Received: saliency={saliency!r}")
    if saliency == "contribution" and x is None:
        raise ValueError(
            "`saliency='contribution'` measures activations on a sample of inputs: pass `x` "
            "(a few hundred training examples). Received: x=None"
        )
    if saliency != "contribution" and x is not None:
        raise ValueError(
            "`x` is read only by `saliency='contribution'` (the other saliencies come from the "
            f"weights). Received: saliency={saliency!r} with an `x`"
        )
    return saliency


def _links(graph, converted):
    return {
        layer: topology.graph_links(graph, layer)
        for layer in converted
        if not isinstance(layer, keras.layers.MultiHeadAttention)
    }


# -- The adaptive model --------------------------------------------------------------------------


def _adaptive_counterpart(layer, layer_arguments):
    """The adaptive layer replacing `layer`, at its width with no room to spare (a controller
    reallocates as the width moves)."""
    common = {
        "dtype": layer.dtype_policy,
        "name": layer.name,
        "trainable": layer.trainable,
    }
    if isinstance(layer, keras.layers.MultiHeadAttention):
        arguments = dict(layer_arguments)
        # Heads learn their number by gradient: the width search judges widths of 8 and more.
        arguments.pop("width_learning", None)
        config = layer.get_config()
        heads = config["num_heads"]
        return AdaptiveMultiHeadAttention(
            heads,
            key_dim=config["key_dim"],
            value_dim=config["value_dim"],
            dropout=config["dropout"],
            use_bias=config["use_bias"],
            kernel_initializer=config["kernel_initializer"],
            bias_initializer=config["bias_initializer"],
            capacity=heads,
            **arguments,
            **common,
        )
    kernel_arguments = {
        "activation": layer.activation,
        "use_bias": layer.use_bias,
        "kernel_initializer": layer.kernel_initializer,
        "bias_initializer": layer.bias_initializer,
        "capacity": _units(layer),
        **layer_arguments,
        **common,
    }
    if isinstance(layer, keras.layers.Conv2D):
        return AdaptiveConv2D(
            layer.filters,
            layer.kernel_size,
            strides=layer.strides,
            padding=layer.padding,
            dilation_rate=layer.dilation_rate,
            data_format=layer.data_format,
            **kernel_arguments,
        )
    return AdaptiveDense(layer.units, **kernel_arguments)


def _units(layer):
    if isinstance(layer, keras.layers.MultiHeadAttention):
        return layer.num_heads
    if isinstance(layer, keras.layers.Conv2D):
        return layer.filters
    return layer.units


def _adaptive_config(model, replacements):
    config = model.get_config()
    for entry in config["layers"]:
        replacement = replacements.get(saving.config_entry_name(entry))
        if replacement is not None:
            saving.replace_in_config(entry, replacement)
    return config


def _values(layer, names):
    return {
        name: np.asarray(running_state.host_value(getattr(layer, name)))
        for name in names
        if getattr(layer, name, None) is not None
    }


def _plain_values(layer):
    """A converted layer's trained weights, named as its adaptive counterpart names them."""
    if isinstance(layer, keras.layers.MultiHeadAttention):
        query, key, value, output = keras_internals.multi_head_attention_projections(layer)
        values = {}
        for prefix, dense in (("query", query), ("key", key), ("value", value), ("output", output)):
            values[f"{prefix}_kernel"] = np.asarray(running_state.host_value(dense.kernel))
            if getattr(dense, "bias", None) is not None:
                values[f"{prefix}_bias"] = np.asarray(running_state.host_value(dense.bias))
        return values
    return _values(layer, ("kernel", "bias"))


def _reorder_units(layer, values, order, importance):
    """Puts `layer`'s own units in `order` (an attention layer's output projection also
    divided by its heads' importance, which the adaptive layer multiplies back)."""
    if isinstance(layer, keras.layers.MultiHeadAttention):
        for name in ("query", "key", "value"):
            values[f"{name}_kernel"] = values[f"{name}_kernel"][:, order]
            if f"{name}_bias" in values:
                values[f"{name}_bias"] = values[f"{name}_bias"][order]
        output = values["output_kernel"][order] / importance[:, None, None]
        values["output_kernel"] = output.astype(values["output_kernel"].dtype)
        return
    values["kernel"] = values["kernel"][..., order]
    if "bias" in values:
        values["bias"] = values["bias"][order]


def _reorder_reader(reader, values, order, importance):
    """Makes `reader` read the units in `order`, scaled by `importance` when it is not None
    (the inverse of `strip`'s `fold_importance`)."""
    if topology.is_normalization(reader):
        names = [n for n in ("gamma", "beta", "moving_mean", "moving_variance") if n in values]
        for name in names:
            values[name] = values[name][order]
        if importance is None:
            return
        values["gamma"], values["moving_mean"], values["moving_variance"] = (
            folding.scaled_normalization(
                values["gamma"],
                values["moving_mean"],
                values["moving_variance"],
                importance,
                float(reader.epsilon),
            )
        )
        return
    kernel = np.take(values["kernel"], order, axis=-2)
    if importance is not None:
        shape = [1] * kernel.ndim
        shape[-2] = -1
        kernel = (kernel.astype("float64") / importance.reshape(shape)).astype(kernel.dtype)
    values["kernel"] = kernel


def _check_layer_arguments(layer_arguments, converted):
    unknown = sorted(set(layer_arguments) - set(WIDTH_ARGUMENTS))
    if unknown:
        raise ValueError(
            "`keras_awn.adapt` passes the width arguments "
            f"({', '.join(WIDTH_ARGUMENTS)}) to the layers it converts; it sets their width and "
            "capacity itself. Received: "
            + ", ".join(f"{name}={layer_arguments[name]!r}" for name in unknown)
        )
    max_units = layer_arguments.get("max_units")
    min_units = layer_arguments.get("min_units")
    for layer in converted:
        units = _units(layer)
        for bound, value, blocks in (
            ("max_units", max_units, max_units is not None and max_units < units),
            ("min_units", min_units, min_units is not None and min_units > units),
        ):
            if blocks:
                raise ValueError(
                    f"`{bound}` must let every converted layer start at its current width, "
                    f"and layer '{layer.name}' has {units} units. To compress, train with "
                    "`keras_awn.callbacks.WidthAnnealing(0, 1, target_fraction=...)`. "
                    f"Received: {bound}={value!r}"
                )


def adapt(
    model,
    layers=None,
    exclude=None,
    saliency="magnitude",
    x=None,
    verbose=True,
    **layer_arguments,
):
    """Returns a keras_awn model that computes what `model` computes, with learned widths.

    Every `Dense` and `Conv2D` of `model` whose readers can follow a width becomes an
    `AdaptiveDense` / `AdaptiveConv2D`, and every `MultiHeadAttention` an
    `AdaptiveMultiHeadAttention` (learned number of heads), with its trained weights and
    starting at its current width. Each layer's units are reordered by saliency (most salient
    first) and the layers reading them undo the importance scaling, so the converted model's
    predictions equal `model`'s to float rounding before any training. Train it with `fit`
    (the width search shrinks what is not needed), or compress it to a size with
    `keras_awn.callbacks.WidthAnnealing(target_fraction=...)`, then `keras_awn.strip` it.

    Layers are kept as they are where converting them would change the model: the model's
    outputs (their width is the task's), layers read by something that cannot follow a width
    (`Flatten`, `Add`, `LayerNormalization`, ...), layers behind an activation that does not
    commute with a per-unit scaling (`tanh`, `ELU`, ...), shared layers, and layers with
    regularizers or constraints, which adaptive layers do not take.
    `keras_awn.conversion_plan(model)` lists them with their reasons (`verbose` prints it).

    Args:
        model: a built `keras.Sequential` or functional model (plain Keras or keras_awn), trained
            or not. It is not changed.
        layers: None (default: every layer that can be converted), or a list of layer names and
            classes (`keras.layers.Dense`, `keras.layers.Conv2D`,
            `keras.layers.MultiHeadAttention`) to convert. A layer named here that cannot be
            converted is an error.
        exclude: layer names and classes to keep as they are.
        saliency: how units are ordered, most salient first (docs/adapt.md): `"magnitude"`
            (default: the L1 norm of each unit's incoming weights, the criterion of
            structured magnitude pruning), `"contribution"` (each unit's activations measured
            on `x`, times its outgoing weights) or `"weight_norm"` (the same estimated from the
            weights). The default was chosen by measurement: after fine-tuning it was as
            accurate as the others or more (benchmarks/compression.py).
        x: a sample of the model's inputs (a few hundred training examples), for
            `saliency="contribution"` only.
        verbose: whether to print the layers that are kept, with their reasons.
        **layer_arguments: width arguments for every converted layer (`quantile`,
            `distribution`, `min_units`, `max_units`, `importance_normalization`,
            `weight_prior_scale`, `width_prior`, `width_learning`; see
            `keras_awn.layers.AdaptiveWidthLayer`). `quantile` defaults to 0.5 here, not 0.9:
            flatter importances, with which the converted model fine-tunes as the plain one
            does (see `ADAPT_QUANTILE`). Attention heads always learn by gradient.

    Returns:
        An uncompiled `keras_awn.Sequential` or functional `keras_awn.Model`.

    Example:

    ```python
    trained = keras.Sequential([keras.Input((2,)),
                                keras.layers.Dense(64, activation="relu"),
                                keras.layers.Dense(32, activation="relu"),
                                keras.layers.Dense(2)])
    trained.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    trained.fit(x, y, epochs=2, verbose=0)
    model = keras_awn.adapt(trained)  # predicts what `trained` predicts
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=8, callbacks=[
        keras_awn.callbacks.WidthAnnealing(0, 1, target_fraction=0.25)])  # cut, then fine-tune
    small = keras_awn.strip(model)  # plain Dense layers, a quarter of the hidden units
    ```
    """
    saliency = _check_saliency(saliency, x)
    graph = _graph_of(model)
    plan = conversion_plan(model, layers=layers, exclude=exclude)
    by_name = {layer.name: layer for layer in graph._operations}
    if layers is not None:
        names = [layers] if isinstance(layers, str) else [s for s in layers if isinstance(s, str)]
        refused = {name: plan.get(name) for name in names if plan.get(name) is not None}
        if refused:
            raise ValueError(
                "`layers` names layers that cannot be converted: "
                + "; ".join(f"'{name}': {reason}" for name, reason in refused.items())
                + f". Received: layers={layers!r}"
            )
    converted = [by_name[name] for name, reason in plan.items() if reason is None]
    if not converted:
        raise ValueError(
            f"No layer of model '{model.name}' can be made adaptive: "
            + "; ".join(f"'{name}': {reason}" for name, reason in plan.items())
            + f". Received: layers={layers!r}, exclude={exclude!r}"
        )
    _check_layer_arguments(layer_arguments, converted)
    layer_arguments = {"quantile": ADAPT_QUANTILE, **layer_arguments}
    links = _links(graph, converted)
    saliencies = _saliencies(graph, converted, links, x, saliency)
    orders = {layer: np.argsort(-saliencies[layer], kind="stable") for layer in converted}

    replacements = {
        layer.name: _adaptive_counterpart(layer, layer_arguments) for layer in converted
    }
    config = _adaptive_config(model, replacements)
    # Imported here: keras_awn.models imports the callbacks, which import the layers.
    from keras_awn import models

    with saving.own_classes(model):
        if isinstance(model, keras.Sequential):
            adaptive = models.Sequential.from_config(config)
        else:
            adaptive = models.FunctionalModel.from_config(config)
    adaptive_layers = {layer.name: layer for layer in adaptive.layers}

    # The trained values, reordered and compensated on the host, then assigned: converted
    # layers and their readers get theirs by variable name, every other layer its own weights.
    values = {layer.name: _plain_values(layer) for layer in converted}
    reader_names = ("kernel", "gamma", "beta", "moving_mean", "moving_variance")
    for layer_links in links.values():
        for consumer in layer_links.consumers:
            values.setdefault(consumer.name, _values(consumer, reader_names))
    for layer in converted:
        importance = np.asarray(
            running_state.host_value(adaptive_layers[layer.name].importance()), "float64"
        )
        if not np.all(importance > 0):
            raise RuntimeError(
                f"Layer '{layer.name}' converted with a zero importance: {importance}. "
                "This is a bug in keras_awn.adapt."
            )
        _reorder_units(layer, values[layer.name], orders[layer], importance)
        layer_links = links.get(layer)
        for consumer in layer_links.consumers if layer_links is not None else ():
            direct = consumer in layer_links.direct_readers
            _reorder_reader(
                consumer, values[consumer.name], orders[layer], importance if direct else None
            )
    for layer in graph._operations:
        new_layer = adaptive_layers.get(layer.name)
        if new_layer is None or not layer.weights:
            continue
        if layer not in converted:
            new_layer.set_weights(layer.get_weights())
        for name, value in values.get(layer.name, {}).items():
            getattr(new_layer, name).assign(value)
    if verbose:
        kept = {name: reason for name, reason in plan.items() if reason is not None}
        print(
            f"keras_awn.adapt: {len(converted)} layer(s) made adaptive: "
            + ", ".join(f"'{layer.name}'" for layer in converted)
        )
        for name, reason in kept.items():
            print(f"  kept '{name}': {reason}")
    return adaptive
