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
