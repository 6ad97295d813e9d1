"""Callbacks that manage adaptive widths during `fit`."""

import math
import time
import warnings

import keras

from keras_awn import graph
from keras_awn import reallocation


# Tightening a settled capacity must free at least this many units (see `WidthController`).
_MIN_SETTLE_SAVING = 64
# The reallocation reasons that add units (a budget can hold them back).
_GROWTH_REASONS = ("grow", "regrow")
# A width counts as settled when its last `settle_after` checks stay within this share of it (see
# `WidthController._settle_band`).
_SETTLE_BAND = 0.05
# Widths kept per layer for the settling rule (enough for 6 doublings of `settle_after`).
_MAX_WINDOW = 4096
# Capacities the controller picks are multiples of this: matrix kernels on CPU (and tensor
# cores on GPU) handle such sizes best; on JAX/CPU an odd capacity like 269 ran an MLP's
# matrix products about 12% slower than 264 (docs/performance.md).
CAPACITY_MULTIPLE = 8


def _upper(layer) -> float:
    return layer.max_units if layer.max_units is not None else math.inf


def _bounded(layer, units) -> int:
    """`units` clamped to what `layer` may hold: `[max(min_units, 1), max_units]`."""
    return int(min(max(units, layer.min_units, 1), _upper(layer)))


def _aligned(units) -> int:
    """`units` rounded up to a multiple of `CAPACITY_MULTIPLE`."""
    return CAPACITY_MULTIPLE * math.ceil(units / CAPACITY_MULTIPLE)


def _check_fraction(name, value, low, high):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low < value < high:
        raise ValueError(f"`{name}` must be a number in ({low}, {high}). Received: {name}={value!r}")


class WidthController(keras.callbacks.Callback):
    """Reallocates adaptive layers' capacity between training steps and scales their prior.

    Inside each step an adaptive layer's width moves freely up to its `capacity` (the units it
    physically owns). Every `check_every` steps and at the end of each epoch, this callback
    compares each layer's width with its capacity:

    - the width exceeds `grow_threshold * capacity`: the capacity becomes
      `growth_factor * width`;
    - the width falls below `shrink_threshold * capacity`: likewise, the capacity shrinks to
      `growth_factor * width`.

    Capacities are rounded up to a multiple of 8 (on CPU, odd sizes like 269 run matrix products
    markedly slower than 264 or 256), and never go below the layer's `min_capacity` (64 units
    for dense, recurrent and graph layers: below that, masked units cost less per step than the
    rebuild that would remove them; none for convolution filters and attention heads). So after
    any reallocation the width sits at about
    `1 / growth_factor` of the capacity, and it must move by a constant factor before the next
    one: reallocations (each one rebuilds the compiled step) happen
    O(log(final width / initial width)) times per layer. A larger `growth_factor`
    means fewer rebuilds and more masked (wasted) units per step. When one layer is reallocated,
    the others whose width is past halfway between `1 / growth_factor` and `grow_threshold` of
    their capacity grow in the same rebuild.

    Once a layer's width stops moving (over the last `settle_after` checks it stayed within a
    band of `max(2, 5%)` of it), its capacity is tightened to the top of that band plus a margin
    of `max(2, settled_headroom * width)` units (rounded up to a multiple of 8), if that frees at
    least a fifth of it and 64 units. So the masked units cost about `settled_headroom` of the
    layer's work for the rest of training, at the price of one more rebuild. A settled layer
    grows only when its width reaches the capacity. If it stayed settled for `settle_after`
    checks first, it regrows by twice its previous margin and stays settled (`"regrow"`): a
    width that drifts slowly upwards costs a few rebuilds, each further apart than the last,
    and the margin adapts to the drift. Otherwise (it reached the capacity soon after
    settling), or once the width plus the doubled margin would reach `growth_factor * width`,
    it grows by `growth_factor` and is moving again. Each growth out of a settled capacity
    doubles the checks the layer must wait before it settles or regrows again.
    `settle_after=None` turns settling off.

    Reallocation keeps the model's outputs, the optimizer state of surviving units and the
    training trajectory unchanged; see `keras_awn.reallocation`.

    At the end of each epoch the controller puts each layer's width in the epoch's logs, as
    `<layer name>_width` (the progress bar and `History` show it).

    The controller also gives each layer the number of training examples N, which scales the
    prior in the loss (the ELBO per example). `keras_awn.Model` and `keras_awn.Sequential` infer
    N from array inputs to `fit` and attach a controller themselves; pass one explicitly for a
    plain `keras.Model`, or to set N for datasets whose size Keras cannot know.

    Args:
        num_examples: int or None, the number of training examples N. None (default) takes the
            value inferred by `keras_awn.Model.fit`.
        check_every: int >= 1, the number of steps between width checks. Defaults to 8. A
            check inside an epoch decides on the width parameters it read at the previous check
            (`check_every` steps earlier) and starts reading the current ones, so that it never
            waits for the running step; the checks at the start of training and at epoch ends
            read the current values.
        growth_factor: float > 1, the capacity allocated per unit of width. Defaults to 2.0.
        grow_threshold: float in (0, 1], the share of the capacity the width may reach before
            the capacity grows. Defaults to 0.8.
        shrink_threshold: float in (0, 1 / growth_factor), the share of the capacity below
            which the capacity shrinks. Defaults to 0.25.
        width_warmup_epochs: int >= 0, the number of epochs at the start of training during
            which the width parameters get no gradient (the weights train at the initial widths).
            Defaults to 0 (the paper: the width learns from the first step).
        settle_after: int >= 2 or None, the number of consecutive checks over which a width
            must stay in its band before the capacity is tightened. Defaults to 16 (128 steps
            at the default `check_every`). None never tightens.
        settled_headroom: float in [0, 1), the margin kept above a settled width, as a share of
            it (at least 2 units). Defaults to 0.02: a wider margin means fewer regrowths of a
            drifting width and more masked units in every step (docs/performance.md, "Settling").
        max_capacity: int >= 1 or None, the largest capacity any layer is given (a layer's own
            `max_units` also applies). A width asking for more runs at this capacity, with a
            warning, instead of allocating without bound when a width parameter diverges.
            Defaults to 8192. None removes the limit.
        min_capacity: int >= 1 or None, the smallest capacity the controller gives a layer
            (its `max_units` still applies). None (default) takes each layer's own
            `min_capacity`; 1 lets capacities follow `growth_factor * width` all the way down.
        max_parameters: int >= 1 or None, a memory budget: the most scalars the model's weights
            may hold (the optimizer adds its slots per weight, e.g. two more for Adam). A growth
            that would exceed it is not made: the layers keep their capacity and their widths run
            at it, with a warning. Defaults to None (no budget).
        verbose: 0 (silent, default) or 1 (print each reallocation).

    Attributes:
        reallocations: list of dicts, one per layer reallocation, with keys `epoch`, `step`,
            `layer`, `width`, `old_capacity`, `new_capacity` and `reason` (`"grow"`, `"regrow"`,
            `"shrink"` or `"settle"`).
        rebuilds: number of times the compiled step functions were rebuilt by a reallocation.
        reallocation_seconds: wall time spent reallocating (the next step's recompilation is
            not included: it happens inside that step).

    Example:

    ```python
    model = keras.Sequential([
        keras.Input((2,)),
        keras_awn.layers.AdaptiveDense(16, activation="relu"),
        keras.layers.Dense(1),
    ])
    model.compile("adam", "mse")
    controller = keras_awn.callbacks.WidthController(num_examples=len(x))
    model.fit(x, y, epochs=10, callbacks=[controller])
    print(controller.reallocations)
    ```
    """

    def __init__(
        self,
        num_examples: int | None = None,
        check_every: int = 8,
        growth_factor: float = 2.0,
        grow_threshold: float = 0.8,
        shrink_threshold: float = 0.25,
        width_warmup_epochs: int = 0,
        settle_after: int | None = 16,
        settled_headroom: float = 0.02,
        max_capacity: int | None = 8192,
        min_capacity: int | None = None,
        max_parameters: int | None = None,
        verbose: int = 0,
    ):
        super().__init__()
        if num_examples is not None and (
            isinstance(num_examples, bool) or not isinstance(num_examples, int) or num_examples < 1
        ):
            raise ValueError(
                f"`num_examples` must be a positive integer or None. Received: num_examples={num_examples!r}"
            )
        if isinstance(check_every, bool) or not isinstance(check_every, int) or check_every < 1:
            raise ValueError(f"`check_every` must be an integer >= 1. Received: check_every={check_every!r}")
        if isinstance(growth_factor, bool) or not isinstance(growth_factor, (int, float)) or not growth_factor > 1:
            raise ValueError(f"`growth_factor` must be a number > 1. Received: growth_factor={growth_factor!r}")
        _check_fraction("grow_threshold", grow_threshold, 0.0, 1.0 + 1e-12)
        _check_fraction("shrink_threshold", shrink_threshold, 0.0, 1.0 / growth_factor)
        if (
            isinstance(width_warmup_epochs, bool)
            or not isinstance(width_warmup_epochs, int)
            or width_warmup_epochs < 0
        ):
            raise ValueError(
                "`width_warmup_epochs` must be an integer >= 0. "
                f"Received: width_warmup_epochs={width_warmup_epochs!r}"
            )
        if settle_after is not None and (
            isinstance(settle_after, bool) or not isinstance(settle_after, int) or settle_after < 2
        ):
            raise ValueError(
                f"`settle_after` must be an integer >= 2 or None. Received: settle_after={settle_after!r}"
            )
        if (
            isinstance(settled_headroom, bool)
            or not isinstance(settled_headroom, (int, float))
            or not 0.0 <= settled_headroom < 1.0
        ):
            raise ValueError(
                "`settled_headroom` must be a number in [0, 1). "
                f"Received: settled_headroom={settled_headroom!r}"
            )
        if max_capacity is not None and (
            isinstance(max_capacity, bool) or not isinstance(max_capacity, int) or max_capacity < 1
        ):
            raise ValueError(
                f"`max_capacity` must be an integer >= 1 or None. Received: max_capacity={max_capacity!r}"
            )
        if min_capacity is not None and (
            isinstance(min_capacity, bool) or not isinstance(min_capacity, int) or min_capacity < 1
        ):
            raise ValueError(
                f"`min_capacity` must be an integer >= 1 or None. Received: min_capacity={min_capacity!r}"
            )
        if max_parameters is not None and (
            isinstance(max_parameters, bool) or not isinstance(max_parameters, int) or max_parameters < 1
        ):
            raise ValueError(
                f"`max_parameters` must be an integer >= 1 or None. Received: max_parameters={max_parameters!r}"
            )
        if verbose not in (0, 1):
            raise ValueError(f"`verbose` must be 0 or 1. Received: verbose={verbose!r}")
        self.num_examples = num_examples
        self.check_every = check_every
        self.growth_factor = float(growth_factor)
        self.grow_threshold = float(grow_threshold)
        self.shrink_threshold = float(shrink_threshold)
        self.width_warmup_epochs = width_warmup_epochs
        self.settle_after = settle_after
        self.settled_headroom = float(settled_headroom)
        self.max_capacity = max_capacity
        self.min_capacity = min_capacity
        self.max_parameters = max_parameters
        self.verbose = verbose
        self.reallocations = []
        self.rebuilds = 0
        self.reallocation_seconds = 0.0
        # Set by keras_awn.Model.fit from its inputs; an explicit num_examples wins.
        self.inferred_num_examples = None
        self._links = {}
        self._layers = []
        self._steps = 0
        self._epoch = 0
        # Per layer (by id): the widths seen since its last reallocation, and how many times it
        # grew out of a settled capacity.
        self._recent_widths = {}
        self._regrowths = {}
        # `(layers, read)` from the previous check inside the epoch (see `_check`).
        self._requested = None
        # Per layer (by id): the last finite width parameter seen, restored if it diverges.
        self._last_finite = {}
        self._warned_limit = set()
        self._warned_budget = False

    # -- The capacity policy ----------------------------------------------------------------------

    def target_capacity(self, layer, width: int) -> int:
        """The capacity `layer` should have for `width` (its current capacity if no change)."""
        return self._decide(layer, width)[0]

    def _decide(self, layer, width: int):
        """`(capacity, reason)`: what the policy does with `layer` at `width`."""
        capacity = layer.capacity
        settled = layer._capacity_settled
        recent = self._recent_widths.get(id(layer), [])
        # A layer that grew out of a settled capacity waits twice as long before settling (or
        # regrowing by a margin) again, so a drifting width cannot make the policy rebuild
        # over and over.
        settle_after = None
        if self.settle_after is not None:
            settle_after = self.settle_after * 2 ** self._regrowths.get(id(layer), 0)
        grow_at = capacity if settled else self.grow_threshold * capacity
        grows = (width >= grow_at if settled else width > grow_at) and capacity < self._limit(layer)
        if grows:
            if settled and settle_after is not None and len(recent) >= settle_after:
                regrown = self._regrown_capacity(layer, width)
                if regrown is not None:
                    return regrown, "regrow"
            return self._reallocated_capacity(layer, width), "grow"
        if width < self.shrink_threshold * capacity:
            target = self._reallocated_capacity(layer, width)
            # At the capacity floor a narrow width is no reason to reallocate.
            return (target, "shrink") if target < capacity else (capacity, None)
        if settle_after is not None and len(recent) >= settle_after:
            window = recent[-settle_after:]
            high = max(window)
            if high - min(window) <= self._settle_band(high):
                target = min(
                    _bounded(layer, max(self.settled_capacity(high), self._floor(layer))),
                    self._limit(layer),
                )
                # Tighten only when it saves a fifth of the capacity and more than a few units:
                # each change rebuilds the step, and a few masked units cost less than that.
                if capacity >= 1.25 * target and capacity - target >= _MIN_SETTLE_SAVING:
                    return target, "settle"
        return capacity, None

    def _settle_band(self, width: int) -> int:
        """How far a width may move over `settle_after` checks and still count as settled:
        `max(2, 5%)` of it, or the headroom if larger. Looser than the default headroom, so
        that a slowly drifting width settles too (a drift upwards then regrows by doubling
        margins, a drift downwards settles again lower)."""
        return max(2, math.ceil(max(_SETTLE_BAND, self.settled_headroom) * width))

    def _settle_margin(self, width: int) -> int:
        return max(2, math.ceil(self.settled_headroom * width))

    def settled_capacity(self, width: int) -> int:
        """The capacity a layer settled at `width` gets (before its `min_capacity` and
        `max_units` apply): the width plus `max(2, settled_headroom * width)` units, rounded up
        to a multiple of 8."""
        return _aligned(width + self._settle_margin(width))

    def _regrown_capacity(self, layer, width: int):
        """The capacity of a settled layer that reached it after staying settled: the width
        plus twice the margin of its previous regrowth (the first: twice the settled margin),
        or None once that margin reaches what `growth_factor` gives (the layer is moving)."""
        regrowths = self._regrowths.get(id(layer), 0) + 1
        margin = self._settle_margin(width) * 2**regrowths
        if width + margin >= self.growth_factor * width:
            return None
        return min(_bounded(layer, _aligned(width + margin)), self._limit(layer))

    def _limit(self, layer) -> float:
        """The largest capacity `layer` may get: its `max_units`, and this controller's
        `max_capacity` (so a diverging width parameter cannot exhaust memory)."""
        limit = _upper(layer)
        if self.max_capacity is not None:
            limit = min(limit, max(self.max_capacity, layer.capacity))
        return limit

    def _floor(self, layer) -> int:
        """The smallest capacity this controller gives `layer` (see `min_capacity`)."""
        return layer.min_capacity if self.min_capacity is None else self.min_capacity

    def _reallocated_capacity(self, layer, width: int) -> int:
        """The capacity after growing or shrinking `layer` around `width`."""
        # The floor yields to the limit: only a width that asks for more than it warns below.
        floor = min(self._floor(layer), self._limit(layer))
        capacity = _bounded(layer, max(_aligned(self.growth_factor * width), floor))
        if capacity > self._limit(layer):
            capacity = int(self._limit(layer))
            if id(layer) not in self._warned_limit:
                self._warned_limit.add(id(layer))
                warnings.warn(
                    f"Adaptive layer '{layer.name}' asks for {width} units; its capacity is "
                    f"held at max_capacity={self.max_capacity} (the width runs at the capacity). "
                    "Raise `WidthController(max_capacity=...)` if the layer should grow "
                    "further, or set the layer's `max_units`.",
                    stacklevel=3,
                )
        return capacity

    # -- Callback hooks -------------------------------------------------------------------------

    def on_train_begin(self, logs=None):
        model = self.model  # on JAX, reading `self.model` syncs the training state
        reallocation.check_distribution(model)
        self._links = graph.link(model)
        self._layers = graph.adaptive_layers(model)
        num_examples = self.num_examples or self.inferred_num_examples
        if num_examples is None and any(layer._has_prior() for layer in self._layers):
            raise ValueError(
                "keras_awn needs the number of training examples N to scale the prior of the "
                "adaptive layers (the ELBO per example), and could not infer it from the data "
                "passed to `fit` (it can from arrays and from loaders with a known length). Pass "
                "it as `callbacks=[keras_awn.callbacks.WidthController(num_examples=N)]`, or "
                "disable the priors (`weight_prior_scale=None` and `width_prior=None`)."
            )
        deferred = [l.name for l in self._layers if not l._prior_in_call and l._has_prior()]
        if deferred and not getattr(model, "adds_deferred_priors", False):
            warnings.warn(
                f"The prior of adaptive layers {deferred} (inside a recurrent cell) is added by "
                "`keras_awn.Model`/`keras_awn.Sequential` in `compute_loss`; this "
                f"{type(model).__name__} does not, so they train without it. Build the model "
                "with keras_awn.Model or keras_awn.Sequential.",
                stacklevel=2,
            )
        changed = False
        for layer in self._layers:
            layer._width_links.controlled = True
            if layer._num_examples != num_examples:
                layer._num_examples = num_examples
                changed = True
        if changed:
            # N is a constant of the traced step: retrace with the new value.
            reallocation.rebuild_step_functions(model)
        self._steps = 0
        self._recent_widths = {}
        self._check(model)

    def _set_width_frozen(self, frozen):
        """Freezes or releases the width parameters (a constant of the traced step)."""
        if any(layer._width_frozen != frozen for layer in self._layers):
            for layer in self._layers:
                layer._width_frozen = frozen
            reallocation.rebuild_step_functions(self.model)

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        self._set_width_frozen(epoch < self.width_warmup_epochs)

    def on_train_batch_begin(self, batch, logs=None):
        # Checked at the beginning of a batch: the end-of-batch hook would make Keras dispatch
        # every batch's callbacks synchronously.
        if self._steps and self._steps % self.check_every == 0:
            self._check(self._model, lagged=True)
        self._steps += 1

    def on_epoch_end(self, epoch, logs=None):
        self._check(self._model)
        if logs is not None:
            for layer in self._layers:
                logs[f"{layer.name}_width"] = self._active_units(layer)

    def on_train_end(self, logs=None):
        self._restore_diverged_width_parameters()
        self._set_width_frozen(False)
        for layer in self._layers:
            layer._width_links.controlled = False

    # -- Checking -------------------------------------------------------------------------------

    def _active_units(self, layer) -> int:
        """`layer.active_units` from the width parameter the last check read, computed on the
        host: eager backend ops would each compile a small program on JAX (memory, time)."""
        value = self._last_finite.get(id(layer))
        if value is None:
            return layer.active_units
        return layer.active_units_on_host(value)

    def _check(self, model, lagged=False):
        """Decides on every layer's capacity from its width parameter.

        `lagged` (the checks inside an epoch): decide on the values requested at the previous
        check, and request the current ones for the next, so that reading never waits for the
        running step (`reallocation.request_values`). The first check of an epoch only
        requests. The checks at the start of training and at epoch ends read the current values.
        """
        layers = [layer for layer in self._layers if layer.built]
        if not layers:
            return
        # Read only the width parameters: no full state sync unless something is resized.
        variables = [layer.width_parameter for layer in layers]
        if lagged:
            requested = self._requested
            self._requested = (layers, reallocation.request_values(model, variables))
            if requested is None or requested[0] != layers:
                return
            values = requested[1]()
        else:
            self._requested = None
            values = reallocation.current_values(model, variables)
        plan, widths, reasons = {}, {}, {}
        diverged = []
        for layer, value in zip(layers, values):
            if not math.isfinite(float(value)):
                diverged.append(layer)
                continue
            self._last_finite[id(layer)] = float(value)
            width = layer.desired_units_on_host(float(value))
            widths[layer] = int(width)
            self._recent_widths.setdefault(id(layer), []).append(int(width))
            del self._recent_widths[id(layer)][:-_MAX_WINDOW]
            target, reason = self._decide(layer, int(width))
            if target != layer.capacity:
                plan[layer], reasons[layer] = target, reason
        if diverged:
            self._restore_width_parameters(diverged)
        if not plan:
            return
        # The step is rebuilt anyway: also grow the moving layers that are past halfway to their
        # grow threshold, rather than rebuilding again for them a few checks later.
        early = (1.0 / self.growth_factor + self.grow_threshold) / 2.0
        for layer, width in widths.items():
            if (
                layer not in plan
                and not layer._capacity_settled
                and width > early * layer.capacity
                and layer.capacity < _upper(layer)
            ):
                plan[layer] = self._reallocated_capacity(layer, width)
                reasons[layer] = "grow"
        if self.max_parameters is not None:
            plan = self._within_parameter_budget(model, plan, reasons)
            if not plan:
                return
        started = time.perf_counter()
        model = self.model  # on JAX this syncs the running state into the variables
        old = {layer: layer.capacity for layer in plan}
        reallocation.resize(model, plan, self._links)
        self.rebuilds += 1
        self.reallocation_seconds += time.perf_counter() - started
        for layer, capacity in plan.items():
            self._recent_widths[id(layer)] = []
            if layer._capacity_settled and reasons[layer] in _GROWTH_REASONS:
                self._regrowths[id(layer)] = self._regrowths.get(id(layer), 0) + 1
            layer._capacity_settled = reasons[layer] in ("settle", "regrow")
            event = {
                "epoch": self._epoch,
                "step": self._steps,
                "layer": layer.name,
                "width": widths[layer],
                "old_capacity": old[layer],
                "new_capacity": capacity,
                "reason": reasons[layer],
            }
            self.reallocations.append(event)
            if self.verbose:
                print(
                    f"WidthController: '{layer.name}' capacity {old[layer]} -> {capacity} "
                    f"({reasons[layer]}; width {widths[layer]}, epoch {self._epoch}, "
                    f"step {self._steps})"
                )

    def _within_parameter_budget(self, model, plan, reasons):
        """The plan without its growth when growing would exceed `max_parameters`.

        Shrinking and settling only free memory and are kept. Held layers run at their capacity
        (their width is clamped to it), so memory stays bounded whatever the width asks for.
        """
        planned = reallocation.parameter_count(model, plan, self._links)
        if planned <= self.max_parameters:
            return plan
        held = [layer.name for layer in plan if reasons[layer] in _GROWTH_REASONS]
        if held and not self._warned_budget:
            self._warned_budget = True
            warnings.warn(
                f"Growing adaptive layers {held} would take the model to {planned} parameters, "
                f"over max_parameters={self.max_parameters}: their capacity is held (the widths run "
                "at the capacity). Raise `WidthController(max_parameters=...)` to let them grow.",
                stacklevel=3,
            )
        return {
            layer: capacity
            for layer, capacity in plan.items()
            if reasons[layer] not in _GROWTH_REASONS
        }

    def _restore_diverged_width_parameters(self):
        """Restores every width parameter that is not finite (see `_restore_width_parameters`)."""
        layers = [layer for layer in self._layers if layer.built]
        if not layers:
            return
        values = reallocation.current_values(self._model, [l.width_parameter for l in layers])
        diverged = [l for l, v in zip(layers, values) if not math.isfinite(float(v))]
        if diverged:
            self._restore_width_parameters(diverged)

    def _restore_width_parameters(self, layers):
        """Gives width parameters that became NaN or infinite (a non-finite batch, training
        stopped by `TerminateOnNaN`) their last finite value, so that the widths stay defined
        and the model can be saved, loaded and inspected."""
        self.model  # noqa: B018 (on JAX, reading it syncs the running state into the variables)
        for layer in layers:
            restored = self._last_finite.get(
                id(layer), layer.distribution.raw_for_width(layer.initial_units, layer.quantile)
            )
            layer.width_parameter.assign(restored)
            warnings.warn(
                f"The width parameter of adaptive layer '{layer.name}' became non-finite during "
                f"training; it was restored to its last finite value ({restored:.4g}). The "
                "other weights may be non-finite too.",
                stacklevel=3,
            )

    def get_config(self):
        return {
            "num_examples": self.num_examples,
            "check_every": self.check_every,
            "growth_factor": self.growth_factor,
            "grow_threshold": self.grow_threshold,
            "shrink_threshold": self.shrink_threshold,
            "width_warmup_epochs": self.width_warmup_epochs,
            "settle_after": self.settle_after,
            "settled_headroom": self.settled_headroom,
            "max_capacity": self.max_capacity,
            "max_parameters": self.max_parameters,
            "verbose": self.verbose,
        }


class WidthAnnealing(keras.callbacks.Callback):
    """Dynamic compression: anneals the width prior's scale so that the network shrinks while it
    trains (the paper's "annealing").

    From `start_epoch` to `end_epoch`, the scale (sigma_nu) of every adaptive layer's width prior
    falls linearly from its value at the start of training to `final_fraction` of it. A smaller
    scale pulls each width parameter harder toward the prior's mean width
    (`width_prior["mean_units"]`, set it small), so the widths fall while the data keeps the units
    that matter. Only layers with a `width_prior` are annealed. The scale is a constant of the
    compiled step: each epoch that changes it rebuilds the step once.

    Args:
        start_epoch: int >= 0, the first epoch (0-based) whose scale is lowered.
        end_epoch: int > `start_epoch`; from epoch `end_epoch - 1` on, the scale stays at its
            final value.
        final_fraction: float in (0, 1], the final scale as a share of the initial one.
            Defaults to 0.1 (the paper anneals by 90%).

    Example:

    ```python
    model = keras_awn.Sequential([
        keras.Input((2,)),
        keras_awn.layers.AdaptiveDense(32, activation="relu",
                                       width_prior={"mean_units": 4, "scale": 10.0}),
        keras.layers.Dense(2),
    ])
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=20, callbacks=[
        keras_awn.callbacks.WidthAnnealing(start_epoch=8, end_epoch=16, final_fraction=0.1)
    ])
    ```
    """

    def __init__(self, start_epoch: int, end_epoch: int, final_fraction: float = 0.1):
        super().__init__()
        if isinstance(start_epoch, bool) or not isinstance(start_epoch, int) or start_epoch < 0:
            raise ValueError(
                f"`start_epoch` must be an integer >= 0. Received: start_epoch={start_epoch!r}"
            )
        if isinstance(end_epoch, bool) or not isinstance(end_epoch, int) or end_epoch <= start_epoch:
            raise ValueError(
                f"`end_epoch` must be an integer > start_epoch ({start_epoch}). "
                f"Received: end_epoch={end_epoch!r}"
            )
        _check_fraction("final_fraction", final_fraction, 0.0, 1.0 + 1e-12)
        self.start_epoch = start_epoch
        self.end_epoch = end_epoch
        self.final_fraction = float(final_fraction)
        self._initial_scales = {}

    def scale_fraction(self, epoch: int) -> float:
        """The share of the initial scale used during `epoch` (0-based)."""
        progress = (epoch - self.start_epoch + 1) / (self.end_epoch - self.start_epoch)
        progress = min(max(progress, 0.0), 1.0)
        return 1.0 - (1.0 - self.final_fraction) * progress

    def on_train_begin(self, logs=None):
        layers = [l for l in graph.adaptive_layers(self.model) if l.width_prior is not None]
        if not layers:
            raise ValueError(
                "WidthAnnealing anneals the width prior, but no adaptive layer of the model has "
                "one. Give the layers a `width_prior={'mean_units': m, 'scale': s}`."
            )
        for layer in layers:
            self._initial_scales.setdefault(id(layer), (layer, layer.width_prior["scale"]))

    def on_epoch_begin(self, epoch, logs=None):
        fraction = self.scale_fraction(epoch)
        changed = False
        for layer, initial in self._initial_scales.values():
            scale = initial * fraction
            if layer.width_prior["scale"] != scale:
                layer.width_prior = {**layer.width_prior, "scale": scale}
                changed = True
        if changed:
            reallocation.rebuild_step_functions(self.model)

    def get_config(self):
        return {
            "start_epoch": self.start_epoch,
            "end_epoch": self.end_epoch,
            "final_fraction": self.final_fraction,
        }
