"""Folding a per-unit scaling into a BatchNormalization: checked against the normalization's
closed form in numpy, in inference and in training mode."""

import keras
import numpy as np
import pytest

from keras_awn._engine import folding


def normalize(x, gamma, beta, mean, variance, epsilon):
    return gamma * (x - mean) / np.sqrt(variance + epsilon) + beta


@pytest.fixture
def statistics():
    rng = np.random.default_rng(0)
    return {
        "gamma": rng.uniform(0.5, 2.0, 6),
        "beta": rng.normal(size=6),
        "mean": rng.normal(size=6),
        # Tiny variances too: there the epsilon matters and only `gamma` can absorb it.
        "variance": np.array([1e-6, 1e-4, 0.01, 0.5, 2.0, 9.0]),
    }


@pytest.mark.parametrize("epsilon", [1e-3, 1e-5])
def test_scaled_normalization_computes_the_same_from_scaled_inputs(statistics, epsilon):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(32, 6)) * np.sqrt(statistics["variance"]) + statistics["mean"]
    scale = rng.uniform(0.1, 3.0, 6)
    gamma, mean, variance = folding.scaled_normalization(
        statistics["gamma"], statistics["mean"], statistics["variance"], scale, epsilon
    )
    expected = normalize(
        x,
        statistics["gamma"],
        statistics["beta"],
        statistics["mean"],
        statistics["variance"],
        epsilon,
    )
    scaled = normalize(x * scale, gamma, statistics["beta"], mean, variance, epsilon)
    np.testing.assert_allclose(scaled, expected, rtol=1e-9, atol=1e-9)
    # The statistics are those of the scaled inputs: a batch's own (training mode) agree with
    # them as they did before, so training-mode outputs keep their scale too.
    np.testing.assert_allclose(mean, statistics["mean"] * scale)
    np.testing.assert_allclose(variance, statistics["variance"] * scale**2)


def test_folding_into_a_batch_normalization_undoes_the_importance_in_both_modes(statistics):
    rng = np.random.default_rng(2)
    importance = rng.uniform(0.2, 2.5, 6).astype("float32")
    # The layer reads importance-scaled units: its statistics are the scaled units' ones.
    x = (rng.normal(size=(256, 6)) * 3.0 + 1.0).astype("float32")
    layer = keras.layers.BatchNormalization(epsilon=1e-5)
    layer.build((None, 6))
    layer.set_weights(
        [
            statistics["gamma"].astype("float32"),
            statistics["beta"].astype("float32"),
            (statistics["mean"] * importance).astype("float32"),
            (np.full(6, 9.0) * importance**2).astype("float32"),
        ]
    )
    plain = keras.layers.BatchNormalization(epsilon=1e-5)
    plain.build((None, 6))
    plain.set_weights(layer.get_weights())
    folding.fold_importance(plain, importance)
    scaled_inputs = x * importance
    inference = keras.ops.convert_to_numpy(layer(scaled_inputs, training=False))
    training = keras.ops.convert_to_numpy(layer(scaled_inputs, training=True))
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(plain(x, training=False)), inference, rtol=1e-4, atol=1e-4
    )
    # Training mode normalizes by the batch: the folded layer computes what the adaptive one
    # did (up to the epsilon, 1e-5 here: negligible against variances near 9).
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(plain(x, training=True)), training, rtol=1e-3, atol=1e-3
    )
