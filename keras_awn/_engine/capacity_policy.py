"""When an adaptive layer's capacity changes: plain arithmetic on widths, capacities and seconds.

No Keras here: the policy reads a layer's `capacity`, `min_units`, `max_units` and family
`min_capacity` (any object with those attributes will do, so it is tested without building a
model), the widths the controller observed, kept per layer in a `CapacityRecord`, and what
training measured, kept per model in a `TrainingLedger`: the time of a step, the share of it spent
on masked units and the cost of one rebuild of the compiled step. The `WidthController` callback
feeds it and applies its decisions (`keras_awn.callbacks`); docs/capacity-policy.md states and
proves what it guarantees.

The rule, in the spirit of ski rental and dynamic arrays:

- Growth cannot wait (a width above its capacity is clamped): a moving layer grows to
  `growth_factor` times its width, a settled one by margins that double at each regrowth, so
  between two reductions a layer grows O(log(max capacity / min capacity)) times.
- A reduction (tightening a settled capacity, shrinking a wide one) only saves masked compute,
  so it waits until the masked compute it would remove, accumulated since the last rebuild,
  reaches `payback` times what a rebuild measurably costs. The rebuilds that reduce capacities
  therefore cost at most `1 / payback` times the masked compute paid before them, and training
  pays at most twice what the best schedule knowing the future would (ski rental,
  `payback=1`).
"""

import math

# The reasons that only remove masked units: made once they have paid for themselves.
REDUCTION_REASONS = ("shrink", "settle")
# The reasons that add units (a parameter budget can hold them back).
GROWTH_REASONS = ("grow", "regrow")
# A width counts as settled when its last `settle_after` checks stay within this share of it.
SETTLE_BAND = 0.05
# A settled capacity covers the widths of the last SETTLE_MEMORY * settle_after checks.
SETTLE_MEMORY = 4
# Widths kept per layer for the settling rule (enough for 6 doublings of `settle_after`).
MAX_WINDOW = 4096
# Capacities the policy picks are multiples of this: matrix kernels on CPU (and tensor cores on
# GPU) handle such sizes best; on JAX/CPU an odd capacity like 269 ran an MLP's matrix products
# about 12% slower than 264 (docs/performance.md).
CAPACITY_MULTIPLE = 8
# A width standing for "more than any limit" (a width parameter whose width is infinite).
UNBOUNDED = 2**53


class TrainingLedger:
    """What a model's training measured (what rebuilding its compiled step costs, what its masked
    units cost) and when its width search last ran; lives with the model, so that repeated `fit`
    calls behave like one long fit.

    Attributes:
        rebuild_seconds: the estimated cost of one rebuild (the reallocation and the
            recompilation of the next step), or None before any measurement.
        step_seconds: the time of one training step since the last rebuild (all of them: on
            JAX, steps run asynchronously and one wait can hold several), or before it, or None.
        masked_seconds: the compute spent since the last rebuild on the masked units that the
            policy's reductions would remove: each step's time times the share of the weights
            that belong to them.
        rebuilds: the rebuilds recorded.
        steps: the training steps the model completed, over all its `fit` calls.
        step_version: what identified the model's compiled step when its last step ran (a
            step that runs after a change is compiled anew, and its time measures a rebuild).
        pending_compile_seconds: the time of the last step compiled anew, until a normal
            step's time is known to subtract from it.
        last_search_step: the step at which the width search last ran, or None.
        last_search_seconds: how long the last width search took (0 for the model's first,
            which compiles the probe's programs).
        seconds_since_search: the training time since the last width search (its steps,
            compilations included).
    """

    # Weight of a new measurement in the moving averages.
    SMOOTHING = 0.5

    def __init__(self, rebuild_seconds=None):
        self.rebuild_seconds = rebuild_seconds
        self.step_seconds = None
        self.masked_seconds = 0.0
        self._period = [0, 0.0]  # steps and seconds since the last rebuild
        self.rebuilds = 0
        self.step_version = None
        self.pending_compile_seconds = None
        self.steps = 0
        self.last_search_step = None
        self.last_search_seconds = 0.0
        self.seconds_since_search = 0.0
        self.searches = 0

    def searched(self, seconds: float = 0.0) -> None:
        """A width search ran (at `steps`) for `seconds`."""
        self.last_search_step = self.steps
        self.last_search_seconds = float(seconds) if self.searches else 0.0
        self.seconds_since_search = 0.0
        self.searches += 1

    def search_due(self, interval: int, budget: float | None = None) -> bool:
        """Whether `interval` steps passed since the last search (or since the model's first
        step) and, with a `budget`, whether training since then took at least `1 / budget`
        times as long as that search (so searching takes at most `budget` times the training
        time)."""
        if self.steps - (self.last_search_step or 0) < interval:
            return False
        return budget is None or budget * self.seconds_since_search >= self.last_search_seconds

    def trained(self, steps: int, seconds: float, masked_share: float) -> None:
        """Records `steps` steps that took `seconds`, with `masked_share` of the weights in
        masked units that a reduction would remove."""
        if steps <= 0:
            return
        self._period[0] += steps
        self._period[1] += seconds
        self.step_seconds = self._period[1] / self._period[0]
        self.masked_seconds += seconds * min(max(masked_share, 0.0), 1.0)

    def compiled(self, seconds: float) -> None:
        """Records one measured rebuild cost (`seconds`, reallocation and recompilation)."""
        self.rebuild_seconds = self._averaged(self.rebuild_seconds, max(seconds, 0.0))

    def settle_compile_seconds(self) -> None:
        """Turns the pending time of a step compiled anew into a rebuild cost, once a normal
        step's time is known. A step that took less than two normal steps compiled nothing
        (JAX reuses what it compiled for shapes seen before): once a cost is known, such steps
        leave it as it is, since the next rebuild may well be to new shapes."""
        seconds = self.pending_compile_seconds
        if seconds is None or self.step_seconds is None:
            return
        self.pending_compile_seconds = None
        if self.rebuild_seconds is not None and seconds < 2.0 * self.step_seconds:
            return
        self.compiled(seconds - self.step_seconds)

    def rebuilt(self) -> None:
        """A rebuild happened: the masked compute starts again from zero."""
        self.masked_seconds = 0.0
        self._period = [0, 0.0]
        self.rebuilds += 1

    def reduction_paid(self, payback: float, rebuild_seconds=None) -> bool:
        """Whether the masked compute paid since the last rebuild covers `payback` rebuilds of
        `rebuild_seconds` each (default: the measured cost; unknown until measured).

        Before the model's first step nothing is compiled: a rebuild costs nothing.
        """
        if self.steps == 0:
            return True
        if rebuild_seconds is None:
            rebuild_seconds = self.rebuild_seconds
        if rebuild_seconds is None:
            return False
        return self.masked_seconds >= payback * rebuild_seconds

    def _averaged(self, average, value):
        if average is None:
            return float(value)
        return (1.0 - self.SMOOTHING) * average + self.SMOOTHING * float(value)

    def __repr__(self):
        return (
            f"TrainingLedger(rebuild_seconds={self.rebuild_seconds}, "
            f"step_seconds={self.step_seconds}, masked_seconds={self.masked_seconds:.4g}, "
            f"rebuilds={self.rebuilds})"
        )


class CapacityRecord:
    """What the policy remembers about one layer; lives with the layer (its `training_state`), so
    that it carries over from one `fit` call to the next.

    Attributes:
        settled: whether the capacity was tightened around a settled width.
        recent_widths: the widths observed since the last reallocation (oldest first).
        recent_steps: the model's training step at each of `recent_widths`.
        regrowths: how many times the layer grew out of a settled capacity.
    """

    def __init__(self):
        self.settled = False
        self.recent_widths = []
        self.recent_steps = []
        self.regrowths = 0

    def observe(self, width: int, step: int | None = None) -> None:
        self.recent_widths.append(int(width))
        del self.recent_widths[:-MAX_WINDOW]
        if step is not None:
            self.recent_steps.append(int(step))
            del self.recent_steps[:-MAX_WINDOW]

    def drift(self, window: int = 16):
        """How fast the width grew over its last `window` observations (since the last
        reallocation), in units per step (>= 0): the least-squares slope, so that a noisy
        plateau reads as none. None without two observations at different steps."""
        if len(self.recent_steps) < 2 or len(self.recent_steps) != len(self.recent_widths):
            return None
        steps = self.recent_steps[-window:]
        widths = self.recent_widths[-window:]
        mean_step = sum(steps) / len(steps)
        mean_width = sum(widths) / len(widths)
        spread = sum((step - mean_step) ** 2 for step in steps)
        if spread <= 0:
            return None
        covariance = sum((s - mean_step) * (w - mean_width) for s, w in zip(steps, widths))
        return max(covariance / spread, 0.0)

    def reallocated(self, reason: str) -> None:
        """Updates the record after the layer's capacity changed for `reason`."""
        self.recent_widths = []
        self.recent_steps = []
        if self.settled and reason in GROWTH_REASONS:
            self.regrowths += 1
        self.settled = reason in ("settle", "regrow")

    def __repr__(self):
        return (
            f"CapacityRecord(settled={self.settled}, regrowths={self.regrowths}, "
            f"recent_widths=[{len(self.recent_widths)} widths])"
        )


def upper_units(layer) -> float:
    """The layer's `max_units`, or infinity."""
    return layer.max_units if layer.max_units is not None else math.inf


def bounded(layer, units) -> int:
    """`units` clamped to what `layer` may hold: `[max(min_units, 1), max_units]`."""
    return int(min(max(units, layer.min_units, 1), upper_units(layer)))


def aligned(units) -> int:
    """`units` rounded up to a multiple of `CAPACITY_MULTIPLE`."""
    return CAPACITY_MULTIPLE * math.ceil(units / CAPACITY_MULTIPLE)


class CapacityPolicy:
    """Decides each layer's capacity from its width (see `WidthController` for the arguments).

    Args:
        growth_factor: float > 1, the capacity allocated per unit of width.
        grow_threshold: float in (0, 1], the share of the capacity the width may reach.
        shrink_threshold: float, the share of the capacity below which it shrinks.
        settle_after: int or None, the checks a width must stay in its band to settle.
        settled_headroom: float in [0, 1), the margin kept above a settled width.
        max_capacity: int or None, the largest capacity any layer is given.
        min_capacity: int or None, the smallest capacity given (None: each layer's own).
        payback: float > 0, how many rebuilds' worth of masked compute must be paid before a
            rebuild that only removes masked units (`TrainingLedger.reduction_paid`; the
            controller applies it: `decide` proposes reductions whenever the widths allow).
    """

    def __init__(
        self,
        growth_factor: float = 2.0,
        grow_threshold: float = 0.8,
        shrink_threshold: float = 0.25,
        settle_after: int | None = 16,
        settled_headroom: float = 0.02,
        max_capacity: int | None = 8192,
        min_capacity: int | None = None,
        payback: float = 1.0,
    ):
        self.growth_factor = float(growth_factor)
        self.grow_threshold = float(grow_threshold)
        self.shrink_threshold = float(shrink_threshold)
        self.settle_after = settle_after
        self.settled_headroom = float(settled_headroom)
        self.max_capacity = max_capacity
        self.min_capacity = min_capacity
        self.payback = float(payback)

    def decide(
        self,
        layer,
        record: CapacityRecord,
        width: int,
        economic_margin: float | None = None,
    ):
        """`(capacity, reason)`: what the policy does with `layer` at `width`.

        `reason` is `"grow"`, `"regrow"`, `"shrink"`, `"settle"` or None (the capacity stays).
        A reduction (`REDUCTION_REASONS`) is a proposal: it is made once it has paid for itself
        (`TrainingLedger.reduction_paid`, weighed by the caller).
        `economic_margin`: the margin a regrowth or a settling keeps at least (see
        `economic_margin`), None, or a function of no argument returning one: called only
        when a regrowth or a settling needs it (it measures the model).
        """

        def margin():
            return economic_margin() if callable(economic_margin) else economic_margin

        capacity = layer.capacity
        limit = self.limit(layer)
        if capacity > limit:
            # A layer built above the limit (`AdaptiveDense(10**6)`): no capacity exceeds it.
            return int(limit), "shrink"
        settled = record.settled
        recent = record.recent_widths
        # A layer that grew out of a settled capacity waits twice as long before settling (or
        # regrowing by a margin) again, so a drifting width cannot make the policy rebuild
        # over and over.
        settle_after = None
        if self.settle_after is not None:
            settle_after = self.settle_after * 2**record.regrowths
        grow_at = capacity if settled else self.grow_threshold * capacity
        grows = (width >= grow_at if settled else width > grow_at) and capacity < self.limit(layer)
        if grows:
            if settled:
                regrown = self.regrown_capacity(layer, record, width, margin())
                if regrown is not None:
                    return regrown, "regrow"
            return self.reallocated_capacity(layer, width), "grow"
        if width < self.shrink_threshold * capacity:
            target = self.reallocated_capacity(layer, width)
            # At the capacity floor a narrow width is no reason to reallocate.
            return (target, "shrink") if target < capacity else (capacity, None)
        if settle_after is not None and len(recent) >= settle_after:
            window = recent[-settle_after:]
            if max(window) - min(window) <= self.settle_band(max(window)):
                # The capacity covers the widths of a longer memory than the window, so that a
                # width oscillating more slowly than the window does not outgrow it at once.
                high = max(recent[-SETTLE_MEMORY * settle_after :])
                settled = self.settled_capacity(high, margin())
                target = min(
                    bounded(layer, max(settled, self.floor(layer))), self.limit(layer)
                )
                # However little it saves: the masked compute it removes must pay for the
                # rebuild first (TrainingLedger.reduction_paid).
                if target < capacity:
                    return target, "settle"
        return capacity, None

    def grows_early(self, layer, record: CapacityRecord, width: int) -> bool:
        """Whether a moving layer past halfway to its grow threshold should grow in a rebuild
        that happens anyway (rather than rebuilding again for it a few checks later)."""
        early = (1.0 / self.growth_factor + self.grow_threshold) / 2.0
        return (
            not record.settled
            and width > early * layer.capacity
            and layer.capacity < upper_units(layer)
        )

    def settle_band(self, width: int) -> int:
        """How far a width may move over `settle_after` checks and still count as settled:
        `max(2, 5%)` of it, or the headroom if larger. Looser than the default headroom, so
        that a slowly drifting width settles too (a drift upwards then regrows by doubling
        margins, a drift downwards settles again lower)."""
        return max(2, math.ceil(max(SETTLE_BAND, self.settled_headroom) * width))

    def settle_margin(self, width: int) -> int:
        return max(2, math.ceil(self.settled_headroom * width))

    def settled_capacity(self, width: int, economic_margin=None) -> int:
        """The capacity a layer settled at `width` gets (before its `min_capacity` and
        `max_units` apply): the width plus `max(2, settled_headroom * width)` units, or the
        `economic_margin` of a width still drifting up if larger, rounded up to a multiple
        of 8."""
        margin = self.settle_margin(width)
        if economic_margin is not None:
            margin = max(margin, math.ceil(economic_margin))
        return aligned(width + margin)

    def economic_margin(self, record: CapacityRecord, rebuild_seconds, unit_seconds):
        """The margin that makes a drifting width's next regrowth cost what its masked units
        cost meanwhile (the economic order quantity): with the width growing `v` units per
        step, a margin `h` lasts `h / v` steps and masks `h / 2` units on average, at
        `unit_seconds` each per step; `h = sqrt(2 * rebuild_seconds * v / unit_seconds)`
        balances the two. `v` is read over the last `settle_after` checks. None when the
        drift or a cost is unknown."""
        drift = record.drift(self.settle_after or 16)
        if not drift or not rebuild_seconds or not unit_seconds:
            return None
        return math.sqrt(2.0 * rebuild_seconds * drift / unit_seconds)

    def regrown_capacity(self, layer, record: CapacityRecord, width: int, economic_margin=None):
        """The capacity of a settled layer whose width reached it: the width plus twice the
        margin of its previous regrowth (the first: twice the settled margin), or the
        `economic_margin` if larger, or None once that margin reaches what `growth_factor`
        gives (the layer is moving)."""
        margin = self.settle_margin(width) * 2 ** (record.regrowths + 1)
        if economic_margin is not None:
            margin = max(margin, math.ceil(economic_margin))
        if width + margin >= self.growth_factor * width:
            return None
        return min(bounded(layer, aligned(width + margin)), self.limit(layer))

    def limit(self, layer) -> float:
        """The largest capacity `layer` may get: its `max_units`, and `max_capacity` (so a
        diverging width parameter cannot exhaust memory)."""
        limit = upper_units(layer)
        if self.max_capacity is not None:
            # A capacity holds at least the layer's `min_units` (its width never goes below).
            limit = min(limit, max(self.max_capacity, layer.min_units))
        return limit

    def floor(self, layer) -> int:
        """The smallest capacity the policy gives `layer` (see `min_capacity`)."""
        return layer.min_capacity if self.min_capacity is None else self.min_capacity

    def reallocated_capacity(self, layer, width: int) -> int:
        """The capacity after growing or shrinking `layer` around `width`, at most `limit`."""
        # The floor yields to the limit.
        floor = min(self.floor(layer), self.limit(layer))
        capacity = bounded(layer, max(aligned(self.growth_factor * width), floor))
        return int(min(capacity, self.limit(layer)))

    def held_at_limit(self, layer, width: int) -> bool:
        """Whether `width` asks for more than the layer's `limit` allows."""
        floor = min(self.floor(layer), self.limit(layer))
        return bounded(layer, max(aligned(self.growth_factor * width), floor)) > self.limit(layer)
