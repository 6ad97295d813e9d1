"""When an adaptive layer's capacity changes: plain arithmetic on widths and capacities.

No Keras here: the policy reads a layer's `capacity`, `min_units`, `max_units` and family
`min_capacity` (any object with those attributes will do, so it is tested without building a
model) and the widths the controller observed, kept per layer in a `CapacityRecord`. The
`WidthController` callback applies its decisions (`keras_awn.callbacks`); its docstring describes
the policy for users.
"""

import math

# Tightening a settled capacity must free at least this many units.
MIN_SETTLE_SAVING = 64
# The reasons that add units (a parameter budget can hold them back).
GROWTH_REASONS = ("grow", "regrow")
# A width counts as settled when its last `settle_after` checks stay within this share of it.
SETTLE_BAND = 0.05
# Widths kept per layer for the settling rule (enough for 6 doublings of `settle_after`).
MAX_WINDOW = 4096
# Capacities the policy picks are multiples of this: matrix kernels on CPU (and tensor cores on
# GPU) handle such sizes best; on JAX/CPU an odd capacity like 269 ran an MLP's matrix products
# about 12% slower than 264 (docs/performance.md).
CAPACITY_MULTIPLE = 8
# A width standing for "more than any limit" (a width parameter whose width is infinite).
UNBOUNDED = 2**53


class CapacityRecord:
    """What the policy remembers about one layer; lives with the layer (its `training_state`), so
    that it carries over from one `fit` call to the next.

    Attributes:
        settled: whether the capacity was tightened around a settled width.
        recent_widths: the widths observed since the last reallocation (oldest first).
        regrowths: how many times the layer grew out of a settled capacity.
    """

    def __init__(self):
        self.settled = False
        self.recent_widths = []
        self.regrowths = 0

    def observe(self, width: int) -> None:
        self.recent_widths.append(int(width))
        del self.recent_widths[:-MAX_WINDOW]

    def reallocated(self, reason: str) -> None:
        """Updates the record after the layer's capacity changed for `reason`."""
        self.recent_widths = []
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
    ):
        self.growth_factor = float(growth_factor)
        self.grow_threshold = float(grow_threshold)
        self.shrink_threshold = float(shrink_threshold)
        self.settle_after = settle_after
        self.settled_headroom = float(settled_headroom)
        self.max_capacity = max_capacity
        self.min_capacity = min_capacity

    def decide(self, layer, record: CapacityRecord, width: int):
        """`(capacity, reason)`: what the policy does with `layer` at `width`.

        `reason` is `"grow"`, `"regrow"`, `"shrink"`, `"settle"` or None (the capacity stays).
        """
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
            if settled and settle_after is not None and len(recent) >= settle_after:
                regrown = self.regrown_capacity(layer, record, width)
                if regrown is not None:
                    return regrown, "regrow"
            return self.reallocated_capacity(layer, width), "grow"
        if width < self.shrink_threshold * capacity:
            target = self.reallocated_capacity(layer, width)
            # At the capacity floor a narrow width is no reason to reallocate.
            return (target, "shrink") if target < capacity else (capacity, None)
        if settle_after is not None and len(recent) >= settle_after:
            window = recent[-settle_after:]
            high = max(window)
            if high - min(window) <= self.settle_band(high):
                target = min(
                    bounded(layer, max(self.settled_capacity(high), self.floor(layer))),
                    self.limit(layer),
                )
                # Tighten only when it saves a fifth of the capacity and more than a few units:
                # each change rebuilds the step, and a few masked units cost less than that.
                if capacity >= 1.25 * target and capacity - target >= MIN_SETTLE_SAVING:
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

    def settled_capacity(self, width: int) -> int:
        """The capacity a layer settled at `width` gets (before its `min_capacity` and
        `max_units` apply): the width plus `max(2, settled_headroom * width)` units, rounded up
        to a multiple of 8."""
        return aligned(width + self.settle_margin(width))

    def regrown_capacity(self, layer, record: CapacityRecord, width: int):
        """The capacity of a settled layer that reached it after staying settled: the width
        plus twice the margin of its previous regrowth (the first: twice the settled margin),
        or None once that margin reaches what `growth_factor` gives (the layer is moving)."""
        margin = self.settle_margin(width) * 2 ** (record.regrowths + 1)
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
