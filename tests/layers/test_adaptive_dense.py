"""AdaptiveDense: forward pass, masking, width, prior, configuration and argument checks."""

import keras
import numpy as np
import pytest
from keras import ops

import keras_awn
from keras_awn.layers import AdaptiveDense
from tests import helpers
from tests.layer_test_case import run_layer_test


def built_layer(input_dim=3, **kwargs):
    layer = AdaptiveDense(**kwargs)
    layer.build((None, input_dim))
    return layer


def test_weights_shapes_and_output_shape():
    layer = built_layer(initial_units=10, activation="relu", capacity=20)
    assert layer.capacity == 20
    assert [tuple(v.shape) for v in layer.trainable_weights] == [(3, 20), (20,), ()]
    x = np.random.default_rng(0).normal(size=(4, 3)).astype("float32")
    assert tuple(layer(x).shape) == (4, 20)
    symbolic = layer(keras.KerasTensor((None, 3)))
    assert tuple(symbolic.shape) == (None, 20)


@pytest.mark.parametrize("activation", ["relu", "tanh", "sigmoid", "linear"])
@pytest.mark.parametrize("normalization", ["sum", "mean"])
def test_forward_matches_numpy_reference(activation, normalization):
    layer = built_layer(
        initial_units=7, activation=activation, importance_normalization=normalization
    )
    x = np.random.default_rng(1).normal(size=(5, 3)).astype("float32")
    expected = helpers.numpy_adaptive_dense(layer, x.astype("float64"), activation)
    np.testing.assert_allclose(ops.convert_to_numpy(layer(x)), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("activation", ["sigmoid", "relu"])
def test_units_beyond_the_width_are_exactly_zero(activation):
    # sigmoid(0) = 0.5: the mask must act after the activation.
    layer = built_layer(initial_units=6, activation=activation)
    x = np.random.default_rng(2).normal(size=(8, 3)).astype("float32")
    output = ops.convert_to_numpy(layer(x))
    assert layer.active_units == 6
    assert np.all(output[:, 6:] == 0.0)
    assert np.any(output[:, :6] != 0.0)


@pytest.mark.parametrize("distribution", ["exponential", "power_law"])
@pytest.mark.parametrize("min_units", [1, 9])
def test_the_mask_covers_exactly_the_active_units(distribution, min_units):
    # The step's mask compares the index with the quantile directly, not with the width: both
    # must agree everywhere, including where the quantile is (nearly) an integer, so that ceil
    # steps, and below `min_units`. Oracle: the width, `ceil(quantile) + 2` within the bounds.
    layer = built_layer(
        initial_units=10, capacity=40, min_units=min_units, distribution=distribution
    )
    dist = layer.distribution
    raws = []
    for units in range(1, 50):
        exact = dist.inverse_parameter(dist.parameter_for_quantile(0.9, float(units)))
        raws += [exact, np.nextafter(exact, -np.inf), np.nextafter(exact, np.inf)]
        raws.append(dist.raw_for_width(units + 2, 0.9))
    for raw in raws:
        raw = float(np.float32(raw))
        layer.width_parameter.assign(raw)
        expected = np.arange(40) < layer.active_units
        importance, step_mask = layer.importance_and_mask()
        np.testing.assert_array_equal(ops.convert_to_numpy(layer.unit_mask()), expected)
        np.testing.assert_array_equal(ops.convert_to_numpy(step_mask), expected)
        assert np.all((ops.convert_to_numpy(importance) > 0) == expected)


@pytest.mark.parametrize("units", [3, 5, 16, 100, 1000])
@pytest.mark.parametrize("distribution", ["exponential", "power_law"])
def test_starts_at_initial_units(units, distribution):
    layer = built_layer(initial_units=units, distribution=distribution)
    assert layer.desired_units == units
    assert layer.active_units == units


def test_width_is_clamped_by_min_max_and_capacity():
    layer = built_layer(initial_units=10, min_units=12, max_units=40, capacity=20)
    assert layer.desired_units == 12
    layer.width_parameter.assign(layer.distribution.raw_for_width(500, layer.quantile))
    assert layer.desired_units == 40
    assert layer.active_units == min(40, layer.capacity) == 20


def test_default_capacity_is_capped_by_max_units():
    assert AdaptiveDense(10, max_units=15).capacity == 15
    assert AdaptiveDense(10, max_units=100).capacity == 64  # the floor, within max_units
    assert AdaptiveDense(10, capacity=11).capacity == 11


def test_prior_loss_matches_numpy():
    layer = built_layer(
        input_dim=4,
        initial_units=6,
        weight_prior_scale=0.5,
        width_prior={"mean_units": 30, "scale": 2.0},
        width_learning="gradient",
    )
    layer.training_state.num_examples = 100
    x = np.ones((2, 4), "float32")
    layer(x)
    (loss,) = layer.losses
    kernel = ops.convert_to_numpy(layer.kernel).astype("float64")
    bias = ops.convert_to_numpy(layer.bias).astype("float64")
    raw = float(ops.convert_to_numpy(layer.width_parameter))
    mean = layer.distribution.raw_for_width(30, 0.9)
    active = 6
    squares = (kernel[:, :active] ** 2).sum() + (bias[:active] ** 2).sum()
    expected = (squares / (2 * 0.5**2) + (raw - mean) ** 2 / (2 * 2.0**2)) / 100
    np.testing.assert_allclose(float(ops.convert_to_numpy(loss)), expected, rtol=1e-5)


def test_no_prior_term_until_the_number_of_examples_is_known():
    layer = built_layer(initial_units=6)
    layer(np.ones((2, 3), "float32"))
    assert layer.losses == []


def test_masked_input_rows_are_excluded_from_the_prior():
    model = helpers.sequential_model(initial_units=(4, 5))
    first, second = model.layers[0], model.layers[1]
    second.training_state.num_examples = 1
    first.training_state.num_examples = 1
    model(np.ones((1, 2), "float32"))
    kernel = ops.convert_to_numpy(second.kernel).astype("float64")
    bias = ops.convert_to_numpy(second.bias).astype("float64")
    expected = ((kernel[:4, :5] ** 2).sum() + (bias[:5] ** 2).sum()) / 2.0
    np.testing.assert_allclose(
        float(ops.convert_to_numpy(second.prior_loss())), expected, rtol=1e-5
    )


def test_config_round_trip():
    layer = AdaptiveDense(
        12,
        activation="tanh",
        quantile=0.8,
        distribution=keras_awn.distributions.PowerLaw(scale=2.0),
        min_units=2,
        max_units=64,
        capacity=30,
        importance_normalization="sum",
        weight_prior_scale=10.0,
        width_prior={"mean_units": 20, "scale": 1.0},
        width_learning="gradient",
        use_bias=False,
        name="hidden",
    )
    config = layer.get_config()
    restored = AdaptiveDense.from_config(config)
    assert restored.get_config() == config
    serialized = keras.saving.serialize_keras_object(layer)
    assert serialized["registered_name"] == "keras_awn>AdaptiveDense"
    assert keras.saving.deserialize_keras_object(serialized).get_config() == config


def test_no_bias():
    layer = built_layer(initial_units=4, use_bias=False)
    assert len(layer.trainable_weights) == 2
    assert tuple(layer(np.ones((1, 3), "float32")).shape) == (1, layer.capacity) == (1, 64)


def test_three_dimensional_inputs():
    layer = built_layer(initial_units=4)
    assert tuple(layer(np.ones((2, 5, 3), "float32")).shape) == (2, 5, layer.capacity) == (2, 5, 64)


BAD_ARGUMENTS = [
    ({"initial_units": 0}, "initial_units=0"),
    ({"initial_units": 2.5}, "initial_units=2.5"),
    ({"initial_units": 8, "quantile": 0.0}, "quantile=0.0"),
    ({"initial_units": 8, "quantile": 1.0}, "quantile=1.0"),
    ({"initial_units": 8, "quantile": 1.5}, "quantile=1.5"),
    ({"initial_units": 8, "min_units": 0}, "min_units=0"),
    ({"initial_units": 8, "min_units": 10, "max_units": 5}, "max_units=5"),
    ({"initial_units": 8, "capacity": 0}, "capacity=0"),
    ({"initial_units": 8, "max_units": 10, "capacity": 20}, "capacity=20"),
    ({"initial_units": 8, "distribution": "gaussian"}, "distribution='gaussian'"),
    ({"initial_units": 8, "weight_prior_scale": 0.0}, "weight_prior_scale=0.0"),
    ({"initial_units": 8, "weight_prior_scale": -1}, "weight_prior_scale=-1"),
    ({"initial_units": 8, "width_prior": {"mean_units": 4}}, "width_prior="),
    ({"initial_units": 8, "width_prior": {"mean_units": 4, "scale": 0}}, "scale'\\]=0"),
    ({"initial_units": 8, "width_prior": {"mean_units": 4, "scale": 1.0}}, "width_learning="),
    ({"initial_units": 8, "width_learning": "sgd"}, "width_learning='sgd'"),
    ({"initial_units": 8, "width_prior": {"mean_units": 4, "scale": 1.0}}, "width_learning="),
    ({"initial_units": 8, "width_learning": "sgd"}, "width_learning='sgd'"),
    ({"initial_units": 8, "importance_normalization": "max"}, "importance_normalization='max'"),
]


@pytest.mark.parametrize("kwargs,message", BAD_ARGUMENTS)
def test_bad_arguments_raise_value_errors_naming_them(kwargs, message):
    with pytest.raises(ValueError, match=message):
        AdaptiveDense(**kwargs)


def test_undefined_input_dimension_is_refused():
    with pytest.raises(ValueError, match="last dimension"):
        AdaptiveDense(4).build((None, None))


def test_training_without_controller_warns_once():
    layer = built_layer(initial_units=4)
    x = np.ones((2, 3), "float32")
    with pytest.warns(UserWarning, match="WidthController"):
        layer(x, training=True)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        layer(x, training=True)  # a second call stays silent


def test_an_unbounded_width_is_reported_clearly_and_max_units_bounds_it():
    layer = built_layer(initial_units=4)
    layer.width_parameter.assign(-1000.0)  # rate softplus(-1000) == 0: infinitely wide
    with pytest.raises(ValueError, match="max_units"):
        layer.desired_units
    assert layer.active_units == layer.capacity  # the step itself stays within the capacity
    bounded = built_layer(initial_units=4, max_units=50)
    bounded.width_parameter.assign(-1000.0)
    assert bounded.desired_units == 50


def test_layer_contract(tmp_path):
    run_layer_test(
        keras_awn.layers.AdaptiveDense,
        {"initial_units": 8, "activation": "relu"},
        (np.random.default_rng(0).normal(size=(4, 3)).astype("float32"),),
        expected_output_shape=(4, 64),  # the default capacity: the dense floor of 64 units
        expected_num_trainable_weights=3,  # kernel, bias, width parameter
        expected_num_non_trainable_weights=0,
        tmp_path=tmp_path,
    )
