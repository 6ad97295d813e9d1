"""WidthController: its arguments, growth during fit, settling, and the width warm-up (the
policy's arithmetic alone: tests/_engine/test_capacity_policy.py)."""

import keras
import numpy as np
import pytest
from keras import ops

import keras_awn
from keras_awn.callbacks import WidthController
from keras_awn._engine import topology
from keras_awn._engine import training_state
from tests import helpers


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
        ({"rebuild_cost": -1}, "rebuild_cost=-1"),
        ({"rebuild_cost": float("inf")}, "rebuild_cost=inf"),
        ({"rebuild_cost": "fast"}, "rebuild_cost='fast'"),
        ({"search_budget": 0}, "search_budget=0"),
        ({"search_budget": float("nan")}, "search_budget=nan"),
    ],
)
def test_controller_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        WidthController(**kwargs)


def test_a_growth_held_at_max_capacity_warns_once_naming_the_layer():
    x, y = helpers.spiral_data(64)
    model = helpers.compile_classifier(helpers.sequential_model(initial_units=(8, 8)))
    model.build((None, 2))
    first = model.layers[0]
    first.width_parameter.assign(first.distribution.raw_for_width(40, first.quantile))
    controller = WidthController(max_capacity=32, width_warmup_epochs=1)
    with pytest.warns(UserWarning, match=f"'{first.name}' asks for 40 units") as caught:
        model.fit(x, y, epochs=1, verbose=0, callbacks=[controller])
    assert first.capacity == 32
    assert sum("asks for" in str(w.message) for w in caught) == 1


def test_controller_grows_capacity_during_fit():
    x, y = helpers.spiral_data(256)
    model = helpers.compile_classifier(helpers.sequential_model(initial_units=(4, 4)))
    # Start both layers too narrow for their width (default capacity 64, the floor) so that
    # the controller must grow them. No search: the capacity policy alone follows the width.
    controller = WidthController(check_every=2, search_every=None)
    model.build((None, 2))
    for layer in topology.adaptive_layers(model):
        layer.width_parameter.assign(layer.distribution.raw_for_width(60, layer.quantile))
    model.fit(x, y, batch_size=32, epochs=2, verbose=0, callbacks=[controller])
    assert controller.reallocations, "the controller never reallocated"
    assert controller.rebuilds >= 1
    for layer in topology.adaptive_layers(model):
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
        layers = topology.adaptive_layers(self.model)
        self.values.append([float(ops.convert_to_numpy(l.width_parameter)) for l in layers])


def test_width_warmup_freezes_the_width_then_releases_it():
    x, y = helpers.spiral_data(256)
    model = helpers.compile_classifier(
        helpers.sequential_model(initial_units=(8, 8), width_learning="gradient")
    )
    model.build((None, 2))
    start = [float(ops.convert_to_numpy(l.width_parameter)) for l in model.layers[:2]]
    log = WidthParameterLog()
    controller = WidthController(width_warmup_epochs=2)
    model.fit(x, y, batch_size=32, epochs=4, verbose=0, callbacks=[controller, log])
    # Frozen during epochs 0 and 1 (the weights trained meanwhile), moving afterwards.
    assert log.values[0] == start and log.values[1] == start
    assert log.values[3] != start
    # The release is undone at the end of fit: a later fit trains the width from its first step.
    assert not any(layer.training_state.width_frozen for layer in model.layers[:2])
    model.fit(x, y, batch_size=32, epochs=1, verbose=0, callbacks=[WidthController(), log])
    assert log.values[-1] != log.values[3]


def test_settled_width_tightens_the_capacity_once_and_survives_a_new_fit():
    x, y = helpers.spiral_data(256)
    model = helpers.compile_classifier(helpers.sequential_model(initial_units=(100, 100)))
    # The width is frozen for the whole fit, so it is settled from the first check on; a
    # rebuild is counted as free (the measured cost: test_a_reduction_waits_until_...).
    controller = WidthController(
        check_every=1, settle_after=4, width_warmup_epochs=10, rebuild_cost=0
    )
    model.fit(x, y, batch_size=32, epochs=2, verbose=0, callbacks=[controller])
    layers = topology.adaptive_layers(model)
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
    again = WidthController(check_every=1, settle_after=4, width_warmup_epochs=10, rebuild_cost=0)
    model.fit(x, y, batch_size=32, epochs=1, verbose=0, callbacks=[again])
    assert again.reallocations == []


def test_a_regrown_layer_stays_settled_and_keeps_its_outputs():
    x, y = helpers.spiral_data(256)
    model = helpers.compile_classifier(helpers.sequential_model(initial_units=(100, 100)))
    model.build((None, 2))
    first, second = topology.adaptive_layers(model)
    controller = WidthController(
        check_every=1, settle_after=2, width_warmup_epochs=10, rebuild_cost=0
    )
    model.fit(x, y, batch_size=64, epochs=1, verbose=0, callbacks=[controller])
    assert [layer.capacity for layer in (first, second)] == [104, 104]
    # A new controller watches the settled layers for settle_after checks; then the first
    # layer's width drifts up to its capacity.
    controller = WidthController(
        num_examples=len(x), check_every=1, settle_after=2, rebuild_cost=0
    )
    controller.set_model(model)
    controller.on_train_begin()
    first.width_parameter.assign(first.distribution.raw_for_width(104, first.quantile))
    before = ops.convert_to_numpy(model(x[:16]))
    controller._check(model)
    events = [(e["layer"], e["reason"], e["new_capacity"]) for e in controller.reallocations]
    # 104 + 2 * max(2, 2% of 104) = 110, to 8s.
    assert events == [(first.name, "regrow", 112)]
    assert first.training_state.capacity.settled and second.training_state.capacity.settled
    assert second.input_spec.axes[-1] == 112
    np.testing.assert_allclose(ops.convert_to_numpy(model(x[:16])), before, rtol=1e-5, atol=1e-6)
    controller.on_train_end()


def test_a_rebuild_also_grows_layers_halfway_to_their_threshold():
    x, y = helpers.spiral_data(256)
    model = helpers.compile_classifier(helpers.sequential_model(initial_units=(8, 8), capacity=16))
    model.build((None, 2))
    first, second = topology.adaptive_layers(model)
    first.width_parameter.assign(first.distribution.raw_for_width(14, first.quantile))  # > 0.8
    second.width_parameter.assign(second.distribution.raw_for_width(11, second.quantile))  # > 0.65
    controller = WidthController(width_warmup_epochs=5, min_capacity=1)  # widths stay put
    model.fit(x, y, batch_size=32, epochs=1, verbose=0, callbacks=[controller])
    assert controller.rebuilds == 1
    assert (first.capacity, second.capacity) == (32, 24)  # 2 * width, rounded up to 8s
    # Below halfway (0.65 * 16 = 10.4), a layer is left alone.
    model = helpers.compile_classifier(helpers.sequential_model(initial_units=(8, 8), capacity=16))
    model.build((None, 2))
    first, second = topology.adaptive_layers(model)
    first.width_parameter.assign(first.distribution.raw_for_width(14, first.quantile))
    second.width_parameter.assign(second.distribution.raw_for_width(10, second.quantile))
    controller = WidthController(width_warmup_epochs=5, min_capacity=1)
    model.fit(x, y, batch_size=32, epochs=1, verbose=0, callbacks=[controller])
    assert (first.capacity, second.capacity) == (32, 16)


def test_a_frozen_adaptive_layer_keeps_its_width_while_the_others_train():
    # A frozen layer's width parameter is not trainable: the checks inside an epoch read it from
    # the non-trainable part of the running state (on JAX the variables themselves are purged).
    x, y = helpers.spiral_data(256)
    model = helpers.sequential_model(initial_units=(8, 8), width_learning="gradient")
    model.build((None, 2))
    frozen, training = topology.adaptive_layers(model)
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


@pytest.mark.slow
def test_the_width_search_grows_a_narrow_start_and_shrinks_a_wide_one():
    from keras_awn import datasets

    x, y = datasets.spirals(2000, turns=2.0, noise=0.02, seed=0)
    widths = {}
    for start in (2, 256):
        model = helpers.compile_classifier(
            keras_awn.Sequential(
                [
                    keras.Input((2,)),
                    keras_awn.layers.AdaptiveDense(start, activation="relu"),
                    keras_awn.layers.AdaptiveDense(start, activation="relu"),
                    keras.layers.Dense(2),
                ]
            )
        )
        controller = WidthController(search_every=16)
        model.fit(x, y, batch_size=64, epochs=20, verbose=0, callbacks=[controller])
        widths[start] = sum(keras_awn.widths(model).values())
        assert controller.searches, "the search ran"
        assert {"layer", "width", "new_width", "final"} <= set(controller.searches[0])
        # The last fifth of the fit (epochs 16-19) only keeps what each layer needs.
        assert all(event["final"] for event in controller.searches if event["epoch"] >= 16)
    assert widths[2] > 2 * 2 and widths[256] < 2 * 256 / 2
    assert max(widths.values()) / min(widths.values()) < 4


def test_the_search_can_be_switched_off_and_needs_examples():
    x, y = helpers.spiral_data(256)
    model = helpers.compile_classifier(helpers.sequential_model(initial_units=(4, 4)))
    controller = WidthController(search_every=None)
    model.fit(x, y, batch_size=32, epochs=2, verbose=0, callbacks=[controller])
    assert controller.searches == [] and sorted(keras_awn.widths(model).values()) == [4, 4]

    def batches():
        while True:
            yield x[:32], y[:32]

    model = helpers.compile_classifier(helpers.sequential_model(initial_units=(4, 4)))
    controller = WidthController(num_examples=len(x), search_every=2)
    with pytest.warns(UserWarning, match="probe_data"):
        model.fit(batches(), steps_per_epoch=4, epochs=1, verbose=0, callbacks=[controller])
    assert controller.searches == []
    controller = WidthController(num_examples=len(x), search_every=2, probe_data=(x, y))
    model.fit(batches(), steps_per_epoch=4, epochs=1, verbose=0, callbacks=[controller])
    assert controller.searches  # 4 units: below the narrowest width the search judges


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"search_every": 0}, "search_every=0"),
        ({"search_tolerance": 1.0}, "search_tolerance=1.0"),
        ({"final_share": 1.0}, "final_share=1.0"),
        ({"probe_data": [1, 2]}, "probe_data=list"),
    ],
)
def test_search_arguments_are_checked(kwargs, message):
    with pytest.raises(ValueError, match=message):
        WidthController(**kwargs)


# -- The amortized policy inside fit --------------------------------------------------------------


def frozen_width_model():
    """Two 100-unit layers (capacity 200) whose width stays put: settled from the first check."""
    return helpers.compile_classifier(helpers.sequential_model(initial_units=(100, 100)))


def test_repeated_fits_settle_like_one_long_fit():
    """The policy's memory lives with the model: four fits of two steps each see the eight
    checks a settling needs, as one fit of eight steps would (each fit alone sees three)."""
    x, y = helpers.spiral_data(64)
    model = frozen_width_model()
    controllers = []
    for _ in range(4):
        controllers.append(
            WidthController(check_every=1, settle_after=8, width_warmup_epochs=1, rebuild_cost=0)
        )
        model.fit(x, y, batch_size=32, epochs=1, verbose=0, callbacks=[controllers[-1]])
    reasons = [event["reason"] for c in controllers for event in c.reallocations]
    assert reasons == ["settle", "settle"]  # both layers, once
    assert [layer.capacity for layer in topology.adaptive_layers(model)] == [104, 104]
    assert training_state.training_ledger(model).steps == 4 * 2


def test_a_reduction_waits_until_the_masked_compute_pays_for_a_rebuild():
    x, y = helpers.spiral_data(256)
    kwargs = dict(check_every=1, settle_after=4, width_warmup_epochs=10)
    costly = frozen_width_model()
    controller = WidthController(rebuild_cost=1e6, **kwargs)
    costly.fit(x, y, batch_size=32, epochs=2, verbose=0, callbacks=[controller])
    assert controller.reallocations == []  # 16 steps mask half the units: far from 1e6 s
    ledger = training_state.training_ledger(costly)
    assert 0 < ledger.masked_seconds < 1e6 and ledger.steps == 16
    # What training measured: a step's time, and the first step's compilation as a rebuild.
    assert ledger.step_seconds > 0 and ledger.rebuild_seconds is not None
    free = frozen_width_model()
    controller = WidthController(rebuild_cost=0, **kwargs)
    free.fit(x, y, batch_size=32, epochs=2, verbose=0, callbacks=[controller])
    assert [e["reason"] for e in controller.reallocations] == ["settle", "settle"]
    assert training_state.training_ledger(free).masked_seconds < ledger.masked_seconds


def test_repeated_fits_search_as_often_as_one_long_fit(monkeypatch):
    """The search's clock counts steps across fits: after a first fit, four one-epoch fits
    search about as often as the last four epochs of one long fit (each short fit used to
    search as if it were the whole training)."""
    searches = []
    search = WidthController._search
    monkeypatch.setattr(
        WidthController, "_search", lambda self, **kw: searches.append(1) or search(self, **kw)
    )
    x, y = helpers.spiral_data(2048)

    def model():
        return helpers.compile_classifier(
            helpers.sequential_model(initial_units=(16, 16), width_learning="search")
        )

    def fit(model, epochs):
        searches.clear()
        controller = WidthController(final_share=0.0)
        model.fit(x, y, batch_size=32, epochs=epochs, verbose=0, callbacks=[controller])
        return len(searches)

    long_fit = fit(model(), epochs=8)
    split = model()
    fit(split, epochs=4)
    short_fits = sum(fit(split, epochs=1) for _ in range(4))
    # The long fit's last four epochs searched about half its searches; the short fits, which
    # cannot know that more training follows, a little more often (their interval grows with
    # the steps trained so far).
    assert 0 < short_fits <= 0.75 * long_fit + 1, (long_fit, short_fits)


def test_validation_time_is_not_counted_as_training_steps():
    """`fit` validates before `on_epoch_end`: that time is no step's (nor a rebuild's)."""
    import time

    class SlowValidation(keras.callbacks.Callback):
        def on_test_begin(self, logs=None):
            time.sleep(1.0)

    x, y = helpers.spiral_data(128)
    model = frozen_width_model()
    model.fit(
        x, y, batch_size=32, epochs=3, verbose=0, validation_data=(x, y),
        callbacks=[WidthController(rebuild_cost=1e6), SlowValidation()],
    )
    ledger = training_state.training_ledger(model)
    assert ledger.steps == 12
    # Counted, the 3 s of validation would make a step of at least 0.25 s. (A TensorFlow step
    # here takes up to about 0.06 s: the first epoch's end also builds the validation dataset.)
    assert ledger.step_seconds < 0.125, ledger


def test_a_waiting_reduction_joins_a_rebuild_that_happens_anyway():
    x, y = helpers.spiral_data(256)
    model = frozen_width_model()
    model.build((None, 2))
    first, second = topology.adaptive_layers(model)
    # Both widths frozen at 100 for 4 checks: the first layer's capacity (200) may settle, but
    # the rebuild is never paid for (1e6 s)...
    controller = WidthController(
        num_examples=len(x), check_every=1, settle_after=2, width_warmup_epochs=10,
        rebuild_cost=1e6,
    )
    model.fit(x, y, batch_size=64, epochs=1, verbose=0, callbacks=[controller])
    assert controller.reallocations == []
    # ...until the second layer must grow: the settling rides on that rebuild.
    second.width_parameter.assign(second.distribution.raw_for_width(190, second.quantile))
    controller.on_train_begin()
    events = {e["layer"]: e["reason"] for e in controller.reallocations}
    controller.on_train_end()
    assert events == {first.name: "settle", second.name: "grow"}
    assert first.capacity == 104 and controller.rebuilds == 1
