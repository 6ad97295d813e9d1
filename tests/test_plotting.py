"""keras_awn.plotting: the figures draw the numbers they are given, and truncation curves are the
accuracies of the cut models (checked against a numpy forward pass for plain MLPs)."""

import keras
import matplotlib
import numpy as np
import pytest

import keras_awn
from keras_awn import plotting
from tests import helpers

matplotlib.use("Agg")


def test_plot_widths_draws_each_layers_history():
    model = helpers.sequential_model((4, 4))
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = helpers.spiral_data(128)
    history = model.fit(x, y, epochs=3, batch_size=32, verbose=0, validation_data=(x, y))
    ax = plotting.plot_widths(history)
    lines = {line.get_label(): list(line.get_ydata()) for line in ax.get_lines()}
    names = [layer.name for layer in model.layers[:2]]
    assert sorted(lines) == sorted(names)  # no val_ entries
    for name in names:
        assert lines[name] == [int(round(v)) for v in history.history[f"{name}_width"]]
    assert list(ax.get_lines()[0].get_xdata()) == [1, 2, 3]


def test_width_histories_refuses_a_history_without_widths():
    with pytest.raises(ValueError, match="no `<layer>_width` entries"):
        plotting.width_histories({"loss": [1.0]})
    with pytest.raises(ValueError, match="Received: history=3"):
        plotting.width_histories(3)


def _numpy_forward(weights, x, kept):
    """A ReLU MLP keeping the first `kept[i]` units of hidden layer i."""
    hidden, previous = x, None
    for index, (kernel, bias) in enumerate(weights):
        if previous is not None:
            kernel = kernel[:previous]
        if index < len(weights) - 1:
            kernel, bias = kernel[:, : kept[index]], bias[: kept[index]]
            hidden = np.maximum(hidden @ kernel + bias, 0.0)
            previous = kept[index]
        else:
            hidden = hidden @ kernel + bias
    return hidden


def test_truncation_curve_of_a_plain_mlp_drops_its_last_units():
    x, y = helpers.spiral_data(256)
    model = keras.Sequential(
        [
            keras.Input((2,)),
            keras.layers.Dense(10, activation="relu"),
            keras.layers.Dropout(0.1),
            keras.layers.Dense(7, activation="relu"),
            keras.layers.Dense(2),
        ]
    )
    weights = [layer.get_weights() for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    fractions = [0.0, 0.3, 0.75]
    curve = plotting.truncation_curve(model, x, y, fractions)
    for fraction, accuracy in zip(fractions, curve):
        kept = [int(np.ceil(10 * (1 - fraction))), int(np.ceil(7 * (1 - fraction)))]
        expected = np.mean(np.argmax(_numpy_forward(weights, x, kept), axis=1) == y)
        assert accuracy == pytest.approx(expected, abs=1.0 / len(y))
    # The model itself is left whole.
    assert [layer.units for layer in model.layers if isinstance(layer, keras.layers.Dense)] == [10, 7, 2]


def test_truncation_curve_of_an_adaptive_model_starts_at_its_accuracy():
    x, y = helpers.spiral_data(256)
    model = helpers.sequential_model((6, 6))
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=2, batch_size=32, verbose=0)
    accuracy = np.mean(np.argmax(model.predict(x, verbose=0), axis=1) == y)
    curve = plotting.truncation_curve(model, x, y, [0.0, 0.5])
    assert curve[0] == pytest.approx(accuracy)
    half = keras_awn.truncate(model, fraction=0.5)
    assert curve[1] == pytest.approx(np.mean(np.argmax(half.predict(x, verbose=0), axis=1) == y))


def test_truncation_curve_refuses_bad_arguments():
    x, y = helpers.spiral_data(32)
    mlp = keras.Sequential([keras.Input((2,)), keras.layers.Dense(4), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match=r"Received: fractions=\[1.0\]"):
        plotting.truncation_curve(mlp, x, y, [1.0])
    with pytest.raises(ValueError, match="Received: fractions=\\[\\]"):
        plotting.truncation_curve(mlp, x, y, [])
    conv = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Conv2D(2, 3), keras.layers.Flatten(),
                             keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="Sequential of Dense"):
        plotting.truncation_curve(conv, np.zeros((2, 4, 4, 1)), np.zeros(2), [0.5])


def test_plot_truncation_and_accuracy_vs_parameters_draw_their_points():
    ax = plotting.plot_truncation([0.0, 0.5], {"adaptive": [0.9, 0.8], "fixed width": [0.9, 0.5]})
    assert {line.get_label(): list(line.get_ydata()) for line in ax.get_lines()} == {
        "adaptive": [0.9, 0.8],
        "fixed width": [0.9, 0.5],
    }
    with pytest.raises(ValueError, match="one accuracy per fraction"):
        plotting.plot_truncation([0.0, 0.5], {"adaptive": [0.9]})
    ax = plotting.plot_accuracy_vs_parameters({"fixed": [(100, 0.5), (1000, 0.9)], "adaptive": [(300, 0.85)]})
    offsets = [collection.get_offsets().tolist() for collection in ax.collections]
    assert offsets == [[[100, 0.5], [1000, 0.9]], [[300, 0.85]]]
    assert ax.get_xscale() == "log"
    with pytest.raises(ValueError, match="Received: points={}"):
        plotting.plot_accuracy_vs_parameters({})
