"""WidthController: the capacity policy, its arguments, growth during fit, and the width warm-up."""

import keras
import numpy as np
import pytest
from keras import ops

import keras_awn
from keras_awn.callbacks import WidthController
from tests import helpers


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
def test_capacity_policy(width, capacity, expected):
    # The growth arithmetic alone: no capacity floor (see test_capacity_floor).
    layer = keras_awn.layers.AdaptiveDense(8, capacity=capacity, max_units=64)
    assert WidthController(min_capacity=1).target_capacity(layer, width) == expected


@pytest.mark.parametrize(
    "layer_kwargs,controller_kwargs,width,expected",
    [
        # A dense layer's floor is 64 units.
        ({"capacity": 20}, {}, 17, 64),  # grows to max(2 * 17 -> 40, 64)
        ({"capacity": 20}, {}, 40, 80),  # above the floor: 2 * width
        ({"capacity": 20}, {}, 4, 20),  # "shrinking" to 64 would grow it: no change
        ({"capacity": 400}, {}, 4, 64),  # shrinks to the floor, not to 8
        ({"capacity": 64}, {}, 2, 64),  # at the floor: no change however narrow
        ({"capacity": 20, "max_units": 48}, {}, 17, 48),  # the floor within max_units
        # A controller's own min_capacity applies to every layer.
        ({"capacity": 20}, {"min_capacity": 32}, 17, 40),
        ({"capacity": 400}, {"min_capacity": 32}, 4, 32),
    ],
)
def test_capacity_floor(layer_kwargs, controller_kwargs, width, expected):
    layer = keras_awn.layers.AdaptiveDense(8, **layer_kwargs)
    assert WidthController(**controller_kwargs).target_capacity(layer, width) == expected


def test_the_floor_yields_to_max_capacity_without_a_warning():
    import warnings

    layer = keras_awn.layers.AdaptiveDense(8, capacity=16)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # 13 units fit in 32: nothing to warn about
        assert WidthController(max_capacity=32).target_capacity(layer, 13) == 32
    with pytest.warns(UserWarning, match="asks for 20 units"):
        assert WidthController(max_capacity=32).target_capacity(layer, 20) == 32


def test_default_capacity_has_the_family_floor():
    dense = keras_awn.layers.AdaptiveDense
    assert dense(8).capacity == 64 and dense(40).capacity == 80
    assert dense(8, max_units=20).capacity == 20
    assert dense(8, capacity=12).capacity == 12  # an explicit capacity is kept
    # Convolution filters and attention heads have no floor: twice the initial width.
    assert keras_awn.layers.AdaptiveConv2D(8, 3).capacity == 16
    assert keras_awn.layers.AdaptiveMultiHeadAttention(2, key_dim=4).capacity == 4
    conv = keras_awn.layers.AdaptiveConv2D(8, 3, capacity=20)
    assert WidthController().target_capacity(conv, 17) == 40


@pytest.mark.parametrize("width", [5, 17, 100, 131, 1000])
def test_controller_capacities_are_multiples_of_eight(width):
    controller = WidthController(min_capacity=1)
    grown = controller.target_capacity(keras_awn.layers.AdaptiveDense(4, capacity=4), width)
    assert grown % 8 == 0 and 2 * width <= grown < 2 * width + 8
    margin = max(2, int(np.ceil(controller.settled_headroom * width)))
    settled = controller.settled_capacity(width)
    assert settled % 8 == 0 and width + margin <= settled < width + margin + 8


def test_policy_respects_min_units():
    layer = keras_awn.layers.AdaptiveDense(20, capacity=100, min_units=20)
    assert WidthController(min_capacity=1).target_capacity(layer, 3) == 20


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"num_examples": 0}, "num_examples=0"),
        ({"check_every": 0}, "check_every=0"),
        ({"growth_factor": 1.0}, "growth_factor=1.0"),
        ({"grow_threshold": 0.0}, "grow_threshold=0.0"),
        ({"shrink_threshold": 0.6}, "shrink_threshold=0.6"),
        ({"verbose": 2}, "verbose=2"),
        ({"width_warmup_epochs": -1}, "width_warmup_epochs=-1"),
        ({"settle_after": 1}, "settle_after=1"),
        ({"settle_after": 2.5}, "settle_after=2.5"),
        ({"settled_headroom": 1.0}, "settled_headroom=1.0"),
        ({"settled_headroom": -0.1}, "settled_headroom=-0.1"),
        ({"min_capacity": 0}, "min_capacity=0"),
        ({"min_capacity": 8.0}, "min_capacity=8.0"),
        ({"min_capacity": True}, "min_capacity=True"),
    ],
)
def test_controller_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        WidthController(**kwargs)


def test_controller_grows_capacity_during_fit():
    x, y = helpers.spiral_data(256)
    model = helpers.compile_classifier(helpers.sequential_model(initial_units=(4, 4)))
    # Start both layers too narrow for their width (default capacity 64, the floor) so that
    # the controller must grow them.
    controller = WidthController(check_every=2)
    model.build((None, 2))
    for layer in keras_awn.graph.adaptive_layers(model):
        layer.width_parameter.assign(layer.distribution.raw_for_width(60, layer.quantile))
    model.fit(x, y, batch_size=32, epochs=2, verbose=0, callbacks=[controller])
    assert controller.reallocations, "the controller never reallocated"
    assert controller.rebuilds >= 1
    for layer in keras_awn.graph.adaptive_layers(model):
        assert layer.capacity >= layer.desired_units
        assert layer.capacity > 64
    # The model keeps training after the reallocations.
    history = model.fit(x, y, batch_size=32, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][-1])


class WidthParameterLog(keras.callbacks.Callback):
    """Records every adaptive layer's width parameter at the end of each epoch."""

    def __init__(self):
        super().__init__()
        self.values = []

    def on_epoch_end(self, epoch, logs=None):
        layers = keras_awn.graph.adaptive_layers(self.model)
        self.values.append([float(ops.convert_to_numpy(l.width_parameter)) for l in layers])


def test_width_warmup_freezes_the_width_then_releases_it():
    x, y = helpers.spiral_data(256)
    model = helpers.compile_classifier(helpers.sequential_model(initial_units=(8, 8)))
    model.build((None, 2))
    start = [float(ops.convert_to_numpy(l.width_parameter)) for l in model.layers[:2]]
    log = WidthParameterLog()
    controller = WidthController(width_warmup_epochs=2)
    model.fit(x, y, batch_size=32, epochs=4, verbose=0, callbacks=[controller, log])
    # Frozen during epochs 0 and 1 (the weights trained meanwhile), moving afterwards.
    assert log.values[0] == start and log.values[1] == start
    assert log.values[3] != start
    # The release is undone at the end of fit: a later fit trains the width from its first step.
    assert not any(layer._width_frozen for layer in model.layers[:2])
    model.fit(x, y, batch_size=32, epochs=1, verbose=0, callbacks=[WidthController(), log])
    assert log.values[-1] != log.values[3]


def test_settled_width_tightens_the_capacity_once_and_survives_a_new_fit():
    x, y = helpers.spiral_data(256)
    model = helpers.compile_classifier(helpers.sequential_model(initial_units=(100, 100)))
    # The width is frozen for the whole fit, so it is settled from the first check on.
    controller = WidthController(check_every=1, settle_after=4, width_warmup_epochs=10)
    model.fit(x, y, batch_size=32, epochs=2, verbose=0, callbacks=[controller])
    layers = keras_awn.graph.adaptive_layers(model)
    widths = [layer.desired_units for layer in layers]
    # Default capacity 200; settled band top = width, margin max(2, 2% of 100) = 2, and 102
    # rounded up to a multiple of 8.
    assert widths == [100, 100]
    assert [layer.capacity for layer in layers] == [104, 104]
    assert [e["reason"] for e in controller.reallocations] == ["settle", "settle"]
    assert controller.rebuilds == 1  # both layers in one reallocation
    # The fourth decision: at the start of training, then before steps 2, 3 and 4. Inside an
    # epoch each check decides on the widths read at the previous one; the check before step 1
    # only reads.
    assert all(e["step"] == 4 for e in controller.reallocations)
    # A new fit (a new controller) keeps the tightened capacity while the width stays put,
    # although the width is above grow_threshold * capacity.
    again = WidthController(check_every=1, settle_after=4, width_warmup_epochs=10)
    model.fit(x, y, batch_size=32, epochs=1, verbose=0, callbacks=[again])
    assert again.reallocations == []


def test_settled_layer_grows_only_when_its_width_reaches_the_capacity():
    layer = keras_awn.layers.AdaptiveDense(100, capacity=105)
    controller = WidthController(min_capacity=1)
    layer._capacity_settled = True
    assert controller._decide(layer, 104) == (105, None)  # 104 > 0.8 * 105, but settled
    assert controller._decide(layer, 105) == (216, "grow")  # 210 rounded up to 8s
    assert controller._decide(layer, 20) == (40, "shrink")
    layer._capacity_settled = False
    assert controller._decide(layer, 104) == (208, "grow")


def test_settling_needs_a_stable_window_and_a_real_saving():
    controller = WidthController(settle_after=3)
    wide = keras_awn.layers.AdaptiveDense(100, capacity=200)
    controller._recent_widths[id(wide)] = [98, 100, 99]
    assert controller._decide(wide, 99) == (104, "settle")  # 100 + max(2, 2% of 100), to 8s
    # The band is max(2, 5%) = 5 units, wider than the margin: a slow drift settles too.
    controller._recent_widths[id(wide)] = [95, 100, 99]
    assert controller._decide(wide, 99) == (104, "settle")
    controller._recent_widths[id(wide)] = [94, 100, 99]  # moved by more than the band
    assert controller._decide(wide, 99) == (200, None)
    controller._recent_widths[id(wide)] = [100, 100]  # not enough checks yet
    assert controller._decide(wide, 100) == (200, None)
    small = keras_awn.layers.AdaptiveDense(40, capacity=80)
    controller._recent_widths[id(small)] = [40, 40, 40]
    assert controller._decide(small, 40) == (80, None)  # would free only 16 units
    # After growing out of a settled capacity, settling waits twice as long.
    controller._regrowths[id(wide)] = 1
    controller._recent_widths[id(wide)] = [100] * 5
    assert controller._decide(wide, 100) == (200, None)
    controller._recent_widths[id(wide)] = [100] * 6
    assert controller._decide(wide, 100) == (104, "settle")


def test_a_settled_layer_regrows_by_doubling_margins_then_moves():
    controller = WidthController(settle_after=3)
    layer = keras_awn.layers.AdaptiveDense(200, capacity=208)
    layer._capacity_settled = True
    # Reached the capacity soon after settling (fewer than settle_after checks): it is moving.
    controller._recent_widths[id(layer)] = [207, 208]
    assert controller._decide(layer, 208) == (416, "grow")
    # Stayed settled for settle_after checks: the width plus twice the settled margin
    # (2 * max(2, 2% of 208) = 10), rounded up to 8s; the layer stays settled.
    controller._recent_widths[id(layer)] = [206, 207, 208]
    assert controller._decide(layer, 208) == (224, "regrow")
    # Each regrowth doubles the margin and the checks the layer must wait first.
    controller._regrowths[id(layer)] = 1
    layer.capacity = 224
    controller._recent_widths[id(layer)] = [224] * 5
    assert controller._decide(layer, 224) == (448, "grow")  # only 5 of 6 checks
    controller._recent_widths[id(layer)] = [224] * 6
    assert controller._decide(layer, 224) == (248, "regrow")  # 224 + 4 * 5 = 244
    # Once the doubled margin reaches growth_factor * width, it grows as a moving layer.
    controller._regrowths[id(layer)] = 6  # margin 5 * 2**7 = 640 > 224
    controller._recent_widths[id(layer)] = [224] * (3 * 2**6)
    assert controller._decide(layer, 224) == (448, "grow")


def test_a_regrown_layer_stays_settled_and_keeps_its_outputs():
    x, y = helpers.spiral_data(256)
    model = helpers.compile_classifier(helpers.sequential_model(initial_units=(100, 100)))
    model.build((None, 2))
    first, second = keras_awn.graph.adaptive_layers(model)
    controller = WidthController(check_every=1, settle_after=2, width_warmup_epochs=10)
    model.fit(x, y, batch_size=64, epochs=1, verbose=0, callbacks=[controller])
    assert [layer.capacity for layer in (first, second)] == [104, 104]
    # A new controller watches the settled layers for settle_after checks; then the first
    # layer's width drifts up to its capacity.
    controller = WidthController(num_examples=len(x), check_every=1, settle_after=2)
    controller.set_model(model)
    controller.on_train_begin()
    first.width_parameter.assign(first.distribution.raw_for_width(104, first.quantile))
    before = ops.convert_to_numpy(model(x[:16]))
    controller._check(model)
    events = [(e["layer"], e["reason"], e["new_capacity"]) for e in controller.reallocations]
    # 104 + 2 * max(2, 2% of 104) = 110, to 8s.
    assert events == [(first.name, "regrow", 112)]
    assert first._capacity_settled and second._capacity_settled
    assert second.input_spec.axes[-1] == 112
    np.testing.assert_allclose(ops.convert_to_numpy(model(x[:16])), before, rtol=1e-5, atol=1e-6)
    controller.on_train_end()


def test_a_rebuild_also_grows_layers_halfway_to_their_threshold():
    x, y = helpers.spiral_data(256)
    model = helpers.compile_classifier(helpers.sequential_model(initial_units=(8, 8), capacity=16))
    model.build((None, 2))
    first, second = keras_awn.graph.adaptive_layers(model)
    first.width_parameter.assign(first.distribution.raw_for_width(14, first.quantile))  # > 0.8
    second.width_parameter.assign(second.distribution.raw_for_width(11, second.quantile))  # > 0.65
    controller = WidthController(width_warmup_epochs=5, min_capacity=1)  # widths stay put
    model.fit(x, y, batch_size=32, epochs=1, verbose=0, callbacks=[controller])
    assert controller.rebuilds == 1
    assert (first.capacity, second.capacity) == (32, 24)  # 2 * width, rounded up to 8s
    # Below halfway (0.65 * 16 = 10.4), a layer is left alone.
    model = helpers.compile_classifier(helpers.sequential_model(initial_units=(8, 8), capacity=16))
    model.build((None, 2))
    first, second = keras_awn.graph.adaptive_layers(model)
    first.width_parameter.assign(first.distribution.raw_for_width(14, first.quantile))
    second.width_parameter.assign(second.distribution.raw_for_width(10, second.quantile))
    controller = WidthController(width_warmup_epochs=5, min_capacity=1)
    model.fit(x, y, batch_size=32, epochs=1, verbose=0, callbacks=[controller])
    assert (first.capacity, second.capacity) == (32, 16)


def test_a_frozen_adaptive_layer_keeps_its_width_while_the_others_train():
    # A frozen layer's width parameter is not trainable: the checks inside an epoch read it from
    # the non-trainable part of the running state (on JAX the variables themselves are purged).
    x, y = helpers.spiral_data(256)
    model = helpers.sequential_model(initial_units=(8, 8))
    model.build((None, 2))
    frozen, training = keras_awn.graph.adaptive_layers(model)
    frozen.trainable = False
    model = helpers.compile_classifier(model)
    before = [float(ops.convert_to_numpy(l.width_parameter)) for l in (frozen, training)]
    controller = WidthController(check_every=2)
    history = model.fit(x, y, batch_size=32, epochs=2, verbose=0, callbacks=[controller])
    after = [float(ops.convert_to_numpy(l.width_parameter)) for l in (frozen, training)]
    assert after[0] == before[0]
    assert after[1] != before[1]
    assert history.history[f"{frozen.name}_width"] == [frozen.active_units] * 2
    assert np.all(np.isfinite(history.history["loss"]))


def test_current_values_match_the_synced_model_mid_epoch():
    x, y = helpers.spiral_data(256)
    model = helpers.compile_classifier(helpers.sequential_model(initial_units=(8, 8)))
    seen = []

    class Compare(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            if batch in (3, 5):
                variables = [l.width_parameter for l in keras_awn.graph.adaptive_layers(self._model)]
                if batch == 3:
                    requested.append(keras_awn.reallocation.request_values(self._model, variables))
                running = keras_awn.reallocation.current_values(self._model, variables)
                self.model  # on JAX, reading `callback.model` syncs the running state
                synced = [ops.convert_to_numpy(v) for v in variables]
                seen.append((running, synced))

    requested = []
    model.fit(x, y, batch_size=32, epochs=1, verbose=0, callbacks=[Compare()])
    assert len(seen) == 2
    for running, synced in seen:
        np.testing.assert_array_equal(np.array(running), np.array(synced))
    # The width parameters moved between the two batches, so the values are not stale.
    assert not np.array_equal(np.array(seen[0][0]), np.array(seen[1][0]))
    # Values requested at batch 3 and read after the fit (on JAX, after later steps donated
    # the buffers they were requested from) are those of batch 3.
    np.testing.assert_array_equal(np.array(requested[0]()), np.array(seen[0][1]))
