"""Reallocation: change the physical capacity of adaptive layers between training steps.

This is the only module of keras_awn that knows Keras and backend internals. A Keras variable
cannot change shape, so a resize creates new variables and swaps them into the layers' trackers
at the same positions, which keeps the order that saving and the optimizer rely on. The procedure
(measured on all three backends; skipping a step fails, silently on some):

1. The caller reads `callback.model` first: on JAX this writes the running state back into the
   variables (mid-epoch they are purged).
2. Compute every new value (weights, optimizer slots) before touching the model, so that a
   failure leaves the model as it was.
3. Swap each variable in place (matched by identity, not `==`), update the layers' input specs
   and build shapes (so `.keras` reloads at the new shapes).
4. torch: re-register every layer's parameters (`model.parameters()` would keep stale tensors).
5. Give the model a new optimizer built on the new variables, with the old state copied over:
   surviving units keep their moments, new units start at zero, `iterations` is kept.
6. Force-rebuild the train, test and predict functions (TF would keep training the old,
   captured variables).

New units are masked (beyond the width) when created, so a reallocation does not change what the
model computes.
"""

import contextlib
import functools
import math
import random

import keras
import numpy as np
from keras import ops

from keras_awn import graph
from keras_awn.layers.adaptive_width import AdaptiveWidthLayer


def _random_seed() -> int:
    # Python's RNG is seeded by keras.utils.set_random_seed, so reallocations are reproducible.
    return random.randint(0, 2**31 - 1)


def _fans(shape):
    """`(fan_in, fan_out)` as Keras computes them for a weight of `shape`."""
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return shape[0], shape[0]
    receptive_field = int(np.prod(shape[:-2])) if len(shape) > 2 else 1
    return shape[-2] * receptive_field, shape[-1] * receptive_field


def _truncated_normal(rng, shape, stddev):
    """Normal draws redrawn until within two standard deviations (Keras' truncation)."""
    values = rng.standard_normal(shape)
    outside = np.abs(values) > 2.0
    while outside.any():
        values[outside] = rng.standard_normal(int(outside.sum()))
        outside = np.abs(values) > 2.0
    return values * stddev


def _numpy_draw(initializer, shape, rng):
    """Draws `initializer` at `shape` on the host for Keras' built-in initializers, or None.

    Reallocation runs between steps; drawing with the backend's RNG at a new shape compiles a
    kernel per shape on JAX (about 0.3 s each), so the standard distributions are drawn with
    numpy from the same distributions Keras documents.
    """
    initializers = keras.initializers
    config = initializer.get_config()
    if isinstance(initializer, initializers.Zeros):
        return np.zeros(shape)
    if isinstance(initializer, initializers.Ones):
        return np.ones(shape)
    if type(initializer) is initializers.Constant:
        return np.full(shape, float(np.asarray(config["value"])))
    if type(initializer) is initializers.RandomNormal:
        return rng.normal(config["mean"], config["stddev"], shape)
    if type(initializer) is initializers.TruncatedNormal:
        return config["mean"] + _truncated_normal(rng, shape, config["stddev"])
    if type(initializer) is initializers.RandomUniform:
        return rng.uniform(config["minval"], config["maxval"], shape)
    if (
        isinstance(initializer, initializers.VarianceScaling)
        and type(initializer).__call__ is initializers.VarianceScaling.__call__
        and config.get("input_axes") is None
        and config.get("output_axes") is None
    ):
        fan_in, fan_out = _fans(shape)
        fans = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2.0}
        scale = initializer.scale / max(1.0, fans[initializer.mode])
        if initializer.distribution == "truncated_normal":
            return _truncated_normal(rng, shape, math.sqrt(scale) / 0.87962566103423978)
        if initializer.distribution == "untruncated_normal":
            return rng.normal(0.0, math.sqrt(scale), shape)
        limit = math.sqrt(3.0 * scale)
        return rng.uniform(-limit, limit, shape)
    return None


def _draw(initializer, shape, dtype):
    """A fresh draw of `initializer` at `shape`, with a new seed (an unseeded Keras initializer
    reuses one default seed, which would repeat the same values at every reallocation)."""
    value = _numpy_draw(initializer, tuple(shape), np.random.default_rng(_random_seed()))
    if value is not None:
        return value.astype(dtype)
    config = initializer.get_config()
    if "seed" in config:
        initializer = initializer.__class__.from_config({**config, "seed": _random_seed()})
    return np.array(ops.convert_to_numpy(initializer(shape, dtype=dtype)), copy=True)


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
            for variable, axis in graph.reader_input_variables(reader):
                direct = id(reader) in direct_readers
                resize(variable, reader, axis, capacity, "input", producer, direct)
    return list(plan.values())


def parameter_count(model, new_capacities: dict, links: dict) -> int:
    """The number of scalars in `model`'s weights once `new_capacities` are applied."""
    planned = {id(item.variable): math.prod(item.shape) for item in _plan(new_capacities, links)}
    return int(sum(planned.get(id(v), math.prod(v.shape)) for v in model.weights))


def _new_input_entries(item, producer, direct, shape):
    """Values of a reader's entries for the producer's new units (shape `shape`)."""
    variable, reader = item.variable, item.layer
    if graph.is_normalization(reader):
        # New channels are masked: gamma and beta stay zero there (see graph.UnitMaskConstraint),
        # the statistics start as the layer's initializers set them.
        initializers = {
            "moving_mean": reader.moving_mean_initializer,
            "moving_variance": reader.moving_variance_initializer,
        }
        initializer = initializers.get(variable.name, keras.initializers.Zeros())
        return _draw(initializer, shape, variable.dtype)
    if direct:
        # Rows reading the producer's new units: the paper's compensating initialisation.
        rng = np.random.default_rng(_random_seed())
        width_parameter = float(ops.convert_to_numpy(producer.width_parameter))
        stddev = producer.reader_stddev(width_parameter) / graph.receptive_field(reader) ** 0.5
        return rng.normal(0.0, stddev, shape).astype(variable.dtype)
    # Behind a normalization the reader sees unit-scale inputs: its own initializer.
    if isinstance(reader, AdaptiveWidthLayer):
        initializer = reader.initializer_for(variable)
    else:
        initializer = reader.kernel_initializer
    return _draw(initializer, shape, variable.dtype)


def _new_value(item):
    """The resized value: the old entries where they survive, fresh draws elsewhere."""
    variable, layer, shape, roles = item.variable, item.layer, tuple(item.shape), item.roles
    old = ops.convert_to_numpy(variable).astype(variable.dtype)
    output_axes = [axis for axis, (role, _, _) in roles.items() if role == "output"]
    if output_axes:
        # The layer's own new units: drawn as its initializer would draw them at this shape.
        initializer = layer.initializer_for(variable)
        fresh = _draw(initializer, shape, variable.dtype)
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


def _swap_in_place(layer, old, new):
    """Replaces `old` by `new` in `layer`'s tracker (same list position) and attribute."""
    store = "trainable_variables" if old.trainable else "non_trainable_variables"
    variables = layer._tracker.config[store][1]
    position = next(i for i, v in enumerate(variables) if v is old)
    variables[position] = new
    ids = layer._tracker.stored_ids[store]
    ids.discard(id(old))
    ids.add(id(new))
    attribute = next(name for name, value in vars(layer).items() if value is old)
    object.__setattr__(layer, attribute, new)


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
            f"Rebuilding optimizer {type(old).__name__} gave {len(new.variables)} variables "
            f"instead of {len(old.variables)}; keras_awn cannot carry its state over."
        )
    # An exponential moving average of a new unit starts at the unit's value (as the
    # optimizer's own build does), not at zero.
    averaged = {}
    if getattr(new, "use_ema", False):
        for variable, average in zip(variables, new._model_variables_moving_average):
            averaged[id(average)] = variable
    values = []
    for old_variable, new_variable in zip(old.variables, new.variables):
        value = ops.convert_to_numpy(old_variable)
        if value.shape != tuple(new_variable.shape):
            # Moments of surviving units are kept; new units start at zero.
            start = np.zeros(tuple(new_variable.shape), value.dtype)
            if id(new_variable) in averaged:
                start = ops.convert_to_numpy(averaged[id(new_variable)]).astype(value.dtype)
            value = _fit_into(value, start)
        values.append(value)
    for new_variable, value in zip(new.variables, values):
        new_variable.assign(value)
    return new


def check_distribution(model) -> None:
    """Refuses data-parallel setups in which reallocation would lose or desynchronise state.

    Supported: a `tf.distribute` strategy holding the model (new variables are created in its
    scope, so they are mirrored) and JAX's `keras.distribution.DataParallel` (new variables take
    their layout from it). Refused: other `keras.distribution` layouts (a sharded axis could be
    the one that changes size), and `torch.distributed`, whose DistributedDataParallel registers
    each parameter once, when it wraps the model, while a reallocation replaces parameters.
    """
    backend = keras.backend.backend()
    if backend == "jax":
        distribution = keras.distribution.distribution()
        if distribution is not None and not isinstance(distribution, keras.distribution.DataParallel):
            raise ValueError(
                "keras_awn reallocates adaptive layers under keras.distribution.DataParallel only "
                "(a sharded weight could be cut along the axis that changes size). Received: "
                f"distribution={type(distribution).__name__}"
            )
    elif backend == "torch":
        import torch.distributed

        if (
            torch.distributed.is_available()
            and torch.distributed.is_initialized()
            and torch.distributed.get_world_size() > 1
        ):
            raise RuntimeError(
                "keras_awn cannot train adaptive layers under torch.distributed (process group "
                f"of world size {torch.distributed.get_world_size()}): DistributedDataParallel "
                "registers each parameter once, when it wraps the model, and a reallocation "
                "replaces parameters, so replicas would stop synchronising. Train in one process "
                "on torch, or use the JAX (keras.distribution.DataParallel) or TensorFlow "
                "(tf.distribute.MirroredStrategy) backend for data-parallel training; see "
                "docs/distributed.md."
            )


def _variable_creation_scope(model):
    """The scope new variables of `model` must be created in."""
    if keras.backend.backend() == "tensorflow":
        strategy = getattr(model, "distribute_strategy", None)
        if strategy is not None:
            return strategy.scope()
    return contextlib.nullcontext()


def resize(model, new_capacities: dict, links: dict | None = None) -> None:
    """Sets the capacity of adaptive layers, resizing them and their readers in place.

    Args:
        model: the model holding the layers (on JAX, obtained through `callback.model` so that
            its state is synced).
        new_capacities: `{adaptive_layer: capacity}`.
        links: the model's links (`keras_awn.graph.link`); found when omitted.
    """
    new_capacities = {
        layer: int(capacity)
        for layer, capacity in new_capacities.items()
        if int(capacity) != layer.capacity
    }
    if not new_capacities:
        return
    if links is None:
        links = graph.link(model)
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
    with _variable_creation_scope(model):
        for item in _plan(new_capacities, links):
            new = _make_variable(item.variable, _new_value(item))
            replacements[id(item.variable)] = new
            swaps.append((item.layer, item.variable, new))
        optimizer = _rebuild_optimizer(model, replacements)

    # 2. Swap. Nothing below can fail on a consistent model.
    for layer, old, new in swaps:
        _swap_in_place(layer, old, new)
    for producer, capacity in new_capacities.items():
        producer.capacity = capacity
        for reader in list(links[producer].consumers) + list(links[producer].passthrough):
            _update_input_metadata(reader, capacity)
    if keras.backend.backend() == "torch":
        for layer in model._flatten_layers(include_self=True):
            layer._track_variables()
    if optimizer is not None:
        model.optimizer = optimizer
    rebuild_step_functions(model)


def _running_arrays(model, variables):
    """On JAX inside a running `fit`, the entries of the running state that hold `variables`
    (between syncs Keras purges the variables and the state lives outside them); else None."""
    if keras.backend.backend() != "jax":
        return None
    state = getattr(model, "_jax_state", None)
    if not state or getattr(model, "_jax_state_synced", True):
        return None
    # Frozen layers (`trainable = False`) keep their width parameter with the non-trainable state.
    arrays = {}
    for key, model_variables in (
        ("trainable_variables", model.trainable_variables),
        ("non_trainable_variables", model.non_trainable_variables),
    ):
        for variable, array in zip(model_variables, state.get(key) or ()):
            arrays[id(variable)] = array
    if not all(id(v) in arrays for v in variables):
        return None
    return [arrays[id(v)] for v in variables]


def current_values(model, variables) -> list:
    """The values of `variables` as the running `fit` sees them, as numpy arrays.

    On JAX, reading `callback.model` would copy every variable back from the running state and
    purge them again at the next step; this reads only the requested entries.
    """
    arrays = _running_arrays(model, variables)
    if arrays is not None:
        return [np.asarray(array) for array in arrays]
    return [ops.convert_to_numpy(v) for v in variables]


def request_values(model, variables):
    """Starts reading `variables` as the running `fit` sees them; returns a function that gives
    `current_values` at the time of the request, to call later.

    On JAX the steps of a fit are dispatched asynchronously: reading a value of the running state
    at once waits for the step that computes it, and no new step is dispatched meanwhile. Here the
    copy to the host starts now and is taken when asked for, by then long finished. The other
    backends finish each step before the next is dispatched: they read now.
    """
    arrays = _running_arrays(model, variables)
    if arrays is None:
        values = current_values(model, variables)
        return lambda: values
    # The next step donates (deletes) the running state's buffers: copy them first, on the
    # device, in one compiled program queued after the step that computes them (dispatching it
    # does not wait; an eager copy per array would cost a quarter of a millisecond each).
    flat = _jax_concatenated_copy()(arrays)
    flat.copy_to_host_async()

    def read():
        values = np.asarray(flat)
        ends = np.cumsum([int(np.prod(array.shape)) for array in arrays])
        return [
            part.reshape(array.shape)
            for part, array in zip(np.split(values, ends[:-1]), arrays)
        ]

    return read


@functools.cache
def _jax_concatenated_copy():
    import jax
    import jax.numpy as jnp

    return jax.jit(lambda arrays: jnp.concatenate([jnp.ravel(a) for a in arrays]))


def rebuild_step_functions(model) -> None:
    """Forces the train/test/predict functions to be rebuilt at their next use.

    Needed after any change a traced step would not see: new variables (TF captures them by
    reference) or new Python-side constants such as the number of training examples.
    """
    if getattr(model, "compiled", False):
        model.make_train_function(force=True)
        model.make_test_function(force=True)
    if hasattr(model, "make_predict_function"):
        model.predict_function = None
