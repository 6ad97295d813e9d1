"""`AdaptiveConv2D`: its output against Keras' Conv2D and the closed-form importance, the readers
it can feed and resize, and the ones it refuses."""

import math

import keras
import numpy as np
import pytest
from keras import ops

import keras_awn
from keras_awn._engine import topology
from keras_awn._engine import resize
from keras_awn.layers import AdaptiveConv2D
from tests import helpers
from tests.layer_test_case import run_layer_test


@pytest.mark.parametrize(
    "arguments",
    [
        {"kernel_size": 3, "padding": "same"},
        {"kernel_size": (3, 2), "strides": 2, "padding": "valid"},
        {"kernel_size": 3, "dilation_rate": 2, "padding": "valid"},
    ],
)
def test_output_is_keras_conv2d_times_closed_form_importance(arguments):
    layer = AdaptiveConv2D(5, activation="relu", **arguments)
    images = np.random.default_rng(0).normal(size=(2, 9, 9, 3)).astype("float32")
    outputs = ops.convert_to_numpy(layer(images))
    assert outputs.shape == layer.compute_output_shape(images.shape)
    reference = keras.layers.Conv2D(layer.capacity, activation="relu", **arguments)
    reference.build(images.shape)
    reference.set_weights([ops.convert_to_numpy(layer.kernel), ops.convert_to_numpy(layer.bias)])
    raw = float(ops.convert_to_numpy(layer.width_parameter))
    width = helpers.numpy_exponential_width(raw, layer.quantile)
    importance = helpers.numpy_exponential_importance(raw, layer.capacity, width, "mean")
    expected = ops.convert_to_numpy(reference(images)) * importance
    np.testing.assert_allclose(outputs, expected, rtol=1e-5, atol=1e-5)
    assert np.all(outputs[..., width:] == 0.0)


@pytest.mark.parametrize(
    "arguments,name",
    [
        ({"initial_filters": 0, "kernel_size": 3}, "initial_units"),
        ({"initial_filters": 4, "kernel_size": 0}, "kernel_size"),
        ({"initial_filters": 4, "kernel_size": (3, 3, 3)}, "kernel_size"),
        ({"initial_filters": 4, "kernel_size": 3, "strides": -1}, "strides"),
        ({"initial_filters": 4, "kernel_size": 3, "padding": "causal"}, "padding"),
        ({"initial_filters": 4, "kernel_size": 3, "data_format": "channels_first"}, "data_format"),
        ({"initial_filters": 4, "kernel_size": 3, "capacity": 0}, "capacity"),
    ],
)
def test_bad_arguments_name_the_argument(arguments, name):
    with pytest.raises(ValueError, match=f"Received: {name}"):
        AdaptiveConv2D(**arguments)


def test_non_image_inputs_are_refused():
    with pytest.raises(ValueError, match="4D inputs"):
        AdaptiveConv2D(4, 3)(np.zeros((2, 8, 3), "float32"))


def model_with(reader_factory):
    inputs = keras.Input((8, 8, 2))
    hidden = AdaptiveConv2D(4, 3, padding="same", activation="relu")(inputs)
    hidden = reader_factory()(hidden)
    outputs = keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(hidden)) if len(hidden.shape) == 4 else keras.layers.Dense(2)(hidden)
    return inputs, outputs


@pytest.mark.parametrize(
    "reader,name",
    [
        (lambda: keras.layers.Flatten(name="flat_reader"), "flat_reader"),
        (lambda: keras.layers.LayerNormalization(name="norm_reader"), "norm_reader"),
        (lambda: keras.layers.DepthwiseConv2D(3, name="depthwise_reader"), "depthwise_reader"),
        (lambda: keras.layers.Conv2D(4, 3, groups=2, name="grouped_reader"), "grouped_reader"),
        (lambda: keras.layers.Activation("sigmoid", name="sigmoid_reader"), "sigmoid_reader"),
    ],
)
def test_readers_that_cannot_follow_the_filters_are_refused(reader, name):
    inputs, outputs = model_with(reader)
    with pytest.raises(ValueError, match=name):
        keras_awn.Model(inputs, outputs)


def test_a_reader_combining_tensors_is_refused():
    inputs = keras.Input((8, 8, 4))
    hidden = AdaptiveConv2D(4, 3, padding="same", capacity=4)(inputs)
    added = keras.layers.Add(name="residual")([inputs, hidden])
    outputs = keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(added))
    with pytest.raises(ValueError, match="residual"):
        keras_awn.Model(inputs, outputs)


def test_reallocation_resizes_every_reader():
    inputs = keras.Input((8, 8, 1))
    first = AdaptiveConv2D(4, 3, padding="same", activation="relu")
    hidden = keras.layers.MaxPooling2D()(first(inputs))
    normalization = keras.layers.BatchNormalization()
    conv = keras.layers.Conv2D(3, 3, padding="same")
    hidden = conv(normalization(hidden))
    second = AdaptiveConv2D(4, 3, padding="same", activation="relu")
    dense = keras.layers.Dense(2)
    outputs = dense(keras.layers.GlobalMaxPooling2D()(second(hidden)))
    model = keras_awn.Model(inputs, outputs)
    probe = np.random.default_rng(0).normal(size=(4, 8, 8, 1)).astype("float32")
    before = ops.convert_to_numpy(model(probe))
    resize.resize(model, {first: 13, second: 11})
    assert tuple(first.kernel.shape) == (3, 3, 1, 13)
    for variable in (normalization.gamma, normalization.beta, normalization.moving_mean):
        assert tuple(variable.shape) == (13,)
    assert tuple(conv.kernel.shape) == (3, 3, 13, 3)
    assert tuple(dense.kernel.shape) == (11, 2)
    # New channels: masked, so BatchNormalization keeps them at zero; statistics as initialised.
    np.testing.assert_array_equal(ops.convert_to_numpy(normalization.gamma)[8:], 0.0)
    np.testing.assert_array_equal(ops.convert_to_numpy(normalization.moving_variance)[8:], 1.0)
    assert normalization.input_spec.axes[-1] == 13 and conv.input_spec.axes[-1] == 13
    np.testing.assert_allclose(ops.convert_to_numpy(model(probe)), before, rtol=1e-6, atol=1e-6)


def test_convolution_readers_get_the_compensating_initialisation():
    producer = AdaptiveConv2D(64, 3, padding="same", activation="relu")
    reader = keras.layers.Conv2D(256, 3, padding="same")
    inputs = keras.Input((8, 8, 1))
    outputs = keras.layers.Dense(1)(keras.layers.GlobalAveragePooling2D()(reader(producer(inputs))))
    keras_awn.Model(inputs, outputs)
    # N(0, 2 / (sum(p ** 2) * kernel area)): He initialisation for importance-scaled inputs.
    raw = producer.distribution.raw_for_width(64, producer.quantile)
    width = helpers.numpy_exponential_width(raw, producer.quantile)
    importance = helpers.numpy_exponential_importance(raw, producer.capacity, width, "mean")
    expected = math.sqrt(2.0 / (importance**2).sum() / 9)
    kernel = ops.convert_to_numpy(reader.kernel)
    np.testing.assert_allclose(kernel.std(), expected, rtol=0.03)


def test_widths_and_metrics_report_filters():
    model = keras_awn.Sequential(
        [
            keras.Input((8, 8, 1)),
            AdaptiveConv2D(3, 3, padding="same", activation="relu", name="filters"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(2),
        ]
    )
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    images = np.random.default_rng(0).normal(size=(32, 8, 8, 1)).astype("float32")
    history = model.fit(images, np.zeros(32, "int32"), epochs=1, verbose=0)
    assert history.history["filters_width"][-1] == keras_awn.widths(model)["filters"]
    assert topology.adaptive_layers(model)[0].initial_filters == 3


def test_layer_contract(tmp_path):
    run_layer_test(
        keras_awn.layers.AdaptiveConv2D,
        {"initial_filters": 4, "kernel_size": 3, "padding": "same", "activation": "relu"},
        (np.random.default_rng(0).normal(size=(2, 6, 6, 3)).astype("float32"),),
        expected_output_shape=(2, 6, 6, 8),
        expected_num_trainable_weights=3,
        expected_num_non_trainable_weights=0,
        tmp_path=tmp_path,
    )
