"""`WidthController`: reallocates adaptive layers' capacity between steps and scales their prior."""

import functools
import math
import time
import warnings

import keras

from keras_awn._engine import backend_guards
from keras_awn._engine import capacity_policy
from keras_awn._engine import keras_internals
from keras_awn._engine import resize
from keras_awn._engine import running_state
from keras_awn._engine import topology
from keras_awn._engine import training_state
from keras_awn._engine import validation
from keras_awn._engine import width_search

# Steps between width searches on long fits (`search_every="auto"`).
SEARCH_EVERY = 128


def _raises_no_stop_iteration(hook):
    """Keras' training loops take a `StopIteration` raised by a callback for the end of the
    data: `fit` would return normally, having skipped batches. A bug in a hook fails `fit`."""

    @functools.wraps(hook)
    def wrapped(self, *args, **kwargs):
        try:
            return hook(self, *args, **kwargs)
        except StopIteration as error:
            raise RuntimeError(
                f"WidthController.{hook.__name__} failed with StopIteration"
            ) from error

    return wrapped


class WidthController(keras.callbacks.Callback):
    """Searches adaptive layers' widths, reallocates their capacity and scales their prior.

    **The width search** (layers with `width_learning="search"`, the default): every
    `search_every` steps the controller scores the model on a probe of training examples with
    each layer cut to prefixes of its units, and sets each layer's width from the smallest
    prefix within `search_tolerance` of the whole layer: a layer needing 3/4 of its units or
    more doubles, otherwise it keeps 1.5 times what it needs (widths below 8 move to 8). For the
    last `final_share` of the epochs the search stops: each layer keeps 1.25 times what it needs
    and trains on all its units. Width changes keep what the kept units compute. See
    docs/semantics.md, "A deliberate deviation: the width search".

    **The capacity policy.** Inside each step an adaptive layer's width moves freely up to its
    `capacity` (the units it physically owns). Every `check_every` steps and at the end of each
    epoch, this callback compares each layer's width with its capacity:

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
    of `max(2, settled_headroom * width)` units, or the economic margin (below) of a width still
    drifting up if larger, rounded up to a multiple of 8. So the masked units of a width that
    stopped cost about `settled_headroom` of the layer's work for the rest of training, at the
    price of one more rebuild.

    A settled layer grows only when its width reaches the capacity. It then regrows and stays
    settled (`"regrow"`), by twice its previous margin, or by more when its width drifts fast:
    the margin whose masked units cost, until the width reaches it, what the rebuild costs
    (sqrt(2 x rebuild cost x drift / cost of a masked unit), the economic order quantity). So a
    width that drifts upwards costs a few rebuilds, each further apart than the last. Once the
    margin would reach `growth_factor * width`, it grows by `growth_factor` and is moving
    again. Each growth out of a settled capacity doubles the checks the layer must wait before
    it settles again. `settle_after=None` turns settling off.

    A rebuild that only removes masked units (settling, shrinking) is made only once it has
    paid for itself: when the compute spent on masked units since the last rebuild (each step's
    time times the share of the weights that are masked) reaches what one rebuild costs (the
    reallocation and the recompilation of the next step, both measured while training, or
    `rebuild_cost`). So those rebuilds never cost more than the masked compute they end, and a
    width that drifts cannot make the step recompile every epoch (docs/capacity-policy.md).
    What the policy measured and remembers lives with the model: repeated `fit` calls behave
    like one long fit (the width search's clock too).

    Reallocation keeps the model's outputs, the optimizer state of surviving units and the
    training trajectory unchanged (docs/architecture.md, "A reallocation").

    At the end of each epoch the controller puts each layer's width in the epoch's logs, as
    `<layer name>_width` (the progress bar and `History` show it).

    The controller also gives each layer the number of training examples N, which scales the
    prior in the loss (the ELBO per example). `keras_awn.Model` and `keras_awn.Sequential` infer
    N from array inputs to `fit` and attach a controller themselves; pass one explicitly for a
    plain `keras.Model`, or to set N for datasets whose size Keras cannot know.
    `keras_awn.Model.fit` runs the controller before the other callbacks, so that they see the
    widths in each epoch's logs and a model whose diverged width parameters it restored; with a
    plain `keras.Model`, put it first in `callbacks` for the same.

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
        search_every: int >= 1, `"auto"` or None: the steps between width searches. `"auto"`
            (default) searches every 128 steps, or about 16 times when the model's training
            (its earlier fits and this one) is shorter (at most every 8 steps). The steps count
            across `fit` calls. None turns the search off: the widths then move only
            by the gradient of layers with `width_learning="gradient"`.
        search_tolerance: float in (0, 1), the share of what a layer adds (the probe's score
            lost when it is cut to nothing) a prefix of it may lose and still count as enough.
            Defaults to 0.01: a smaller tolerance keeps wider layers.
        final_share: float in [0, 1), the share of the epochs at the end of each `fit` without
            searching. Defaults to 0.2.
        probe_data: None or a tuple `(x, y)` of training examples the search scores the model
            on. None (default) takes what `keras_awn.Model.fit` samples from its data (up to 2048
            examples from arrays, the first batch of a `keras.utils.PyDataset`); pass it for a
            plain `keras.Model` or for other datasets.
        search_budget: float > 0 or None: a search runs only once the training steps since
            the previous one took at least `1 / search_budget` times as long as it did, so that
            searching takes at most about `search_budget` times the training time (the model's
            first search, which compiles the probe's programs, does not count). Defaults to
            None: the interval alone. The search can cost much more than the steps between two
            searches when layers are wide or steps fast (docs/capacity-policy.md); a budget
            makes it search less often, so widths take longer to find.
        rebuild_cost: `"measured"` (default) or a number of seconds >= 0: what one rebuild of
            the compiled step costs, against which the masked compute is weighed before a
            rebuild that only removes masked units. `"measured"` times the reallocations and
            the recompilation of the step after each one (before the first measurement, a
            rebuild before the model's first step is free); 0 settles and shrinks as soon as
            the widths allow.
        verbose: 0 (silent, default) or 1 (print each reallocation and width change).

    Attributes:
        reallocations: list of dicts, one per layer reallocation, with keys `epoch`, `step`,
            `layer`, `width`, `old_capacity`, `new_capacity` and `reason` (`"grow"`, `"regrow"`,
            `"shrink"` or `"settle"`).
        rebuilds: number of times the compiled step functions were rebuilt by a reallocation.
        step_changes: number of times the model's compiled steps had to be made anew: the
            reallocations, and the changes of a value the step reads (N, the width warm-up,
            the stochastic prefixes' end, `WidthAnnealing`'s prior scale). `fit` rebuilds its
            steps itself; a custom loop that compiles its step (`jax.jit`, `tf.function`)
            compiles it again when this changes (docs/custom-loops.md).
        searches: list of dicts, one per width change of the search, with keys `epoch`,
            `step`, `layer`, `width`, `new_width` and `final` (the change that ends the search).
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
        search_every="auto",
        search_tolerance: float = 0.01,
        final_share: float = 0.2,
        probe_data=None,
        search_budget: float | None = None,
        rebuild_cost="measured",
        verbose: int = 0,
    ):
        super().__init__()
        num_examples = validation.check_int("num_examples", num_examples, allow_none=True)
        check_every = validation.check_int("check_every", check_every)
        if not validation.is_number(growth_factor) or not growth_factor > 1:
            raise ValueError(
                "`growth_factor` must be a finite number > 1. "
                f"Received: growth_factor={growth_factor!r}"
            )
        growth_factor = float(growth_factor)
        validation.check_in_open_interval("grow_threshold", grow_threshold, 0.0, 1.0 + 1e-12)
        validation.check_in_open_interval(
            "shrink_threshold", shrink_threshold, 0.0, 1.0 / growth_factor
        )
        width_warmup_epochs = validation.check_int(
            "width_warmup_epochs", width_warmup_epochs, minimum=0
        )
        settle_after = validation.check_int(
            "settle_after", settle_after, minimum=2, allow_none=True
        )
        validation.check_fraction("settled_headroom", settled_headroom)
        max_capacity = validation.check_int("max_capacity", max_capacity, allow_none=True)
        min_capacity = validation.check_int("min_capacity", min_capacity, allow_none=True)
        if min_capacity is not None and max_capacity is not None and min_capacity > max_capacity:
            raise ValueError(
                "`min_capacity` must be <= `max_capacity`. "
                f"Received: min_capacity={min_capacity}, max_capacity={max_capacity}"
            )
        max_parameters = validation.check_int("max_parameters", max_parameters, allow_none=True)
        if search_every != "auto":
            search_every = validation.check_int("search_every", search_every, allow_none=True)
        validation.check_in_open_interval("search_tolerance", search_tolerance, 0.0, 1.0)
        validation.check_fraction("final_share", final_share)
        if probe_data is not None and (not isinstance(probe_data, tuple) or len(probe_data) != 2):
            raise ValueError(
                "`probe_data` must be None or a tuple `(x, y)` of training examples. "
                f"Received: probe_data={type(probe_data).__name__}"
            )
        if search_budget is not None and (
            not validation.is_number(search_budget)
            or not math.isfinite(search_budget)
            or search_budget <= 0
        ):
            raise ValueError(
                "`search_budget` must be None or a finite number > 0. "
                f"Received: search_budget={search_budget!r}"
            )
        if rebuild_cost != "measured" and (
            not validation.is_number(rebuild_cost)
            or not math.isfinite(rebuild_cost)
            or rebuild_cost < 0
        ):
            raise ValueError(
                '`rebuild_cost` must be "measured" or a finite number of seconds >= 0. '
                f"Received: rebuild_cost={rebuild_cost!r}"
            )
        if verbose not in (0, 1):
            raise ValueError(f"`verbose` must be 0 or 1. Received: verbose={verbose!r}")
        self.num_examples = num_examples
        self.check_every = check_every
        self.width_warmup_epochs = width_warmup_epochs
        self.max_parameters = max_parameters
        self.verbose = verbose
        self.search_every = search_every
        self.final_share = float(final_share)
        self.probe_data = probe_data
        self.search_budget = None if search_budget is None else float(search_budget)
        self.rebuild_cost = rebuild_cost if rebuild_cost == "measured" else float(rebuild_cost)
        self.search = width_search.WidthSearch(tolerance=search_tolerance)
        self.policy = capacity_policy.CapacityPolicy(
            growth_factor=growth_factor,
            grow_threshold=grow_threshold,
            shrink_threshold=shrink_threshold,
            settle_after=settle_after,
            settled_headroom=settled_headroom,
            max_capacity=max_capacity,
            min_capacity=min_capacity,
        )
        self.reallocations = []
        self.rebuilds = 0
        self.reallocation_seconds = 0.0
        # Set by keras_awn.Model.fit from its inputs; an explicit num_examples wins.
        self.inferred_num_examples = None
        self._links = {}
        self._layers = []
        self._steps = 0
        self._epoch = 0
        # `(layers, read)` from the previous check inside the epoch (see `_check`).
        self._requested = None
        # Per layer (by id): the last finite width parameter seen, restored if it diverges.
        self._last_finite = {}
        self._warned_limit = set()
        self._warned_budget = False
        # Set by keras_awn.Model.fit from its inputs; an explicit probe_data wins.
        self.inferred_probe_data = None
        self.searches = []
        self._probe = None
        self._final = False
        self._warned_probe = False
        # Timing of the steps, for the model's TrainingLedger (see `_time_steps`).
        self._ledger = None
        self._last_begin = None
        self._step_compiled = False
        self._steady_steps = 0
        self._steady_seconds = 0.0
        self._search_seconds = 0.0
        self._removable_shares = {}

    # The policy's settings, as the constructor named them.
    growth_factor = property(lambda self: self.policy.growth_factor)
    grow_threshold = property(lambda self: self.policy.grow_threshold)
    shrink_threshold = property(lambda self: self.policy.shrink_threshold)
    settle_after = property(lambda self: self.policy.settle_after)
    settled_headroom = property(lambda self: self.policy.settled_headroom)
    max_capacity = property(lambda self: self.policy.max_capacity)
    min_capacity = property(lambda self: self.policy.min_capacity)
    search_tolerance = property(lambda self: self.search.tolerance)

    def target_capacity(self, layer, width: int) -> int:
        """The capacity the policy proposes for `layer` at `width` (its current capacity if no
        change); a reduction is made once it has paid for a rebuild."""
        return self.policy.decide(layer, layer.training_state.capacity, width)[0]

    # -- Callback hooks -------------------------------------------------------------------------

    @_raises_no_stop_iteration
    def on_train_begin(self, logs=None):
        model = self.model  # on JAX, reading `self.model` syncs the training state
        if isinstance(model, keras.Sequential) and not model.built:
            raise ValueError(
                f"Sequential model '{model.name}' is not built when `fit` starts (it has no "
                "`keras.Input`), so keras_awn cannot see "
                "which layers read its adaptive layers. Start it with `keras.Input(shape)`, or "
                "call `model.build(input_shape)` before `fit` (keras_awn models build "
                "themselves from array inputs)."
            )
        backend_guards.check_distribution(model)
        if getattr(model, "optimizer", None) is None:
            warnings.warn(
                f"Model '{model.name}' has no optimizer: in a custom training loop, attach yours "
                "with `model.compile(optimizer=...)` and use `model.optimizer` at every step. A "
                "reallocation replaces the resized variables and the model's optimizer; an "
                "optimizer held elsewhere would still update the old variables "
                "(docs/custom-loops.md).",
                stacklevel=2,
            )
        self._links = topology.link(model)
        self._layers = topology.adaptive_layers(model)
        num_examples = self.num_examples or self.inferred_num_examples
        if num_examples is None and any(layer.has_prior() for layer in self._layers):
            if getattr(model, "infers_num_examples", False):
                why = (
                    "could not infer it from the data passed to `fit` (it can from arrays and "
                    "from loaders with a known length)"
                )
            else:
                why = (
                    "infers it only in `keras_awn.Model` and `keras_awn.Sequential`, and this "
                    f"model is a {type(model).__name__}"
                )
            raise ValueError(
                "keras_awn needs the number of training examples N to scale the prior of the "
                f"adaptive layers (the ELBO per example), and {why}. Pass it as "
                "`callbacks=[keras_awn.callbacks.WidthController(num_examples=N)]`, build the "
                "model with keras_awn.Model/Sequential, or disable the priors "
                "(`weight_prior_scale=None` and `width_prior=None`)."
            )
        deferred = [
            layer.name
            for layer in self._layers
            if not layer.adds_prior_in_call and layer.has_prior()
        ]
        if deferred and not getattr(model, "adds_deferred_priors", False):
            warnings.warn(
                f"The prior of adaptive layers {deferred} (inside a recurrent cell) is added by "
                "`keras_awn.Model`/`keras_awn.Sequential` in `compute_loss`; this "
                f"{type(model).__name__} does not, so they train without it. Build the model "
                "with keras_awn.Model or keras_awn.Sequential.",
                stacklevel=2,
            )
        for layer in self._layers:
            layer.training_state.controlled = True
        self._ledger = training_state.training_ledger(model)
        self._last_begin = None
        self._steady_steps, self._steady_seconds = 0, 0.0
        self._removable_shares = {}
        # N is a constant of the traced step.
        training_state.set_trace_constants(
            model,
            [(layer.training_state, "num_examples", num_examples) for layer in self._layers],
        )
        self._steps = 0
        self._final = False
        self._search_interval = self._interval()
        self._probe = self._make_probe()
        self._set_prefix_training(True)
        self._check(model)

    @property
    def step_changes(self) -> int:
        """How many times the model's compiled steps had to be made anew (see the class
        docstring); counted on the model, so `WidthAnnealing`'s changes count too."""
        model = getattr(self, "_model", None)
        return training_state.step_changes(model) if model is not None else 0

    def _fix_frozen_widths(self, model):
        """Tells each frozen layer (`trainable = False`) its width, a constant for this fit."""
        layers = [layer for layer in self._layers if layer.built]
        values = running_state.current_values(model, [layer.width_parameter for layer in layers])
        training_state.set_trace_constants(
            model,
            [
                (
                    layer.training_state,
                    "frozen_units",
                    None if layer.trainable else layer.desired_units_on_host(float(value)),
                )
                for layer, value in zip(layers, values)
            ],
        )

    def _set_width_frozen(self, frozen):
        """Freezes or releases the width parameters (a constant of the traced step)."""
        training_state.set_trace_constants(
            self.model,
            [(layer.training_state, "width_frozen", frozen) for layer in self._layers],
        )

    def _searching_layers(self):
        return [
            layer
            for layer in self._layers
            if layer.built
            and layer.trainable
            and layer.width_learning == "search"
            and not layer.width_is_fixed
        ]

    def _interval(self):
        """Steps between width searches: `search_every`, or with "auto" 128, fewer when the
        model's whole training (its earlier fits and this one) is short, so that it searches
        about 16 times (at least every 8 steps)."""
        if self.search_every != "auto":
            return self.search_every
        params = self.params or {}
        total = (params.get("steps") or 0) * (params.get("epochs") or 0)
        if not total:
            return SEARCH_EVERY
        return min(SEARCH_EVERY, max(8, (self._ledger.steps + total) // 16))


    def _make_probe(self):
        """The probe of the width search, or None (with a warning) when there is no data."""
        if self.search_every is None or not self._searching_layers():
            return None
        data = self.probe_data if self.probe_data is not None else self.inferred_probe_data
        if data is None:
            if not self._warned_probe:
                self._warned_probe = True
                warnings.warn(
                    "The width search needs a sample of training examples, which keras_awn "
                    "could not take from the data passed to `fit` (it can from arrays and from "
                    "`keras.utils.PyDataset`s): the widths stay where they start. Pass "
                    "`callbacks=[keras_awn.callbacks.WidthController(probe_data=(x, y))]`.",
                    stacklevel=3,
                )
            return None
        return width_search.Probe(*data)

    def _set_prefix_training(self, enabled):
        """Switches the stochastic prefixes on or off (a constant of the traced step)."""
        training_state.set_trace_constants(
            self.model,
            [(layer.training_state, "prefix_training", enabled) for layer in self._layers],
        )

    @_raises_no_stop_iteration
    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        epochs = (self.params or {}).get("epochs")
        final = bool(epochs) and epoch >= math.ceil((1.0 - self.final_share) * epochs)
        if final and not self._final and self.final_share > 0:
            # The last part of the fit trains every layer at the width it needs, on all units.
            self._final = True
            if self._probe is not None:
                self._search(final=True)
            self._set_prefix_training(False)
        frozen = epoch < self.width_warmup_epochs
        if any(layer.training_state.width_frozen != frozen for layer in self._layers):
            self._set_width_frozen(frozen)

    @_raises_no_stop_iteration
    def on_train_batch_begin(self, batch, logs=None):
        started = time.perf_counter()
        if self._ledger is None:
            # A custom loop that did not call `on_train_begin`.
            self._ledger = training_state.training_ledger(self._model)
        self._time_steps(started)
        if not self._steps:
            # After the other callbacks' `on_train_begin` (a `BackupAndRestore` may have loaded
            # other weights), before the first step is compiled.
            model = self.model
            self._fix_frozen_widths(model)
            # A Ctrl-C during the first step's compilation must not lose the model (JAX).
            keras_internals.reset_running_state(model, start=True)
        # Checked at the beginning of a batch: the end-of-batch hook would make Keras dispatch
        # every batch's callbacks synchronously.
        if self._steps and self._steps % self.check_every == 0:
            self._check(self._model, lagged=True)
        if (
            self._probe is not None
            and not self._final
            and self._epoch >= self.width_warmup_epochs
            and self._steps
            and self._ledger.search_due(self._search_interval, self.search_budget)
        ):
            self._search()
        self._steps += 1
        self._ledger.steps += 1
        # Whether the step about to run is compiled anew (a reallocation or a new trace
        # constant since the previous one, a new `compile`, or the model's first step).
        version = (
            training_state.step_changes(self._model),
            id(getattr(self._model, "train_function", None)),
        )
        self._step_compiled = version != self._ledger.step_version
        self._ledger.step_version = version
        self._last_begin = started

    def _time_steps(self, now):
        """Times the step that just ran (from the previous batch's start, without the width
        searches): a step compiled anew measures a rebuild, the others the step time."""
        if self._last_begin is not None:
            elapsed = now - self._last_begin - self._search_seconds
            self._ledger.seconds_since_search += elapsed
            if self._step_compiled:
                self._ledger.pending_compile_seconds = elapsed
            else:
                self._steady_steps += 1
                self._steady_seconds += elapsed
        self._search_seconds = 0.0
        self._last_begin = None

    @_raises_no_stop_iteration
    def on_test_begin(self, logs=None):
        # `fit` validates before `on_epoch_end`: the epoch's last step ends here.
        self._time_steps(time.perf_counter())

    @_raises_no_stop_iteration
    def on_epoch_end(self, epoch, logs=None):
        # The epoch's last step (unless validation timed it), then nothing until the next
        # epoch's first step starts.
        self._time_steps(time.perf_counter())
        self._check(self._model)
        if logs is not None:
            for layer, name in topology.display_names(self._layers).items():
                logs[f"{name}_width"] = self._active_units(layer)

    @_raises_no_stop_iteration
    def on_train_end(self, logs=None):
        self._restore_diverged_width_parameters()
        if any(layer.training_state.width_frozen for layer in self._layers):
            self._set_width_frozen(False)
        for layer in self._layers:
            layer.training_state.controlled = False
            layer.training_state.frozen_units = None

    # -- Checking -------------------------------------------------------------------------------

    def _active_units(self, layer) -> int:
        """`layer.active_units` from the width parameter the last check read, computed on the
        host: eager backend ops would each compile a small program on JAX (memory, time)."""
        value = self._last_finite.get(id(layer))
        if value is None:
            return layer.active_units
        return layer.active_units_on_host(value)

    def _read_width_parameters(self, model, layers, lagged):
        """The width parameters of `layers` (numpy), or None when a lagged check has none yet.

        `lagged` (the checks inside an epoch): decide on the values requested at the previous
        check, and request the current ones for the next, so that reading never waits for the
        running step (`running_state.request_values`). The first check of an epoch only
        requests. The checks at the start of training and at epoch ends read the current values.
        """
        # Read only the width parameters: no full state sync unless something is resized.
        variables = [layer.width_parameter for layer in layers]
        if not lagged:
            self._requested = None
            return running_state.current_values(model, variables)
        requested = self._requested
        self._requested = (layers, running_state.request_values(model, variables))
        if requested is None or requested[0] != layers:
            return None
        return requested[1]()

    def _check(self, model, lagged=False):
        """Decides on every layer's capacity from its width parameter, and reallocates."""
        layers = [layer for layer in self._layers if layer.built]
        if not layers:
            return
        values = self._read_width_parameters(model, layers, lagged)
        if values is None:
            return
        plan, widths, reasons = {}, {}, {}
        diverged = []
        for layer, value in zip(layers, values):
            if not math.isfinite(float(value)):
                diverged.append(layer)
                continue
            self._last_finite[id(layer)] = float(value)
            # A width parameter below about -87.9 asks for infinitely many units: held at the
            # limit like any width above it.
            width = int(min(layer.desired_units_on_host(float(value)), capacity_policy.UNBOUNDED))
            widths[layer] = width
        reductions = {}
        for layer, width in widths.items():
            record = layer.training_state.capacity
            record.observe(width, self._ledger.steps)

            # For a regrowth, or a settling of a width that still drifts up; measured only then.
            def margin(layer=layer, record=record):
                return self.policy.economic_margin(
                    record, self._rebuild_seconds(), self._unit_seconds(model, layer)
                )

            target, reason = self.policy.decide(layer, record, width, economic_margin=margin)
            if target == layer.capacity:
                continue
            if (
                reason in capacity_policy.REDUCTION_REASONS
                and layer.capacity <= self.policy.limit(layer)
            ):
                reductions[layer] = (target, reason)
            else:
                # Growth cannot wait; nor can a layer above the limit (memory).
                plan[layer], reasons[layer] = target, reason
                self._warn_if_held(layer, width)
        # A reduction only removes masked units: made once they have cost a rebuild, or in a
        # rebuild that happens anyway.
        paid = self._reduction_paid(model, {layer: c for layer, (c, _) in reductions.items()})
        if paid or plan:
            for layer, (target, reason) in reductions.items():
                plan[layer], reasons[layer] = target, reason
        if diverged:
            self._restore_width_parameters(diverged)
        if not plan:
            return
        # The step is rebuilt anyway: also grow the moving layers past halfway to their grow
        # threshold, rather than rebuilding again for them a few checks later.
        for layer, width in widths.items():
            if layer not in plan and self.policy.grows_early(
                layer, layer.training_state.capacity, width
            ):
                plan[layer] = self.policy.reallocated_capacity(layer, width)
                reasons[layer] = "grow"
                self._warn_if_held(layer, width)
        if self.max_parameters is not None:
            plan = self._within_parameter_budget(model, plan, reasons)
            if not plan:
                return
        self._reallocate(plan, widths, reasons)

    def _reduction_paid(self, model, reductions):
        """Books the steps timed since the previous check in the model's `TrainingLedger`, with
        the masked units that `reductions` (`{layer: capacity}`) would remove, and says whether
        they have paid for a rebuild."""
        ledger = self._ledger
        ledger.trained(
            self._steady_steps, self._steady_seconds, self._removable_share(model, reductions)
        )
        self._steady_steps, self._steady_seconds = 0, 0.0
        ledger.settle_compile_seconds()
        return ledger.reduction_paid(self.policy.payback, self._rebuild_seconds())

    def _rebuild_seconds(self):
        if self.rebuild_cost != "measured":
            return self.rebuild_cost
        return self._ledger.rebuild_seconds

    def _unit_seconds(self, model, layer):
        """What one masked unit of `layer` costs per step: the step time times its share of
        the weights (its own and its readers')."""
        step_seconds = self._ledger.step_seconds
        if step_seconds is None:
            return None
        allocated = resize.parameter_count(model, {}, self._links)
        fewer = resize.parameter_count(model, {layer: layer.capacity - 1}, self._links)
        return step_seconds * (allocated - fewer) / allocated

    def _removable_share(self, model, reductions):
        """The share of `model`'s weights that `reductions` would remove: what those masked
        units cost of a step (exact for dense layers' matrix products)."""
        if not reductions:
            return 0.0
        key = tuple((id(layer), layer.capacity, units) for layer, units in reductions.items())
        share = self._removable_shares.get(key)
        if share is None:
            allocated = resize.parameter_count(model, {}, self._links)
            kept = resize.parameter_count(model, reductions, self._links)
            share = 1.0 - kept / allocated if allocated else 0.0
            self._removable_shares = {key: share}
        return share

    def _search(self, final=False):
        """Runs the width search on every searching layer and applies its decisions.

        `final`: the search ends; each layer keeps what it needs (`WidthSearch.final_width`).
        """
        started = time.perf_counter()
        try:
            self._search_layers(final)
        finally:
            seconds = time.perf_counter() - started
            self._search_seconds += seconds
        if not final:
            self._ledger.searched(seconds)

    def _search_layers(self, final):
        model = self.model  # on JAX this syncs the running state into the variables
        probe = self._probe
        full = probe.score(model)
        decisions = {}
        for layer in self._searching_layers():
            raw = float(running_state.host_value(layer.width_parameter))
            if not math.isfinite(raw):
                continue
            width = layer.active_units_on_host(raw)

            def score(units, layer=layer, width=width):
                return full if units >= width else probe.score(model, layer, units)

            if final:
                target = self.search.final_width(width, score)
            else:
                target = self.search.target_width(width, score)
            target = capacity_policy.bounded(layer, target)
            if target != width:
                decisions[layer] = (width, target)
        if not decisions:
            return
        # Room first: units the width newly covers must exist before their readers' rows are
        # zeroed (`set_width`).
        plan, reasons = {}, {}
        for layer, (width, target) in decisions.items():
            if target > layer.capacity:
                plan[layer] = self.policy.reallocated_capacity(layer, target)
                reasons[layer] = "grow"
        if plan:
            self._reallocate(plan, {layer: decisions[layer][1] for layer in plan}, reasons)
        for layer, (width, target) in decisions.items():
            width_search.set_width(layer, target, self._links[layer])
            self._last_finite[id(layer)] = float(running_state.host_value(layer.width_parameter))
            event = {
                "epoch": self._epoch,
                "step": self._steps,
                "layer": layer.name,
                "width": width,
                "new_width": layer.active_units_on_host(self._last_finite[id(layer)]),
                "final": final,
            }
            self.searches.append(event)
            if self.verbose:
                print(
                    f"WidthController: '{layer.name}' width {width} -> {event['new_width']} "
                    f"({'final' if final else 'search'}; epoch {self._epoch}, "
                    f"step {self._steps})"
                )
        self._check(model)

    def _reallocate(self, plan, widths, reasons):
        started = time.perf_counter()
        model = self.model  # on JAX this syncs the running state into the variables
        old = {layer: layer.capacity for layer in plan}
        resize.resize(model, plan, self._links)
        self.rebuilds += 1
        if self._ledger is not None:
            self._ledger.rebuilt()
        self.reallocation_seconds += time.perf_counter() - started
        for layer, capacity in plan.items():
            layer.training_state.capacity.reallocated(reasons[layer])
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

    def _warn_if_held(self, layer, width):
        """Warns once per layer when its width asks for more than the policy's limit."""
        if id(layer) in self._warned_limit:
            return
        if self.policy.held_at_limit(layer, width):
            self._warned_limit.add(id(layer))
            warnings.warn(
                f"Adaptive layer '{layer.name}' asks for {width} units; its capacity is "
                f"held at max_capacity={self.max_capacity} (the width runs at the capacity). "
                "Raise `WidthController(max_capacity=...)` if the layer should grow "
                "further, or set the layer's `max_units`.",
                stacklevel=4,
            )

    def _within_parameter_budget(self, model, plan, reasons):
        """The plan without its growth when growing would exceed `max_parameters`.

        Shrinking and settling only free memory and are kept. Held layers run at their capacity
        (their width is clamped to it), so memory stays bounded whatever the width asks for.
        """
        planned = resize.parameter_count(model, plan, self._links)
        if planned <= self.max_parameters:
            return plan
        growth = capacity_policy.GROWTH_REASONS
        held = [layer.name for layer in plan if reasons[layer] in growth]
        if held and not self._warned_budget:
            self._warned_budget = True
            warnings.warn(
                f"Growing adaptive layers {held} would take the model to {planned} parameters, "
                f"over max_parameters={self.max_parameters}: their capacity is held (the widths "
                "run at the capacity). Raise `WidthController(max_parameters=...)` to let them "
                "grow.",
                stacklevel=3,
            )
        return {layer: capacity for layer, capacity in plan.items() if reasons[layer] not in growth}

    def _restore_diverged_width_parameters(self):
        """Restores every width parameter that is not finite (see `_restore_width_parameters`)."""
        layers = [layer for layer in self._layers if layer.built]
        if not layers:
            return
        parameters = [layer.width_parameter for layer in layers]
        values = running_state.current_values(self._model, parameters)
        diverged = [layer for layer, v in zip(layers, values) if not math.isfinite(float(v))]
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
            "min_capacity": self.min_capacity,
            "max_parameters": self.max_parameters,
            "search_every": self.search_every,
            "search_tolerance": self.search_tolerance,
            "final_share": self.final_share,
            "search_budget": self.search_budget,
            "rebuild_cost": self.rebuild_cost,
            "verbose": self.verbose,
        }
