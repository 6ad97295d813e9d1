"""The capacity policy as plain arithmetic: no Keras layer, no model, no backend."""

import types

import numpy as np
import pytest

from keras_awn._engine.capacity_policy import CapacityPolicy
from keras_awn._engine.capacity_policy import CapacityRecord
from keras_awn._engine.capacity_policy import TrainingLedger


def layer(capacity, min_units=1, max_units=None, min_capacity=64):
    """What the policy reads of a layer (a dense layer's floor is 64 units)."""
    return types.SimpleNamespace(
        capacity=capacity, min_units=min_units, max_units=max_units, min_capacity=min_capacity
    )


def record(widths=(), settled=False, regrowths=0):
    result = CapacityRecord()
    result.recent_widths = list(widths)
    result.settled = settled
    result.regrowths = regrowths
    return result


@pytest.mark.parametrize(
    "width,capacity,expected",
    [
        (10, 20, 20),  # inside the band: no change
        (17, 20, 40),  # above 0.8 * capacity: grow to 2 * width = 34, rounded up to 8s
        (25, 20, 56),  # saturated: grow (50, rounded up)
        (4, 20, 8),  # below 0.25 * capacity: shrink to 2 * width
        (5, 20, 20),  # at the shrink threshold: keep
        (60, 64, 64),  # already at max_units=64: no change
        (40, 48, 64),  # growth capped by max_units
    ],
)
def test_growth_and_shrink_arithmetic(width, capacity, expected):
    # The growth arithmetic alone: no capacity floor (see test_capacity_floor).
    policy = CapacityPolicy(min_capacity=1)
    assert policy.decide(layer(capacity, max_units=64), record(), width)[0] == expected


@pytest.mark.parametrize(
    "layer_kwargs,policy_kwargs,width,expected",
    [
        # A dense layer's floor is 64 units.
        ({"capacity": 20}, {}, 17, 64),  # grows to max(2 * 17 -> 40, 64)
        ({"capacity": 20}, {}, 40, 80),  # above the floor: 2 * width
        ({"capacity": 20}, {}, 4, 20),  # "shrinking" to 64 would grow it: no change
        ({"capacity": 400}, {}, 4, 64),  # shrinks to the floor, not to 8
        ({"capacity": 64}, {}, 2, 64),  # at the floor: no change however narrow
        ({"capacity": 20, "max_units": 48}, {}, 17, 48),  # the floor within max_units
        # The policy's own min_capacity applies to every layer.
        ({"capacity": 20}, {"min_capacity": 32}, 17, 40),
        ({"capacity": 400}, {"min_capacity": 32}, 4, 32),
        # A family without a floor (convolution filters, attention heads).
        ({"capacity": 20, "min_capacity": 1}, {}, 17, 40),
    ],
)
def test_capacity_floor(layer_kwargs, policy_kwargs, width, expected):
    policy = CapacityPolicy(**policy_kwargs)
    assert policy.decide(layer(**layer_kwargs), record(), width)[0] == expected


def test_the_floor_yields_to_max_capacity():
    policy = CapacityPolicy(max_capacity=32)
    small = layer(16)
    assert policy.decide(small, record(), 13) == (32, "grow")
    assert not policy.held_at_limit(small, 13)  # 13 units fit in 32
    assert policy.decide(small, record(), 20) == (32, "grow")
    assert policy.held_at_limit(small, 20)  # 20 units would need 40


@pytest.mark.parametrize("width", [5, 17, 100, 131, 1000])
def test_capacities_are_multiples_of_eight(width):
    policy = CapacityPolicy(min_capacity=1)
    grown = policy.decide(layer(4), record(), width)[0]
    assert grown % 8 == 0 and 2 * width <= grown < 2 * width + 8
    margin = max(2, int(np.ceil(policy.settled_headroom * width)))
    settled = policy.settled_capacity(width)
    assert settled % 8 == 0 and width + margin <= settled < width + margin + 8


def test_policy_respects_min_units():
    policy = CapacityPolicy(min_capacity=1)
    assert policy.decide(layer(100, min_units=20), record(), 3)[0] == 20


def test_settled_layer_grows_only_when_its_width_reaches_the_capacity():
    policy = CapacityPolicy(min_capacity=1)
    settled = record(settled=True)
    assert policy.decide(layer(105), settled, 104) == (105, None)  # > 0.8 * 105, but settled
    # Regrows by twice the settled margin: 105 + 2 * max(2, 2% of 105), rounded up to 8s.
    assert policy.decide(layer(105), settled, 105) == (112, "regrow")
    assert policy.decide(layer(105), settled, 20) == (40, "shrink")
    assert policy.decide(layer(105), record(), 104) == (208, "grow")


def test_settling_needs_a_stable_window():
    policy = CapacityPolicy(settle_after=3)
    wide = layer(200)
    # 100 + max(2, 2% of 100), rounded up to 8s.
    assert policy.decide(wide, record([98, 100, 99]), 99) == (104, "settle")
    # The band is max(2, 5%) = 5 units, wider than the margin: a slow drift settles too.
    assert policy.decide(wide, record([95, 100, 99]), 99) == (104, "settle")
    assert policy.decide(wide, record([94, 100, 99]), 99) == (200, None)  # moved too much
    assert policy.decide(wide, record([100, 100]), 100) == (200, None)  # not enough checks
    # However little it frees: whether that pays for a rebuild is the ledger's question.
    assert policy.decide(layer(80), record([40, 40, 40]), 40) == (64, "settle")
    assert policy.decide(layer(64), record([40, 40, 40]), 40) == (64, None)  # the floor
    # After growing out of a settled capacity, settling waits twice as long.
    assert policy.decide(wide, record([100] * 5, regrowths=1), 100) == (200, None)
    assert policy.decide(wide, record([100] * 6, regrowths=1), 100) == (104, "settle")


def test_a_settled_layer_regrows_by_doubling_margins_then_moves():
    policy = CapacityPolicy(settle_after=3)
    # The width plus twice the settled margin (2 * max(2, 2% of 208) = 10), rounded up to 8s;
    # the layer stays settled, however soon after settling it reached its capacity.
    assert policy.decide(layer(208), record([207, 208], settled=True), 208) == (224, "regrow")
    assert policy.decide(layer(208), record([206, 207, 208], settled=True), 208) == (224, "regrow")
    # Each regrowth doubles the margin.
    once = dict(settled=True, regrowths=1)
    assert policy.decide(layer(224), record([224] * 6, **once), 224) == (248, "regrow")
    # Once the doubled margin reaches growth_factor * width, it grows as a moving layer.
    many = record([224] * (3 * 2**6), settled=True, regrowths=6)  # margin 5 * 2**7 = 640
    assert policy.decide(layer(224), many, 224) == (448, "grow")


def test_the_record_follows_reallocations():
    kept = record([10, 11], settled=True)
    kept.reallocated("regrow")
    assert (kept.settled, kept.regrowths, kept.recent_widths) == (True, 1, [])
    kept.reallocated("grow")
    assert (kept.settled, kept.regrowths) == (False, 2)
    kept.reallocated("settle")
    assert (kept.settled, kept.regrowths) == (True, 2)
    kept.reallocated("shrink")
    assert (kept.settled, kept.regrowths) == (False, 2)


def test_moving_layers_past_halfway_grow_early():
    policy = CapacityPolicy()  # halfway between 1/2 and 0.8 of the capacity: 0.65
    assert policy.grows_early(layer(100), record(), 66)
    assert not policy.grows_early(layer(100), record(), 65)
    assert not policy.grows_early(layer(100), record(settled=True), 79)
    assert not policy.grows_early(layer(100, max_units=100), record(), 79)


@pytest.mark.parametrize("width", [3, 1000, 2**53])
def test_no_capacity_stays_above_max_capacity(width):
    """A layer built wider than the limit (`AdaptiveDense(10**6)`) is cut to it, whatever its
    width asks for; widths beyond it are held there."""
    policy = CapacityPolicy(max_capacity=256)
    assert policy.decide(layer(2 * 10**6), record(), width) == (256, "shrink")
    assert policy.decide(layer(256), record(), width)[0] <= 256


# -- The amortized rule, by simulation ------------------------------------------------------------
#
# One layer whose step time is proportional to its capacity (as a dense layer's matrix products
# are), a fixed rebuild cost, and the width observed at each check. The policy and the ledger run
# as the controller runs them; the simulation books what training would pay.

CHECK_EVERY = 8
UNIT_SECONDS = 1e-5  # one allocated unit's share of a step, in seconds
REBUILD_SECONDS = 2.0  # about 700 steps at 300 units: a JAX recompilation on CPU


def simulate(widths, amortized=True, start_capacity=None, policy_kwargs=None):
    """Runs the policy on `widths` (one per check); returns what happened. `amortized=False`:
    the policy before the amortized rule (free reductions, no economic margin)."""
    policy = CapacityPolicy(**(policy_kwargs or {}))
    model = layer(start_capacity or 2 * widths[0])
    record, ledger = CapacityRecord(), TrainingLedger(rebuild_seconds=REBUILD_SECONDS)
    events, masked_total = [], 0.0
    for check, width in enumerate(widths):
        step = UNIT_SECONDS * model.capacity
        record.observe(width, ledger.steps + CHECK_EVERY)
        margin = None
        if amortized:
            margin = policy.economic_margin(record, REBUILD_SECONDS, UNIT_SECONDS)
        target, reason = policy.decide(model, record, width, margin)
        reduction = reason in ("shrink", "settle")
        removable = 1.0 - target / model.capacity if reduction else 0.0
        ledger.trained(CHECK_EVERY, CHECK_EVERY * step, removable)
        ledger.steps += CHECK_EVERY
        masked_total += CHECK_EVERY * step * (1.0 - min(width, model.capacity) / model.capacity)
        if reduction and amortized and not ledger.reduction_paid(policy.payback):
            continue
        if target != model.capacity:
            events.append((check, reason, model.capacity, target, ledger.masked_seconds))
            model.capacity = target
            record.reallocated(reason)
            ledger.rebuilt()
    rebuild_total = REBUILD_SECONDS * len(events)
    return types.SimpleNamespace(
        events=events,
        masked=masked_total,
        rebuilds=rebuild_total,
        cost=masked_total + rebuild_total,
    )


def trajectories():
    """Width per check (2,000 checks = 16,000 steps) for each kind of training."""
    rng = np.random.default_rng(0)
    t = np.arange(2000)
    return {
        "monotone growth": np.round(8 * (1000 / 8) ** (t / 1999)),
        # The issue's case: 256 -> 356 units over the first 800 steps, then a creep to 456.
        "drift up": np.round(256 + 100 * np.minimum(t / 100, 1) + 100 * t / 1999),
        "drift up and down": np.round(256 + 60 * np.sin(2 * np.pi * t / 1500)),
        "shrinking": np.round(1000 * (50 / 1000) ** (t / 1999)),
        "noisy plateau": np.round(300 + rng.normal(0, 4, t.size)),
        # Around the settled capacity of 100 units (104): in and out of it every 20 checks.
        "oscillation": np.where((t // 20) % 2 == 0, 100, 106),
    }


TRAJECTORIES = trajectories()


@pytest.mark.parametrize("name", list(TRAJECTORIES))
def test_reductions_are_paid_for_by_the_masked_compute_before_them(name):
    """Bound 1: each rebuild that only removes units follows at least one rebuild's worth of
    masked compute, so together they cost at most the masked compute paid."""
    run = simulate([int(w) for w in TRAJECTORIES[name]])
    reductions = [e for e in run.events if e[1] in ("shrink", "settle")]
    assert all(paid >= REBUILD_SECONDS for *_, paid in reductions), reductions
    assert REBUILD_SECONDS * len(reductions) <= run.masked


@pytest.mark.parametrize("name", list(TRAJECTORIES))
def test_growths_between_two_reductions_are_logarithmic(name):
    """Bound 2: between two reductions a layer grows at most log_{g * theta}(largest / smallest
    capacity) times as a moving layer, plus the regrowths whose margins double up to g."""
    policy = CapacityPolicy()
    run = simulate([int(w) for w in TRAJECTORIES[name]])
    capacities = [e[3] for e in run.events] + [run.events[0][2]] if run.events else [1]
    moving = np.log(max(capacities) / min(capacities)) / np.log(
        policy.growth_factor * policy.grow_threshold
    )
    regrowths = np.log2((policy.growth_factor - 1) / (2 * policy.settled_headroom))
    bound = int(np.ceil(moving)) + int(np.ceil(regrowths)) + 1
    chain = longest = 0
    for _, reason, *_ in run.events:
        chain = chain + 1 if reason in ("grow", "regrow") else 0
        longest = max(longest, chain)
    assert longest <= bound, run.events


@pytest.mark.parametrize("name", ["drift up", "drift up and down", "noisy plateau", "oscillation"])
def test_drifting_widths_do_not_thrash(name):
    """Against the same policy with free reductions (what thrashed): no more rebuilds."""
    widths = [int(w) for w in TRAJECTORIES[name]]
    amortized, eager = simulate(widths), simulate(widths, amortized=False)
    assert len(amortized.events) <= len(eager.events)


def test_the_drift_of_the_issue_costs_a_handful_of_rebuilds():
    """256 -> 356 units over 800 steps, then creeping on, with a rebuild worth 700 steps: the
    free-reduction policy settles, grows, settles again and regrows; the amortized one pays
    fewer rebuilds and less in total."""
    widths = [int(w) for w in TRAJECTORIES["drift up"]]
    amortized, eager = simulate(widths), simulate(widths, amortized=False)
    assert len(eager.events) >= 5, eager.events
    assert len(amortized.events) <= 3, amortized.events
    assert amortized.cost < eager.cost
    # Its overhead over what the widths themselves cost stays small.
    used = sum(CHECK_EVERY * UNIT_SECONDS * w for w in widths)
    assert amortized.cost <= 0.25 * used


def test_the_economic_margin_balances_rebuilds_against_masked_units():
    """h = sqrt(2 R v / c): with R = 0.5 s, a drift of 1 unit per 10 steps and 1e-5 s per
    masked unit per step, h = 100 units, which last 1,000 steps and mask 50 units on average:
    0.5 s, one rebuild's worth."""
    policy = CapacityPolicy()
    drifting = record([200, 210])
    drifting.recent_steps = [0, 100]
    margin = policy.economic_margin(drifting, 0.5, 1e-5)
    assert margin == pytest.approx(100.0)
    assert (margin / 0.1) * (margin / 2) * 1e-5 == pytest.approx(0.5)
    # A regrowth keeps at least that margin (204 + 100, rounded up to 8s)...
    settled = record([200] * 16, settled=True)
    settled.recent_steps = list(range(0, 1600, 100))
    assert policy.decide(layer(204), settled, 204, economic_margin=100.0) == (304, "regrow")
    # ...but never more than growth_factor gives: then it grows as a moving layer.
    assert policy.decide(layer(204), settled, 204, economic_margin=400.0) == (408, "grow")
    # Given as a function, the margin is measured only when a regrowth or a settling uses it.
    calls = []
    measured = lambda: calls.append(1) or 100.0  # noqa: E731
    assert policy.decide(layer(400), record([204]), 204, economic_margin=measured) == (400, None)
    assert calls == []
    assert policy.decide(layer(204), settled, 204, economic_margin=measured) == (304, "regrow")
    assert calls == [1]
    assert policy.economic_margin(record([200, 190]), 0.5, 1e-5) is None  # no steps known
    shrinking = record([200, 190])
    shrinking.recent_steps = [0, 100]
    assert not policy.economic_margin(shrinking, 0.5, 1e-5)  # not growing


def test_the_ledger_weighs_masked_compute_against_measured_rebuilds():
    ledger = TrainingLedger()
    # Nothing compiled yet: a rebuild now costs nothing.
    assert ledger.reduction_paid(1.0)
    ledger.steps = 10
    ledger.trained(10, 0.1, masked_share=0.5)
    assert ledger.step_seconds == pytest.approx(0.01) and ledger.masked_seconds == 0.05
    assert not ledger.reduction_paid(1.0)  # steps ran, no rebuild measured: unknown cost
    assert ledger.reduction_paid(1.0, rebuild_seconds=0.05)  # a given cost
    ledger.pending_compile_seconds = 0.21  # a step compiled anew: 0.2 s over a normal step
    ledger.settle_compile_seconds()
    ledger.pending_compile_seconds = 0.015  # compiled nothing (a shape seen before): ignored
    ledger.settle_compile_seconds()
    ledger.compiled(0.4)  # moving average
    assert ledger.rebuild_seconds == pytest.approx(0.3)
    ledger.trained(100, 0.6, masked_share=0.5)
    assert ledger.masked_seconds == pytest.approx(0.35) and ledger.reduction_paid(1.0)
    assert not ledger.reduction_paid(2.0)
    ledger.rebuilt()
    assert ledger.masked_seconds == 0.0 and ledger.rebuilds == 1
    ledger.trained(5, 1.0, masked_share=7.0)  # shares are clamped to [0, 1]
    assert ledger.masked_seconds == 1.0


def test_searching_takes_at_most_its_budget_of_the_training_time():
    ledger = TrainingLedger()
    ledger.steps = 7
    assert not ledger.search_due(8)  # counted from the model's first step
    ledger.steps = 8
    assert ledger.search_due(8)
    ledger.searched(seconds=9.0)  # the first search compiles the probe's programs: not counted
    ledger.steps = 16
    assert ledger.search_due(8, budget=1.0)
    ledger.searched(seconds=2.0)  # a search of 2 s
    ledger.steps = 200
    ledger.seconds_since_search = 1.5
    assert ledger.search_due(8, budget=None)  # the interval alone
    assert not ledger.search_due(8, budget=1.0)  # 1.5 s of training < 2 s of search
    assert ledger.search_due(8, budget=2.0)  # searching may take twice the training time
    ledger.seconds_since_search = 2.0
    assert ledger.search_due(8, budget=1.0)
    assert not ledger.search_due(500, budget=1.0)  # and the interval still applies
