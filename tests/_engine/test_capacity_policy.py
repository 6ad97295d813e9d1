"""The capacity policy as plain arithmetic: no Keras layer, no model, no backend."""

import types

import numpy as np
import pytest

from keras_awn._engine.capacity_policy import CapacityPolicy
from keras_awn._engine.capacity_policy import CapacityRecord


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
    assert policy.decide(layer(105), settled, 105) == (216, "grow")  # 210 rounded up to 8s
    assert policy.decide(layer(105), settled, 20) == (40, "shrink")
    assert policy.decide(layer(105), record(), 104) == (208, "grow")


def test_settling_needs_a_stable_window_and_a_real_saving():
    policy = CapacityPolicy(settle_after=3)
    wide = layer(200)
    # 100 + max(2, 2% of 100), rounded up to 8s.
    assert policy.decide(wide, record([98, 100, 99]), 99) == (104, "settle")
    # The band is max(2, 5%) = 5 units, wider than the margin: a slow drift settles too.
    assert policy.decide(wide, record([95, 100, 99]), 99) == (104, "settle")
    assert policy.decide(wide, record([94, 100, 99]), 99) == (200, None)  # moved too much
    assert policy.decide(wide, record([100, 100]), 100) == (200, None)  # not enough checks
    assert policy.decide(layer(80), record([40, 40, 40]), 40) == (80, None)  # frees 16 only
    # After growing out of a settled capacity, settling waits twice as long.
    assert policy.decide(wide, record([100] * 5, regrowths=1), 100) == (200, None)
    assert policy.decide(wide, record([100] * 6, regrowths=1), 100) == (104, "settle")


def test_a_settled_layer_regrows_by_doubling_margins_then_moves():
    policy = CapacityPolicy(settle_after=3)
    # Reached the capacity soon after settling (fewer than settle_after checks): it is moving.
    assert policy.decide(layer(208), record([207, 208], settled=True), 208) == (416, "grow")
    # Stayed settled for settle_after checks: the width plus twice the settled margin
    # (2 * max(2, 2% of 208) = 10), rounded up to 8s; the layer stays settled.
    assert policy.decide(layer(208), record([206, 207, 208], settled=True), 208) == (224, "regrow")
    # Each regrowth doubles the margin and the checks the layer must wait first.
    once = dict(settled=True, regrowths=1)
    assert policy.decide(layer(224), record([224] * 5, **once), 224) == (448, "grow")
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
