"""Reallocation: change the physical capacity of adaptive layers between training steps.

A Keras variable cannot change shape, so a resize creates new variables and swaps them into the
layers' trackers at the same positions, which keeps the order that saving and the optimizer rely
on. The procedure
(measured on all three backends; skipping a step fails, silently on some):

1. The caller reads `callback.model` first: on JAX this writes the running state back into the
   variables (mid-epoch they are purged).
2. Compute every new value (weights, optimizer slots) before touching the model, so that a
   failure leaves the model as it was.
3. Find where each layer holds each variable (matched by identity, not `==`; a frozen layer
   keeps its variables in Keras' trainable list), then swap them in place and update the
   layers' input specs and build shapes (so `.keras` reloads at the new shapes). Ctrl-C is
   held back during the swap, and any error inside it puts the old variables back: no
   half-resized model survives.
4. torch: re-register every layer's parameters (`model.parameters()` would keep stale tensors).
5. Give the model a new optimizer built on the new variables, with the old state copied over:
   surviving units keep their moments, new units start at zero, `iterations` is kept.
6. Force-rebuild the train, test and predict functions (TF would keep training the old,
   captured variables). On JAX, the state a running `fit` writes back when it ends becomes
   the new variables' (`keras_internals.reset_running_state`), and the jitted functions are
   kept: they trace again for new shapes and reuse what they compiled for shapes seen before.

New units are masked (beyond the width) when created, so a reallocation does not change what the
model computes.
"""

import math

import keras
import numpy as np

from keras_awn._engine import backend_guards
from keras_awn._engine import initializers
from keras_awn._engine import interrupts
from keras_awn._engine import keras_internals
from keras_awn._engine import running_state
from keras_awn._engine import topology
from keras_awn._engine.training_state import rebuild_step_functions
from keras_awn.layers.adaptive_width import AdaptiveWidthLayer


def _fit_into(old: np.ndarray, new: np.ndarray) -> np.ndarray:
    """Copies the overlap of `old` into `new` (slicing or padding along every axis)."""
    overlap = tuple(slice(0, min(a, b)) for a, b in zip(old.shape, new.shape))
    new[overlap] = old[overlap]
    return new


class _Resize:
    """One variable to resize: its owner, its target shape, and why each axis changes."""

    def __init__(self, variable, layer):
        self.variable = variable
        self.layer = layer
        self.shape = list(variable.shape)
        # axis -> ("output" | "input", the adaptive layer being resized, read directly?)
        self.roles = {}


def _plan(new_capacities, links):
    """The variables touched by the new capacities (an adaptive reader may be touched twice)."""
    plan = {}

    def resize(variable, layer, axis, capacity, role, producer, direct=False):
        item = plan.setdefault(id(variable), _Resize(variable, layer))
        item.shape[axis] = capacity
        item.roles[axis] = (role, producer, direct)

    for producer, capacity in new_capacities.items():
        for variable, axis in producer.output_unit_variables():
            resize(variable, producer, axis, capacity, "output", producer)
        producer_links = links[producer]
        direct_readers = {id(reader) for reader in producer_links.direct_readers}
        for reader in producer_links.consumers:
            for variable, axis in topology.reader_input_variables(reader):
                direct = id(reader) in direct_readers
                resize(variable, reader, axis, capacity, "input", producer, direct)
    return list(plan.values())


def planned_shapes(model, new_capacities: dict, links: dict | None = None) -> list:
    """The shapes of `model.weights` once `new_capacities` are applied, in their order."""
    if links is None:
        links = topology.link(model)
    planned = {id(item.variable): tuple(item.shape) for item in _plan(new_capacities, links)}
    return [planned.get(id(v), tuple(v.shape)) for v in model.weights]


def parameter_count(model, new_capacities: dict, links: dict) -> int:
    """The number of scalars in `model`'s weights once `new_capacities` are applied."""
    return int(sum(math.prod(shape) for shape in planned_shapes(model, new_capacities, links)))


def _new_input_entries(item, producer, direct, shape):
    """Values of a reader's entries for the producer's new units (shape `shape`)."""
    variable, reader = item.variable, item.layer
    if topology.is_normalization(reader):
        # New channels are masked: gamma and beta stay zero there (see topology.UnitMaskConstraint),
        # the statistics start as the layer's initializers set them.
        statistics = {
            "moving_mean": reader.moving_mean_initializer,
            "moving_variance": reader.moving_variance_initializer,
        }
        initializer = statistics.get(variable.name, keras.initializers.Zeros())
        return initializers.draw(initializer, shape, variable.dtype)
    if direct:
        # Rows reading the producer's new units: the paper's compensating initialisation.
        rng = np.random.default_rng(initializers.random_seed())
        width_parameter = float(running_state.host_value(producer.width_parameter))
        stddev = producer.reader_stddev(width_parameter) / topology.receptive_field(reader) ** 0.5
        return rng.normal(0.0, stddev, shape).astype(variable.dtype)
    # Behind a normalization the reader sees unit-scale inputs: its own initializer.
    if isinstance(reader, AdaptiveWidthLayer):
        initializer = reader.initializer_for(variable)
    else:
        initializer = reader.kernel_initializer
    return initializers.draw(initializer, shape, variable.dtype)


def _new_value(item):
    """The resized value: the old entries where they survive, fresh draws elsewhere."""
    variable, layer, shape, roles = item.variable, item.layer, tuple(item.shape), item.roles
    old = running_state.host_value(variable).astype(variable.dtype)
    output_axes = [axis for axis, (role, _, _) in roles.items() if role == "output"]
    if output_axes:
        # The layer's own new units: drawn as its initializer would draw them at this shape.
        initializer = layer.initializer_for(variable)
        fresh = initializers.draw(initializer, shape, variable.dtype)
    else:
        fresh = np.zeros(shape, variable.dtype)
    for axis, (role, producer, direct) in roles.items():
        if role != "input" or shape[axis] <= old.shape[axis]:
            continue
        region = [slice(None)] * len(shape)
        region[axis] = slice(old.shape[axis], shape[axis])
        region_shape = list(shape)
        region_shape[axis] = shape[axis] - old.shape[axis]
        fresh[tuple(region)] = _new_input_entries(item, producer, direct, tuple(region_shape))
    return _fit_into(old, fresh)


def _make_variable(old, value):
    """A new variable like `old` (name, path, dtype, trainability) holding `value`."""
    new = keras.Variable(
        value,
        dtype=old.dtype,
        trainable=old.trainable,
        autocast=getattr(old, "_autocast", True),
        aggregation=getattr(old, "aggregation", "none"),
        name=old.name,
    )
    # The path names the variable in optimizer slots and torch parameter dicts: keep it.
    new._path = old.path
    new.regularizer = old.regularizer
    new.constraint = old.constraint
    return new


class _Swap:
    """Where a layer holds one variable (its tracker list position and its attribute), found
    before anything changes, so that swapping it in and out cannot fail halfway."""

    def __init__(self, layer, old, new):
        self.layer, self.old, self.new = layer, old, new
        # A frozen layer (`trainable = False`) keeps its variables in Keras' trainable list, with
        # their `trainable` flag off: look in both lists.
        for store in ("trainable_variables", "non_trainable_variables"):
            variables = layer._tracker.config[store][1]
            position = next((i for i, v in enumerate(variables) if v is old), None)
            if position is not None:
                self.variables, self.position = variables, position
                self.ids = layer._tracker.stored_ids[store]
                break
        else:
            raise RuntimeError(
                f"keras_awn could not find variable '{old.path}' among the variables of layer "
                f"'{layer.name}', so it cannot resize it; the model was left unchanged."
            )
        self.attribute = next(
            (name for name, value in vars(layer).items() if value is old), None
        )
        if self.attribute is None:
            raise RuntimeError(
                f"keras_awn could not find the attribute of layer '{layer.name}' holding variable "
                f"'{old.path}', so it cannot resize it; the model was left unchanged."
            )

    def apply(self, inverse=False):
        old, new = (self.new, self.old) if inverse else (self.old, self.new)
        self.variables[self.position] = new
        self.ids.discard(id(old))
        self.ids.add(id(new))
        object.__setattr__(self.layer, self.attribute, new)


def _resized_shape(shape, capacity):
    if shape is None:
        return None
    return tuple(shape[:-1]) + (capacity,)


def _update_input_metadata(layer, capacity):
    """Keeps a reader's declared input width (input spec, build config) in step with its input."""
    spec = getattr(layer, "input_spec", None)
    if isinstance(spec, keras.InputSpec) and spec.axes and -1 in spec.axes:
        layer.input_spec = keras.InputSpec(
            min_ndim=spec.min_ndim, ndim=spec.ndim, axes={**spec.axes, -1: capacity}
        )
    shapes = getattr(layer, "_build_shapes_dict", None)
    if shapes:
        layer._build_shapes_dict = {k: _resized_shape(v, capacity) for k, v in shapes.items()}


def _rebuild_optimizer(model, replacements):
    """A new optimizer built on the model's new variables, carrying the old state over."""
    old = getattr(model, "optimizer", None)
    if old is None or not getattr(old, "built", False):
        return None
    variables = [replacements.get(id(v), v) for v in model.trainable_variables]
    new = old.__class__.from_config(old.get_config())
    new.build(variables)
    if len(new.variables) != len(old.variables):
        raise RuntimeError(
            f"The model's trainable variables changed since optimizer {type(old).__name__} was "
            f"built (rebuilt on them it has {len(new.variables)} variables instead of "
            f"{len(old.variables)}): a layer's `trainable` flag was probably changed after "
            "`compile`. Call `model.compile(...)` again after changing `trainable`, as Keras "
            "requires; keras_awn could not carry the optimizer's state over, and the model was "
            "left unchanged."
        )
    # An exponential moving average of a new unit starts at the unit's value (as the
    # optimizer's own build does), not at zero.
    averaged = {}
    if getattr(new, "use_ema", False):
        for variable, average in zip(variables, new._model_variables_moving_average):
            averaged[id(average)] = variable
    values = []
    for old_variable, new_variable in zip(old.variables, new.variables):
        value = running_state.host_value(old_variable)
        if value.shape != tuple(new_variable.shape):
            # Moments of surviving units are kept; new units start at zero.
            start = np.zeros(tuple(new_variable.shape), value.dtype)
            if id(new_variable) in averaged:
                start = running_state.host_value(averaged[id(new_variable)]).astype(value.dtype)
            value = _fit_into(value, start)
        values.append(value)
    for new_variable, value in zip(new.variables, values):
        new_variable.assign(value)
    return new


def resize(model, new_capacities: dict, links: dict | None = None) -> None:
    """Sets the capacity of adaptive layers, resizing them and their readers in place.

    Args:
        model: the model holding the layers (on JAX, obtained through `callback.model` so that
            its state is synced).
        new_capacities: `{adaptive_layer: capacity}`.
        links: the model's links (`topology.link`); found when omitted.
    """
    new_capacities = {
        layer: int(capacity)
        for layer, capacity in new_capacities.items()
        if int(capacity) != layer.capacity
    }
    if not new_capacities:
        return
    if links is None:
        links = topology.link(model)
    for layer, capacity in new_capacities.items():
        if capacity < 1:
            raise ValueError(
                f"A capacity must be >= 1. Received: capacity={capacity} for layer '{layer.name}'"
            )

    # 1. Everything new is computed before the model changes, inside the scope that made the
    # model's variables (mirrored under a tf.distribute strategy; on JAX the global
    # keras.distribution gives new variables their layout by path).
    replacements = {}
    swaps = []
    with backend_guards.variable_creation_scope(model):
        for item in _plan(new_capacities, links):
            new = _make_variable(item.variable, _new_value(item))
            replacements[id(item.variable)] = new
            swaps.append((item.layer, item.variable, new))
        optimizer = _rebuild_optimizer(model, replacements)

    # 2. Find where every variable sits (a failure here leaves the model as it was), then swap
    # with Ctrl-C held back until the model is consistent again; anything else raised inside
    # the swap puts the old variables back.
    swaps = [_Swap(layer, old, new) for layer, old, new in swaps]
    readers = {
        producer: list(links[producer].consumers) + list(links[producer].passthrough)
        for producer in new_capacities
    }
    before = _Snapshot(model, new_capacities, [r for group in readers.values() for r in group])
    with interrupts.deferred():
        try:
            for swap in swaps:
                swap.apply()
            for producer, capacity in new_capacities.items():
                producer.capacity = capacity
                for reader in readers[producer]:
                    _update_input_metadata(reader, capacity)
            if optimizer is not None:
                model.optimizer = optimizer
            _after_variables_changed(model)
        except BaseException:
            for swap in reversed(swaps):
                swap.apply(inverse=True)
            before.restore()
            _after_variables_changed(model)
            raise


class _Snapshot:
    """What the swap changes besides the variables: restored if it fails halfway."""

    def __init__(self, model, new_capacities, readers):
        self.model = model
        self.optimizer = getattr(model, "optimizer", None)
        self.capacities = {layer: layer.capacity for layer in new_capacities}
        self.metadata = [
            (reader, reader.input_spec, getattr(reader, "_build_shapes_dict", None))
            for reader in readers
        ]

    def restore(self):
        for layer, capacity in self.capacities.items():
            layer.capacity = capacity
        for reader, spec, shapes in self.metadata:
            reader.input_spec = spec
            if shapes is not None:
                reader._build_shapes_dict = shapes
        if self.optimizer is not None and self.model.optimizer is not self.optimizer:
            self.model.optimizer = self.optimizer


def _after_variables_changed(model):
    """What every backend needs once variables were swapped: torch registers parameters anew,
    JAX's fit restarts from the model's current values, the steps are rebuilt (on JAX they
    retrace for the new shapes by themselves, keeping the shapes seen before)."""
    if keras.backend.backend() == "torch":
        # `model.parameters()` would keep the replaced tensors.
        for layer in model._flatten_layers(include_self=True):
            layer._track_variables()
    keras_internals.reset_running_state(model)
    rebuild_step_functions(model, new_shapes_only=True)
