"""Host-side draws of Keras initializers for new units: the distributions Keras documents."""

import math

import keras
import numpy as np
import pytest

from keras_awn._engine import initializers


@pytest.mark.parametrize(
    "identifier,shape,expected_std,bound",
    [
        # He normal: truncated at 2 std of N(0, 1.3796 * 2 / fan_in), whose std is sqrt(2 / fan_in).
        ("he_normal", (400, 300), math.sqrt(2.0 / 400), 2 * math.sqrt(2.0 / 400) / 0.87962566103423978),
        # Glorot uniform: U(-l, l), l = sqrt(6 / (fan_in + fan_out)), std l / sqrt(3).
        ("glorot_uniform", (200, 300), math.sqrt(6.0 / 500) / math.sqrt(3.0), math.sqrt(6.0 / 500)),
        ("lecun_normal", (3, 3, 20, 40), math.sqrt(1.0 / 180), 2 * math.sqrt(1.0 / 180) / 0.87962566103423978),
        (keras.initializers.RandomNormal(stddev=0.3), (300, 200), 0.3, None),
        (keras.initializers.TruncatedNormal(stddev=0.3), (300, 200), 0.3 * 0.87962566103423978, 0.6),
        (keras.initializers.RandomUniform(-0.5, 0.5), (300, 200), 1.0 / math.sqrt(12.0), 0.5),
    ],
)
def test_host_draws_follow_the_keras_initializer(identifier, shape, expected_std, bound):
    initializer = keras.initializers.get(identifier)
    value = initializers.draw(initializer, shape, "float32")
    assert value.shape == shape and value.dtype == np.float32
    # Closed-form moments (60k draws: the standard error of the std is ~0.3%).
    assert abs(value.mean()) < 0.02 * expected_std * 3
    np.testing.assert_allclose(value.std(), expected_std, rtol=0.02)
    if bound is not None:
        assert np.abs(value).max() <= bound + 1e-6
    # A new seed at every call: two reallocations never repeat the same units.
    assert not np.array_equal(value, initializers.draw(initializer, shape, "float32"))


def test_host_draws_fall_back_to_keras_for_other_initializers():
    initializer = keras.initializers.Orthogonal()
    value = initializers.draw(initializer, (16, 16), "float32")
    np.testing.assert_allclose(value.T @ value, np.eye(16), atol=1e-5)
