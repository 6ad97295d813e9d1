"""Which layers read an adaptive layer's output, and whether they can follow its width.

An adaptive layer's output has `capacity` features, and the layers reading it must follow every
reallocation. This module finds, for every adaptive layer of a model, its *consumers* (layers
whose input axis is resized with it) from three sources:

- the graph of a `Sequential` or functional model (its nodes),
- blocks that declare their internal links (`AdaptiveMLP.adaptive_links()`),
- nothing else: an adaptive layer whose readers cannot be seen (a bare adaptive layer in a
  subclassed model's `call`) is refused with a clear error.

Zero-preserving layers (dropout, activations with f(0) = 0) may sit between an adaptive layer and
its consumer. Any other reader would break the invariant that masked units are exactly zero, or
could not be resized, and is refused with an error naming it.
"""

import keras

from keras_awn.layers.adaptive_width import AdaptiveWidthLayer

# Layers that keep a zero input at zero and have no weights tied to the feature axis.
PASSTHROUGH_TYPES = (
    keras.layers.Dropout,
    keras.layers.GaussianDropout,
    keras.layers.Identity,
    keras.layers.ReLU,
    keras.layers.LeakyReLU,
    keras.layers.ELU,
    keras.layers.Activation,
)


class UnsupportedConsumerError(ValueError):
    """A layer reads an adaptive layer's output but cannot follow its width."""


# Activations with f(0) = 0 keep masked units at zero (checked by name: no tensor is evaluated,
# so the check is safe inside a traced build).
ZERO_PRESERVING_ACTIVATIONS = {
    "relu", "linear", "tanh", "elu", "selu", "gelu", "silu", "swish", "leaky_relu", "relu6",
    "softsign", "mish", "hard_silu", "hard_swish", "hard_tanh", "sparse_plus", "squareplus",
}


def _is_passthrough(layer) -> bool:
    if not isinstance(layer, PASSTHROUGH_TYPES):
        return False
    if isinstance(layer, keras.layers.Activation):
        name = keras.activations.serialize(layer.activation)
        return isinstance(name, str) and name in ZERO_PRESERVING_ACTIVATIONS
    return True


def is_consumer_type(layer) -> bool:
    """Layers whose input axis keras_awn knows how to resize."""
    if isinstance(layer, AdaptiveWidthLayer):
        return True
    return type(layer) is keras.layers.Dense and not getattr(layer, "lora_enabled", False)


def _supported_consumers_text():
    return (
        "An adaptive layer's output may feed another adaptive layer or a `keras.layers.Dense` "
        "(through Dropout, Identity or an activation with f(0) = 0), or sit inside an adaptive "
        "block such as `keras_awn.layers.AdaptiveMLP`"
    )


def functional_graph(model):
    """The keras Functional object behind a Sequential or functional model, else None."""
    if isinstance(model, keras.Sequential):
        return getattr(model, "_functional", None)
    if hasattr(model, "_nodes") and hasattr(model, "_operations"):
        return model
    return None


def _graph_links(graph, producer, links):
    """Follows `producer`'s outputs inside `graph`, filling `links` {producer: (consumers, passthrough)}."""
    nodes = {id(node) for depth in graph._nodes_by_depth.values() for node in depth}
    output_operations = {id(t._keras_history[0]) for t in graph.outputs}
    consumers, passthrough = [], []
    frontier = [producer]
    while frontier:
        layer = frontier.pop()
        if id(layer) in output_operations:
            raise UnsupportedConsumerError(
                f"The output of adaptive layer '{producer.name}' is an output of model "
                f"'{graph.name}', so its width would change the model's output shape. "
                f"{_supported_consumers_text()}."
            )
        for node in layer._outbound_nodes:
            if id(node) not in nodes:
                continue  # a node of another (or an earlier, discarded) graph
            reader = node.operation
            if len(node.arguments.keras_tensors) != 1:
                raise UnsupportedConsumerError(
                    f"Layer '{reader.name}' ({type(reader).__name__}) combines the output of "
                    f"adaptive layer '{producer.name}' with other tensors, so it cannot follow "
                    f"its width. {_supported_consumers_text()}."
                )
            if _is_passthrough(reader):
                passthrough.append(reader)
                frontier.append(reader)
            elif is_consumer_type(reader):
                if reader not in consumers:
                    consumers.append(reader)
            else:
                raise UnsupportedConsumerError(
                    f"Layer '{reader.name}' ({type(reader).__name__}) reads the output of "
                    f"adaptive layer '{producer.name}' but cannot follow its width: it would "
                    "break the zero mask of inactive units or cannot be resized. "
                    f"{_supported_consumers_text()}."
                )
    if not consumers:
        raise UnsupportedConsumerError(
            f"Adaptive layer '{producer.name}' has no layer reading its output in model "
            f"'{graph.name}'. {_supported_consumers_text()}."
        )
    links[producer] = (consumers, passthrough)


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
    """Maps every adaptive layer of `model` to `(consumers, passthrough_layers)`.

    Raises:
        UnsupportedConsumerError: a reader cannot follow the width, or an adaptive layer's readers
            cannot be determined.
    """
    links = {}
    for layer in walk(model):
        block_links = getattr(layer, "adaptive_links", None)
        if callable(block_links):
            for producer, consumers in block_links():
                links[producer] = (list(consumers), [])
        graph = functional_graph(layer)
        if graph is None:
            continue
        for operation in graph._operations:
            if isinstance(operation, AdaptiveWidthLayer) and operation not in links:
                _graph_links(graph, operation, links)
    for layer in walk(model):
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
    return [(reader.kernel, 0)]  # keras.layers.Dense


def compensate(producer, reader) -> None:
    """Gives `reader` the paper's initialisation for reading `producer`: `N(0, 2 / sum(p ** 2))`.

    An unbuilt reader gets it as its `kernel_initializer` (safe inside a traced build); a built
    one, not yet compensated, has its kernel redrawn (model constructors only: eager, fresh
    weights).
    """
    if getattr(reader, "_keras_awn_compensated_for", None) == producer.name:
        return  # never redraw a kernel that may have been trained since
    stddev = producer.initial_reader_stddev
    if reader.built:
        kernel = reader_input_variables(reader)[0][0]
        kernel.assign(keras.random.normal(kernel.shape, stddev=stddev, dtype=kernel.dtype))
    else:
        reader.kernel_initializer = keras.initializers.RandomNormal(stddev=stddev)
    # A plain string attribute: not tracked by Keras.
    reader._keras_awn_compensated_for = producer.name


def sequence_pairs(layers) -> list:
    """`[(adaptive layer, reader)]` for a list of layers applied in order (a Sequential)."""
    pairs = []
    for index, layer in enumerate(layers):
        if not isinstance(layer, AdaptiveWidthLayer):
            continue
        for reader in layers[index + 1 :]:
            if _is_passthrough(reader):
                continue
            if is_consumer_type(reader):
                pairs.append((layer, reader))
            break
    return pairs


def link(model) -> dict:
    """Finds the links of `model` and records them on its adaptive layers.

    Returns:
        The links, as `find_links` returns them.
    """
    links = find_links(model)
    for producer, (consumers, passthrough) in links.items():
        for consumer in consumers:
            if isinstance(consumer, AdaptiveWidthLayer):
                consumer._width_links.producer = producer
        producer._width_links.consumers = list(consumers)
        producer._width_links.passthrough = list(passthrough)
    return links


def adaptive_layers(model) -> list:
    """All adaptive layers of `model` (nested ones included), in the order they are applied."""
    return [layer for layer in walk(model) if isinstance(layer, AdaptiveWidthLayer)]
