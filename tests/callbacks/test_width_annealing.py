"""`WidthAnnealing`: the paper's dynamic compression (the width prior's scale annealed linearly)."""

import keras
import numpy as np
import pytest

import keras_awn
from keras_awn._engine import topology
from keras_awn.callbacks import WidthAnnealing
from tests import helpers


def test_schedule_is_linear_between_start_and_end():
    annealing = WidthAnnealing(start_epoch=2, end_epoch=6, final_fraction=0.1)
    expected = [1.0, 1.0, 1 - 0.9 / 4, 1 - 0.9 * 2 / 4, 1 - 0.9 * 3 / 4, 0.1, 0.1, 0.1]
    np.testing.assert_allclose([annealing.scale_fraction(e) for e in range(8)], expected)


class ScaleRecorder(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.scales = []

    def on_epoch_begin(self, epoch, logs=None):
        self.scales.append(topology.adaptive_layers(self.model)[0].width_prior["scale"])


def compressible_model(**width_prior):
    prior = {"mean_units": 2, "scale": 1.0, **width_prior}
    return helpers.compile_classifier(
        helpers.sequential_model(
            initial_units=(16, 16), width_prior=prior, width_learning="gradient"
        )
    )


def test_annealing_lowers_the_scale_and_the_training_step_sees_it():
    x, y = helpers.spiral_data(256)
    annealed, reference = compressible_model(), compressible_model()
    reference.set_weights(annealed.get_weights())
    recorder = ScaleRecorder()
    fit = {"batch_size": 32, "epochs": 10, "verbose": 0, "shuffle": False}
    annealed.fit(x, y, callbacks=[WidthAnnealing(1, 4, final_fraction=0.01), recorder], **fit)
    reference.fit(x, y, **fit)
    np.testing.assert_allclose(recorder.scales, [1.0, 0.67, 0.34] + [0.01] * 7, rtol=1e-6)
    # A hundred times smaller scale pulls the width parameters toward a width of 2 with ten
    # thousand times the force: the annealed network is narrower than its unannealed twin.
    assert sum(keras_awn.widths(annealed).values()) < sum(keras_awn.widths(reference).values())
    # The saved configuration carries the annealed scale, so training resumes from it.
    layer = topology.adaptive_layers(annealed)[0]
    assert layer.get_config()["width_prior"]["scale"] == pytest.approx(0.01)


def test_bad_arguments_and_models_without_width_prior_are_refused():
    with pytest.raises(ValueError, match="Received: start_epoch=-1"):
        WidthAnnealing(-1, 3)
    with pytest.raises(ValueError, match="Received: end_epoch=2"):
        WidthAnnealing(2, 2)
    with pytest.raises(ValueError, match="Received: final_fraction=0"):
        WidthAnnealing(0, 3, final_fraction=0)
    model = helpers.compile_classifier(helpers.sequential_model())
    x, y = helpers.spiral_data(32)
    with pytest.raises(ValueError, match="width_prior"):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[WidthAnnealing(0, 2)])


class WidthRecorder(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.widths = []

    def on_epoch_begin(self, epoch, logs=None):
        self.widths.append(keras_awn.widths(self.model))


def wide_model():
    return helpers.compile_classifier(helpers.sequential_model(initial_units=(32, 20)))


def test_size_schedule_is_linear_and_holds_the_target():
    x, y = helpers.spiral_data(256)
    model = wide_model()
    recorder = WidthRecorder()
    model.fit(
        x,
        y,
        batch_size=32,
        epochs=5,
        verbose=0,
        callbacks=[WidthAnnealing(1, 4, target_fraction=0.25), recorder],
    )
    names = [layer.name for layer in topology.adaptive_layers(model)]
    first = [widths[names[0]] for widths in recorder.widths]
    # Epoch 0 untouched; from epoch 1, 32 -> 8 in three equal steps, then held.
    assert first[1:] == [24, 16, 8, 8]
    assert keras_awn.widths(model) == {names[0]: 8, names[1]: 5}
    for layer in topology.adaptive_layers(model):
        assert layer.width_is_fixed and layer.capacity == layer.active_units
        assert layer.get_config()["max_units"] == layer.active_units
    plain = keras_awn.strip(model)
    np.testing.assert_allclose(plain.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5)


# 2: below the distributions' narrowest width (3), reached through the capacity.
@pytest.mark.parametrize("units", [8, 2])
def test_each_cut_removes_the_least_important_units_and_keeps_the_others(units):
    x, _ = helpers.spiral_data(64)
    model = wide_model()
    model.build((None, 2))
    first = topology.adaptive_layers(model)[0]
    first.training_state.probe_cut = units
    cut = model.predict(x, verbose=0)
    first.training_state.probe_cut = None
    annealing = WidthAnnealing(0, 1, target_units={first.name: units})
    annealing.set_model(model)
    annealing.on_epoch_begin(0)
    second = topology.adaptive_layers(model)[1]
    assert keras_awn.widths(model) == {first.name: units, second.name: 20}
    # What the model cut to its first 8 units computed, through rescaled readers.
    np.testing.assert_allclose(model.predict(x, verbose=0), cut, rtol=1e-4, atol=1e-5)


def test_a_parameter_budget_is_met_with_one_share_for_every_layer():
    x, y = helpers.spiral_data(128)
    model = wide_model()
    budget = 400
    model.fit(
        x,
        y,
        batch_size=32,
        epochs=2,
        verbose=0,
        callbacks=[WidthAnnealing(0, 1, target_parameters=budget)],
    )
    parameters = keras_awn.strip(model).count_params()
    assert parameters <= budget
    widths = list(keras_awn.widths(model).values())
    # The largest common share that fits: one more unit in each layer would not.
    grown = helpers.sequential_model(initial_units=(widths[0] + 1, widths[1] + 1))
    grown.build((None, 2))
    assert keras_awn.strip(grown).count_params() > budget


def test_size_targets_are_checked():
    with pytest.raises(ValueError, match="Received: final_fraction=0.5, target_fraction=0.5"):
        WidthAnnealing(0, 2, final_fraction=0.5, target_fraction=0.5)
    with pytest.raises(ValueError, match="Received: target_fraction=0"):
        WidthAnnealing(0, 2, target_fraction=0)
    with pytest.raises(ValueError, match="Received: target_units=\\{\\}"):
        WidthAnnealing(0, 2, target_units={})
    with pytest.raises(ValueError, match="target_parameters"):
        WidthAnnealing(0, 2, target_parameters=0)
    x, y = helpers.spiral_data(32)
    with pytest.raises(ValueError, match="Received: target_units=\\{'nope': 4\\}"):
        wide_model().fit(
            x, y, epochs=1, verbose=0, callbacks=[WidthAnnealing(0, 1, target_units={"nope": 4})]
        )
    with pytest.raises(ValueError, match="Received: target_parameters=5"):
        wide_model().fit(
            x, y, epochs=1, verbose=0, callbacks=[WidthAnnealing(0, 1, target_parameters=5)]
        )
