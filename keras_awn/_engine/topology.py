"""Which layers read an adaptive layer's output, and whether they can follow its width.

An adaptive layer's output has `capacity` features (the last axis), and the layers reading it
must follow every reallocation. This module finds, for every adaptive layer of a model, its
*consumers* (layers whose variables are indexed by its units and resized with it) from three
sources:

- the graph of a `Sequential` or functional model (its nodes),
- blocks that declare their internal links (`AdaptiveMLP.adaptive_links()`, ...),
- nothing else: an adaptive layer whose readers cannot be seen (a bare adaptive layer in a
  subclassed model's `call`) is refused with a clear error.

Consumers are `Dense`, `Conv2D` and adaptive layers (their input axis is resized) and
`BatchNormalization` (its per-channel parameters and statistics are resized, and its readers
are consumers too). Zero-preserving layers without weights (dropout, activations with f(0) = 0,
pooling) may sit in between. Any other reader would break the invariant that masked units are
exactly zero, or could not be resized, and is refused with an error naming it.

A `BatchNormalization` reading masked channels outputs its `beta` there (training) and
`beta - gamma * moving_mean / sqrt(moving_variance + epsilon)` (inference). Keeping those
exactly zero takes a constraint, `UnitMaskConstraint`, which `link` puts on its `gamma` and
`beta`: the optimizer applies it after every update, inside the compiled step.
"""

import collections

import keras
from keras import ops

from keras_awn._engine.untracked import Untracked
from keras_awn.layers.adaptive_width import AdaptiveWidthLayer

# Layers that keep a zero input at zero and have no weights tied to the feature axis. The
# pooling layers keep the channel axis last (keras_awn refuses channels_first layers).
PASSTHROUGH_TYPES = (
    keras.layers.Dropout,
    keras.layers.GaussianDropout,
    keras.layers.SpatialDropout2D,
    keras.layers.Identity,
    keras.layers.ReLU,
    keras.layers.LeakyReLU,
    keras.layers.ELU,
    keras.layers.Activation,
    keras.layers.MaxPooling2D,
    keras.layers.AveragePooling2D,
    keras.layers.GlobalAveragePooling2D,
    keras.layers.GlobalMaxPooling2D,
    keras.layers.ZeroPadding2D,
)


class UnsupportedConsumerError(ValueError):
    """A layer reads an adaptive layer's output but cannot follow its width.

    Attributes:
        reason: the cause in a few words, without the advice of the message (what
            `keras_awn.adapt` lists for a layer it keeps).
    """

    def __init__(self, message, reason=None):
        super().__init__(message)
        self.reason = reason or message


Links = collections.namedtuple("Links", ["consumers", "passthrough", "direct_readers"])
Links.__doc__ = """How an adaptive layer's units reach the rest of the model.

- `consumers`: layers with variables indexed by its units, resized with it.
- `passthrough`: zero-preserving layers in between (their declared input width follows).
- `direct_readers`: the consumers that read the importance-scaled units themselves (not through
  a normalization): they get the paper's compensating initialisation, and `strip` folds the
  importance into them. Empty for blocks, which fold their internal links themselves.
"""


# Activations with f(0) = 0 keep masked units at zero (checked by name: no tensor is evaluated,
# so the check is safe inside a traced build).
ZERO_PRESERVING_ACTIVATIONS = {
    "relu",
    "linear",
    "tanh",
    "elu",
    "selu",
    "gelu",
    "silu",
    "swish",
    "leaky_relu",
    "relu6",
    "softsign",
    "mish",
    "hard_silu",
    "hard_swish",
    "hard_tanh",
    "sparse_plus",
    "squareplus",
}


# Activations with f(p x) = p f(x) for every p > 0: through them an importance scaling reaches
# the reader unchanged, so a reader's weights can undo it (`keras_awn.adapt`).
POSITIVELY_HOMOGENEOUS_ACTIVATIONS = {"relu", "linear", "leaky_relu"}


def commutes_with_scaling(layer) -> bool:
    """Whether a zero-preserving passthrough layer computes `p * f(x)` from `p * x` for every
    per-channel `p > 0` (pooling, dropout, ReLU without threshold or cap, ...): then the layers
    past it see the units' scaling as the passthrough's input does."""
    if isinstance(layer, keras.layers.ReLU):
        return layer.max_value is None and float(layer.threshold) == 0.0
    if isinstance(layer, keras.layers.ELU):
        return False
    if isinstance(layer, keras.layers.Activation):
        name = keras.activations.serialize(layer.activation)
        return isinstance(name, str) and name in POSITIVELY_HOMOGENEOUS_ACTIVATIONS
    return _is_passthrough(layer)


def _channels_last(layer) -> bool:
    return getattr(layer, "data_format", "channels_last") == "channels_last"


def _is_passthrough(layer) -> bool:
    if not isinstance(layer, PASSTHROUGH_TYPES) or not _channels_last(layer):
        return False
    if isinstance(layer, keras.layers.Activation):
        name = keras.activations.serialize(layer.activation)
        return isinstance(name, str) and name in ZERO_PRESERVING_ACTIVATIONS
    return True


def is_normalization(layer) -> bool:
    """A BatchNormalization over the last axis, whose masked channels keras_awn keeps at zero."""
    return (
        type(layer) is keras.layers.BatchNormalization
        and layer.axis in (-1,)
        and layer.scale
        and not layer.renorm
    )


def is_consumer_type(layer) -> bool:
    """Layers whose input axis keras_awn knows how to resize."""
    if isinstance(layer, AdaptiveWidthLayer):
        return layer.exposes_units
    if type(layer) is keras.layers.Dense:
        return not getattr(layer, "lora_enabled", False)
    if type(layer) is keras.layers.Conv2D:
        return (
            _channels_last(layer)
            and layer.groups == 1
            and not getattr(layer, "lora_enabled", False)
        )
    return False


def _supported_consumers_text():
    return (
        "An adaptive layer's output may feed another adaptive layer, a `keras.layers.Dense` or "
        "`keras.layers.Conv2D` (channels_last, groups=1), or a "
        "`keras.layers.BatchNormalization(axis=-1, scale=True, renorm=False)`, through Dropout, "
        "SpatialDropout2D, Identity, pooling (MaxPooling2D, AveragePooling2D, "
        "GlobalAveragePooling2D, GlobalMaxPooling2D), ZeroPadding2D or an activation with "
        "f(0) = 0; or sit inside an adaptive block such as `keras_awn.layers.AdaptiveMLP`"
    )


def functional_graph(model):
    """The keras Functional object behind a Sequential or functional model, else None."""
    if isinstance(model, keras.Sequential):
        return getattr(model, "_functional", None)
    if hasattr(model, "_nodes") and hasattr(model, "_operations"):
        return model
    return None


def _graph_links(graph, producer, links):
    """Follows `producer`'s outputs inside `graph`, adding its `Links` to `links`."""
    nodes = {id(node) for depth in graph._nodes_by_depth.values() for node in depth}
    output_operations = {id(t._keras_history[0]) for t in graph.outputs}
    consumers, passthrough, direct_readers = [], [], []
    frontier = [(producer, True)]  # (layer, whether its output still carries the importance)
    while frontier:
        layer, direct = frontier.pop()
        if id(layer) in output_operations:
            reason = (
                "its output is a model output"
                if layer is producer
                else f"its output is a model output through '{layer.name}' "
                f"({type(layer).__name__})"
            )
            raise UnsupportedConsumerError(
                f"The output of adaptive layer '{producer.name}' is an output of model "
                f"'{graph.name}', so its width would change the model's output shape. "
                f"{_supported_consumers_text()}.",
                reason=f"{reason}: the model's output width is fixed",
            )
        for node in layer._outbound_nodes:
            if id(node) not in nodes:
                continue  # a node of another (or an earlier, discarded) graph
            reader = node.operation
            if len(node.arguments.keras_tensors) != 1:
                raise UnsupportedConsumerError(
                    f"Layer '{reader.name}' ({type(reader).__name__}) combines the output of "
                    f"adaptive layer '{producer.name}' with other tensors, so it cannot follow "
                    f"its width. {_supported_consumers_text()}.",
                    reason=f"'{reader.name}' ({type(reader).__name__}) combines its output "
                    "with other tensors",
                )
            if _is_passthrough(reader):
                passthrough.append(reader)
                frontier.append((reader, direct))
            elif is_consumer_type(reader) or is_normalization(reader):
                if reader not in consumers:
                    consumers.append(reader)
                    if direct:
                        direct_readers.append(reader)
                if is_normalization(reader):
                    # Its readers still see the producer's units, normalized.
                    frontier.append((reader, False))
            else:
                raise UnsupportedConsumerError(
                    f"Layer '{reader.name}' ({type(reader).__name__}) reads the output of "
                    f"adaptive layer '{producer.name}' but cannot follow its width: it would "
                    "break the zero mask of inactive units or cannot be resized. "
                    f"{_supported_consumers_text()}.",
                    reason=f"'{reader.name}' ({type(reader).__name__}) reads its output and "
                    "cannot follow a width",
                )
    if not any(not is_normalization(c) for c in consumers):
        raise UnsupportedConsumerError(
            f"Adaptive layer '{producer.name}' has no layer reading its output in model "
            f"'{graph.name}'. {_supported_consumers_text()}.",
            reason="no layer with weights reads its output",
        )
    links[producer] = Links(consumers, passthrough, direct_readers)


def graph_links(graph, layer) -> Links:
    """The `Links` that `layer` would have in `graph` as an adaptive layer (it may be a plain
    one: `keras_awn.adapt` asks before converting it).

    Raises:
        UnsupportedConsumerError: a reader cannot follow a width.
    """
    links = {}
    _graph_links(graph, layer, links)
    return links[layer]


def walk(root):
    """`root` and all its nested layers, depth first, each in the order its parent tracks it
    (for Sequential and functional models: the order the layers are applied)."""
    seen, stack, ordered = set(), [root], []
    while stack:
        layer = stack.pop()
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        ordered.append(layer)
        stack.extend(reversed(list(getattr(layer, "_layers", []))))
    return ordered


def find_links(model) -> dict:
    """Maps every adaptive layer of `model` to its `Links`.

    Raises:
        UnsupportedConsumerError: a reader cannot follow the width, or an adaptive layer's readers
            cannot be determined.
    """
    links = {}
    layers = walk(model)
    # Blocks first: their adaptive layers' readers are internal, whatever graph holds the block.
    for layer in layers:
        block_links = getattr(layer, "adaptive_links", None)
        if callable(block_links):
            for producer, consumers in block_links():
                links[producer] = Links(list(consumers), [], [])
    for layer in layers:
        graph = functional_graph(layer)
        if graph is None:
            continue
        for operation in graph._operations:
            if isinstance(operation, AdaptiveWidthLayer) and operation not in links:
                _graph_links(graph, operation, links)
    for layer in layers:
        if isinstance(layer, AdaptiveWidthLayer) and layer not in links:
            raise UnsupportedConsumerError(
                f"keras_awn cannot see which layers read adaptive layer '{layer.name}' (it is "
                "called inside a subclassed model's `call`), so it could not resize them. Use it "
                "inside a `keras_awn.Sequential`, a functional `keras_awn.Model`, or an adaptive "
                "block such as `keras_awn.layers.AdaptiveMLP`."
            )
    return links


def reader_input_variables(reader) -> list:
    """`[(variable, axis)]`: the variables of `reader` indexed by the units it reads."""
    if isinstance(reader, AdaptiveWidthLayer):
        return reader.input_unit_variables()
    if is_normalization(reader):
        names = ("gamma", "beta", "moving_mean", "moving_variance")
        return [(getattr(reader, n), 0) for n in names if getattr(reader, n, None) is not None]
    return [(reader.kernel, len(reader.kernel.shape) - 2)]  # Dense (axis 0), Conv2D (axis 2)


def receptive_field(reader) -> int:
    """The number of input positions each output of `reader` reads per input unit (1 for Dense,
    `kernel_height * kernel_width` for a 2D convolution)."""
    kernel_size = getattr(reader, "kernel_size", None)
    if kernel_size is None:
        return 1
    size = 1
    for extent in kernel_size:
        size *= int(extent)
    return size


def compensate(producer, reader) -> None:
    """Gives `reader` the paper's initialisation for reading `producer`: `N(0, 2 / sum(p ** 2))`
    (divided by the receptive field for a convolution, as He initialisation does).

    An unbuilt reader gets it as its `kernel_initializer` (safe inside a traced build); a built
    one, not yet compensated, has its kernel redrawn (model constructors only: eager, fresh
    weights). Normalization layers are left alone: they undo the scaling themselves.
    """
    if is_normalization(reader):
        return
    compensated = producer.training_state.compensated_readers
    if id(reader) in compensated:
        return  # never redraw a kernel that may have been trained since
    stddev = producer.initial_reader_stddev / receptive_field(reader) ** 0.5
    if reader.built:
        kernel = reader_input_variables(reader)[0][0]
        kernel.assign(keras.random.normal(kernel.shape, stddev=stddev, dtype=kernel.dtype))
    else:
        reader.kernel_initializer = keras.initializers.RandomNormal(stddev=stddev)
    compensated.add(id(reader))


def sequence_pairs(layers) -> list:
    """`[(adaptive layer, reader)]` for a list of layers applied in order (a Sequential)."""
    pairs = []
    for index, layer in enumerate(layers):
        if not isinstance(layer, AdaptiveWidthLayer):
            continue
        for reader in layers[index + 1 :]:
            if _is_passthrough(reader):
                continue
            if is_consumer_type(reader) or is_normalization(reader):
                pairs.append((layer, reader))
            break
    return pairs


def link(model) -> dict:
    """Finds the links of `model` and records what the layers' steps need of them: each adaptive
    consumer's producer (its prior counts only the producer's active units), and the unit mask
    on a `BatchNormalization` reader.

    Returns:
        The links, as `find_links` returns them.
    """
    links = find_links(model)
    for producer, producer_links in links.items():
        for consumer in producer_links.consumers:
            if isinstance(consumer, AdaptiveWidthLayer):
                consumer.training_state.producer = producer
            elif is_normalization(consumer):
                _mask_normalization(consumer, producer)
    return links


@keras.saving.register_keras_serializable(package="keras_awn")
class UnitMaskConstraint(keras.constraints.Constraint):
    """Zeroes the entries of a per-channel variable beyond an adaptive layer's width.

    Put by `link` on the `gamma` and `beta` of a `BatchNormalization` reading an adaptive layer,
    so that its masked channels output exactly zero in training and inference. It lives on the
    variables only (not in the layer's config), so saved and stripped models stay plain Keras.

    Args:
        wrapped: a constraint already on the variable, applied first.
    """

    def __init__(self, wrapped=None):
        self.wrapped = keras.constraints.get(wrapped)
        self.producer = Untracked()

    def __call__(self, w):
        if self.wrapped is not None:
            w = self.wrapped(w)
        producer = self.producer.value
        if producer is None or not producer.built:
            return w
        return w * ops.cast(producer.unit_mask(), w.dtype)

    def get_config(self):
        return {"wrapped": keras.constraints.serialize(self.wrapped)}


def _mask_normalization(layer, producer) -> None:
    for name in ("gamma", "beta"):
        variable = getattr(layer, name, None)
        if variable is None:
            continue
        constraint = variable.constraint
        if not isinstance(constraint, UnitMaskConstraint):
            constraint = UnitMaskConstraint(wrapped=constraint)
            variable.constraint = constraint
        constraint.producer.value = producer


def display_names(layers) -> dict:
    """`{layer: name}` for `layers`: each layer's name, or its path where several layers share a
    name (the forward and backward cells of a `Bidirectional`)."""
    names = [layer.name for layer in layers]
    return {layer: layer.path if names.count(layer.name) > 1 else layer.name for layer in layers}


def adaptive_layers(model) -> list:
    """All adaptive layers of `model` (nested ones included), in the order they are applied."""
    return [layer for layer in walk(model) if isinstance(layer, AdaptiveWidthLayer)]
