"""truncate / strip / widths: same predictions at fraction 0, prefix kept, importance renormalised."""

import json

import keras
import numpy as np
import pytest
from keras import ops

import keras_awn
from keras_awn._engine import topology
from tests import helpers
from tests.test_models import MLPClassifier
from tests.test_saving import BUILDERS


@pytest.fixture(scope="module", params=sorted(BUILDERS))
def trained(request):
    keras.utils.set_random_seed(7)
    x, y = helpers.spiral_data(256)
    model = helpers.compile_classifier(BUILDERS[request.param]())
    model.fit(x, y, batch_size=32, epochs=3, verbose=0)
    return model, x


def test_fraction_zero_changes_no_prediction(trained):
    model, x = trained
    truncated = keras_awn.truncate(model, fraction=0.0)
    np.testing.assert_allclose(truncated.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5)
    assert keras_awn.widths(truncated) == keras_awn.widths(model)
    for layer in topology.adaptive_layers(truncated):
        assert layer.capacity == layer.active_units == layer.max_units


def test_truncation_keeps_the_most_important_prefix(trained):
    model, x = trained
    truncated = keras_awn.truncate(model, fraction=0.5)
    for original, kept in zip(topology.adaptive_layers(model), topology.adaptive_layers(truncated)):
        width = original.active_units
        assert kept.active_units == width - int(np.floor(0.5 * width))
        k = kept.active_units
        np.testing.assert_array_equal(
            ops.convert_to_numpy(kept.kernel)[:, :k][: ops.convert_to_numpy(kept.kernel).shape[0]],
            ops.convert_to_numpy(original.kernel)[: kept.kernel.shape[0], :k],
        )
        # Importance renormalised over the kept units (closed form, numpy).
        raw = float(ops.convert_to_numpy(original.width_parameter))
        expected = helpers.numpy_exponential_importance(raw, k, k, kept.importance_normalization)
        np.testing.assert_allclose(ops.convert_to_numpy(kept.importance()), expected, rtol=1e-5)
    # The original is untouched.
    assert keras_awn.widths(model) != keras_awn.widths(truncated)


def test_truncated_first_layer_output_matches_numpy(trained):
    model, x = trained
    truncated = keras_awn.truncate(model, fraction=0.3)
    layer = topology.adaptive_layers(truncated)[0]
    if layer.kernel.shape[0] != 2:  # the MLP block's first layer also reads the model input
        pytest.fail("the first adaptive layer should read the 2-D input")
    reference = helpers.numpy_adaptive_dense(layer, x.astype("float64"))
    np.testing.assert_allclose(ops.convert_to_numpy(layer(x)), reference, rtol=1e-5, atol=1e-6)


def test_truncate_to_given_widths(trained):
    model, x = trained
    first = topology.adaptive_layers(model)[0]
    truncated = keras_awn.truncate(model, units={first.name: 2})
    assert keras_awn.widths(truncated)[first.name] == 2
    others = {k: v for k, v in keras_awn.widths(model).items() if k != first.name}
    assert {k: v for k, v in keras_awn.widths(truncated).items() if k != first.name} == others
    assert truncated.predict(x, verbose=0).shape == (len(x), 2)


def test_strip_gives_plain_keras_with_same_predictions(trained):
    model, x = trained
    plain = keras_awn.strip(model)
    np.testing.assert_allclose(plain.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5)
    serialized = json.dumps(keras.saving.serialize_keras_object(plain))
    assert "keras_awn" not in serialized
    assert type(plain) in (keras.Sequential, keras.src.models.functional.Functional)
    # The stripped layers have exactly the active widths.
    dense_widths = sorted(
        layer.units for layer in plain._flatten_layers() if isinstance(layer, keras.layers.Dense)
    )
    for width in keras_awn.widths(model).values():
        assert width in dense_widths


def test_strip_of_a_truncated_model(trained):
    model, x = trained
    truncated = keras_awn.truncate(model, fraction=0.4)
    plain = keras_awn.strip(truncated)
    np.testing.assert_allclose(
        plain.predict(x, verbose=0), truncated.predict(x, verbose=0), atol=1e-5
    )


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({}, "exactly one"),
        ({"fraction": 0.1, "units": {}}, "exactly one"),
        ({"fraction": 1.0}, "fraction=1.0"),
        ({"fraction": -0.1}, "fraction=-0.1"),
        ({"units": {"no_such_layer": 3}}, "no_such_layer"),
        ({"units": [3]}, "units=\\[3\\]"),
    ],
)
def test_truncate_rejects_bad_arguments(kwargs, message):
    model = helpers.sequential_model()
    with pytest.raises(ValueError, match=message):
        keras_awn.truncate(model, **kwargs)


def test_truncate_rejects_units_outside_the_active_range():
    model = helpers.sequential_model(initial_units=(8, 8))
    name = model.layers[0].name
    for bad in (0, 9, 2.5):
        with pytest.raises(ValueError, match=f"units\\['{name}'\\]={bad}"):
            keras_awn.truncate(model, units={name: bad})


def test_subclassed_models_are_refused_clearly():
    model = MLPClassifier()
    model(np.ones((1, 2), "float32"))
    with pytest.raises(ValueError, match="subclassed"):
        keras_awn.strip(model)


def test_widths_reports_every_adaptive_layer():
    model = helpers.functional_model(initial_units=(5, 9))
    assert sorted(keras_awn.widths(model).values()) == [5, 9]
