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

import math

import keras
from keras import ops

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


def _is_passthrough(layer) -> bool:
    if not isinstance(layer, PASSTHROUGH_TYPES):
        return False
    if isinstance(layer, keras.layers.Activation):
        # Activation layers keep masked units at zero only when activation(0) == 0.
        value = ops.convert_to_numpy(layer.activation(ops.zeros((1,), "float32")))
        return float(value[0]) == 0.0
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


def _functional_graph(model):
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


def find_links(model) -> dict:
    """Maps every adaptive layer of `model` to `(consumers, passthrough_layers)`.

    Raises:
        UnsupportedConsumerError: a reader cannot follow the width, or an adaptive layer's readers
            cannot be determined.
    """
    links = {}
    for layer in model._flatten_layers(include_self=True):
        block_links = getattr(layer, "adaptive_links", None)
        if callable(block_links):
            for producer, consumers in block_links():
                links[producer] = (list(consumers), [])
        graph = _functional_graph(layer)
        if graph is None:
            continue
        for operation in graph._operations:
            if isinstance(operation, AdaptiveWidthLayer) and operation not in links:
                _graph_links(graph, operation, links)
    for layer in model._flatten_layers(include_self=False):
        if isinstance(layer, AdaptiveWidthLayer) and layer not in links:
            raise UnsupportedConsumerError(
                f"keras_awn cannot see which layers read adaptive layer '{layer.name}' (it is "
                "called inside a subclassed model's `call`), so it could not resize them. Use it "
                "inside a `keras_awn.Sequential`, a functional `keras_awn.Model`, or an adaptive "
                "block such as `keras_awn.layers.AdaptiveMLP`."
            )
    return links


def compensating_stddev(producer) -> float:
    """Standard deviation of weights reading `producer`'s importance-scaled output (the paper).

    `sqrt(2 / sum(p ** 2))` keeps the scaled activations at unit variance, as He initialisation
    does for unscaled inputs.
    """
    importance = ops.convert_to_numpy(producer.importance())
    return math.sqrt(2.0 / float((importance.astype("float64") ** 2).sum()))


def _consumer_kernel(consumer):
    if isinstance(consumer, AdaptiveWidthLayer):
        return consumer.input_unit_variables()[0][0]
    return consumer.kernel


def link(model, initialize: bool = False) -> dict:
    """Finds the links of `model` and records them on its adaptive layers.

    Args:
        model: a Keras model or layer containing adaptive layers.
        initialize: draw each newly linked consumer's kernel from `N(0, 2 / sum(p ** 2))` (the
            paper's compensating initialisation). Only for freshly built layers: the model and
            block constructors pass True, the controller False (a model may carry trained or
            loaded weights by then).

    Returns:
        The links, as `find_links` returns them.
    """
    links = find_links(model)
    for producer, (consumers, passthrough) in links.items():
        state = producer._width_links
        for consumer in consumers:
            if isinstance(consumer, AdaptiveWidthLayer):
                consumer._width_links.producer = producer
            already_initialized = getattr(consumer, "_keras_awn_initialized_from", None)
            if initialize and consumer.built and already_initialized != id(producer):
                kernel = _consumer_kernel(consumer)
                kernel.assign(
                    keras.random.normal(
                        kernel.shape, stddev=compensating_stddev(producer), dtype=kernel.dtype
                    )
                )
                # A plain attribute (an int): not tracked by Keras.
                consumer._keras_awn_initialized_from = id(producer)
        state.consumers = list(consumers)
        state.passthrough = list(passthrough)
    return links


def adaptive_layers(model) -> list:
    """All adaptive layers of `model` (nested ones included), in tracking order."""
    return [
        layer
        for layer in model._flatten_layers(include_self=True)
        if isinstance(layer, AdaptiveWidthLayer)
    ]
