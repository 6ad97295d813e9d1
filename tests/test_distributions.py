"""Width distributions against closed forms (numpy) and an independent oracle (SciPy's continuous
distributions, quantized here)."""

import math

import keras
import numpy as np
import pytest
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
from keras import ops

import keras_awn
from keras_awn import distributions

from scipy import stats


def np_(x):
    return np.asarray(ops.convert_to_numpy(x), dtype="float64")


def softplus(raw):
    return math.log1p(math.exp(raw))


RAWS = [-6.0, -3.0, -1.0, 0.0, 1.5]
INDEX = np.arange(0, 60, dtype="float32")
INDEX64 = INDEX.astype("float64")  # expected values are computed in float64


@pytest.mark.parametrize("raw", RAWS)
def test_exponential_matches_closed_form(raw):
    dist = distributions.Exponential()
    rate = softplus(raw)
    expected = np.exp(-rate * INDEX64) * -np.expm1(-rate)
    np.testing.assert_allclose(np_(dist.prob(INDEX, raw)), expected, rtol=1e-5, atol=1e-30)
    np.testing.assert_allclose(
        np_(dist.discrete_cdf(INDEX, raw)), -np.expm1(-rate * (INDEX64 + 1)), rtol=1e-5
    )
    np.testing.assert_allclose(
        np_(dist.log_prob(INDEX, raw)), -rate * INDEX64 + np.log(-np.expm1(-rate)), rtol=1e-5
    )
    for q in (0.5, 0.9, 0.99):
        expected_width = math.ceil(-math.log1p(-q) / rate) + 2
        assert int(np_(dist.width(raw, q))) == expected_width


# A power law with a tiny exponent has an astronomically wide quantile; use realistic ones.
POWER_RAWS = [-1.0, 0.0, 1.5, 3.0]


@pytest.mark.parametrize("raw", POWER_RAWS)
@pytest.mark.parametrize("scale", [1.0, 4.0])
def test_power_law_matches_closed_form(raw, scale):
    dist = distributions.PowerLaw(scale=scale)
    exponent = softplus(raw)
    survival = lambda x: (1.0 + x / scale) ** (-exponent)  # noqa: E731
    expected = survival(INDEX64) - survival(INDEX64 + 1.0)
    np.testing.assert_allclose(np_(dist.prob(INDEX, raw)), expected, rtol=2e-4, atol=1e-12)
    for q in (0.5, 0.9):
        expected_width = math.ceil(scale * ((1.0 - q) ** (-1.0 / exponent) - 1.0)) + 2
        assert int(np_(dist.width(raw, q))) == expected_width


def quantized(continuous, index):
    """P(Y = i) for Y = floor(X): the continuous distribution's mass on [i, i + 1)."""
    return continuous.cdf(index + 1.0) - continuous.cdf(index)


@pytest.mark.parametrize("raw", RAWS)
def test_exponential_matches_scipy_quantized(raw):
    oracle = stats.expon(scale=1.0 / softplus(raw))
    dist = distributions.Exponential()
    np.testing.assert_allclose(
        np_(dist.prob(INDEX, raw)), quantized(oracle, INDEX64), rtol=1e-4, atol=1e-12
    )
    np.testing.assert_allclose(
        np_(dist.discrete_cdf(INDEX, raw)), oracle.cdf(INDEX64 + 1.0), rtol=1e-4
    )


@pytest.mark.parametrize("raw", POWER_RAWS)
@pytest.mark.parametrize("scale", [1.0, 4.0])
def test_power_law_matches_scipy_quantized_lomax(raw, scale):
    oracle = stats.lomax(c=softplus(raw), scale=scale)
    dist = distributions.PowerLaw(scale=scale)
    np.testing.assert_allclose(
        np_(dist.prob(INDEX, raw)), quantized(oracle, INDEX64), rtol=5e-4, atol=1e-12
    )
    np.testing.assert_allclose(
        np_(dist.cdf(INDEX, raw)), oracle.cdf(INDEX64), rtol=1e-4, atol=1e-7
    )


# Raw ranges giving widths from a few units to a few thousand.
RAW_RANGES = {"exponential": (-7.0, 2.0), "power_law": (-1.0, 2.0)}


@settings(max_examples=60, deadline=None)
@given(
    data=st.data(),
    quantile=st.floats(min_value=0.05, max_value=0.99),
    name=st.sampled_from(sorted(RAW_RANGES)),
)
def test_width_is_smallest_count_reaching_the_quantile(data, quantile, name):
    """Definition check: width - 2 neurons reach the quantile, one fewer does not."""
    low, high = RAW_RANGES[name]
    raw = data.draw(st.floats(min_value=low, max_value=high))
    dist = distributions.get(name)
    width = int(np_(dist.width(raw, quantile)))
    count = width - distributions.WIDTH_OFFSET
    assert count >= 1
    # The continuous cdf at `count` reaches the quantile; at `count - 1` it does not (float32
    # rounding is allowed a hair of slack on both sides).
    assert float(np_(dist.cdf(float(count), raw))) >= quantile - 1e-5
    assert float(np_(dist.cdf(float(count - 1), raw))) < quantile + 1e-5


@settings(max_examples=40, deadline=None)
@given(
    units=st.integers(min_value=3, max_value=3000),
    quantile=st.floats(min_value=0.5, max_value=0.99),
    name=st.sampled_from(["exponential", "power_law"]),
)
def test_raw_for_width_round_trips(units, quantile, name):
    dist = distributions.get(name)
    raw = dist.raw_for_width(units, quantile)
    assert int(np_(dist.width(raw, quantile))) == units


@pytest.mark.parametrize("name", ["exponential", "power_law"])
@pytest.mark.parametrize("normalization", ["sum", "mean"])
def test_importance_is_masked_normalised_and_decreasing(name, normalization):
    dist = distributions.get(name)
    raw = dist.raw_for_width(20, 0.9)
    importance = np_(dist.importance(raw, 32, 20.0, normalization))
    assert importance.shape == (32,)
    assert np.all(importance[20:] == 0.0)
    assert np.all(np.diff(importance[:20]) < 0)
    if normalization == "sum":
        np.testing.assert_allclose(importance.sum(), 1.0, rtol=1e-5)
    else:
        np.testing.assert_allclose(importance[:20].mean(), 1.0, rtol=1e-5)
    # Renormalising the closed-form masses over the active neurons gives the same vector.
    masses = np_(dist.prob(np.arange(20, dtype="float32"), raw))
    expected = masses / masses.sum() * (20 if normalization == "mean" else 1)
    np.testing.assert_allclose(importance[:20], expected, rtol=1e-4)


@pytest.mark.parametrize("normalization,total", [("sum", 1.0), ("mean", 5000.0)])
def test_importance_of_a_wide_layer_stays_finite(normalization, total):
    dist = distributions.Exponential()
    raw = dist.raw_for_width(5000, 0.9)
    importance = np_(dist.importance(raw, 8192, 5000.0, normalization))
    assert np.all(np.isfinite(importance))
    np.testing.assert_allclose(importance.sum(), total, rtol=1e-4)


def test_get_accepts_names_instances_and_configs():
    assert isinstance(distributions.get("exponential"), distributions.Exponential)
    power = distributions.PowerLaw(scale=3.0)
    assert distributions.get(power) is power
    restored = distributions.get(distributions.serialize(power))
    assert restored == power and restored.scale == 3.0


@pytest.mark.parametrize("bad", ["gaussian", 3, None, {"class_name": "Nope"}])
def test_get_rejects_unknown_identifiers(bad):
    with pytest.raises((ValueError, TypeError), match="distribution"):
        distributions.get(bad)


def test_power_law_rejects_bad_scale():
    with pytest.raises(ValueError, match=r"scale=-1"):
        distributions.PowerLaw(scale=-1)


@keras.saving.register_keras_serializable(package="keras_awn_tests")
class Geometric(distributions.WidthDistribution):
    """A user subclass: the exponential written independently, with a rate multiplier."""

    def __init__(self, factor=1.0):
        self.factor = factor

    def log_survival(self, x, parameter):
        return -self.factor * parameter * x

    def icdf(self, q, parameter):
        return -ops.log1p(-q) / (self.factor * parameter)

    def parameter_for_quantile(self, q, x):
        return -math.log1p(-q) / (x * self.factor)

    def get_config(self):
        return {"factor": self.factor}


def test_user_subclass_plugs_into_a_layer_and_serializes():
    layer = keras_awn.layers.AdaptiveDense(12, distribution=Geometric(factor=2.0))
    layer.build((None, 3))
    assert layer.active_units == 12
    restored = keras_awn.layers.AdaptiveDense.from_config(layer.get_config())
    assert isinstance(restored.distribution, Geometric)
    assert restored.distribution.factor == 2.0


def test_base_class_methods_must_be_implemented():
    with pytest.raises(NotImplementedError, match="log_survival"):
        distributions.WidthDistribution().log_prob(np.zeros(2, "float32"), 0.0)


class _Halving(keras_awn.distributions.WidthDistribution):
    """A user distribution without host-side overrides (exercises the eager fallback)."""

    def log_survival(self, x, parameter):
        return -parameter * x * 0.5

    def icdf(self, q, parameter):
        return -2.0 * ops.log1p(-q) / parameter

    def parameter_for_quantile(self, q, x):
        return -2.0 * math.log1p(-q) / x


# Built-in distributions (host-side closed forms) and a user subclass (eager fallback).
host_cases = pytest.mark.parametrize(
    "dist",
    [
        keras_awn.distributions.Exponential(),
        keras_awn.distributions.PowerLaw(scale=3.0),
        _Halving(),
    ],
    ids=["exponential", "power_law", "user_subclass"],
)


@host_cases
@pytest.mark.parametrize("normalization", ["sum", "mean"])
def test_host_importance_matches_the_in_step_importance(dist, normalization):
    raw = dist.raw_for_width(40, 0.9)
    active = 37
    in_step = np_(dist.importance(raw, 64, float(active), normalization))
    on_host = dist.importance_on_host(raw, active, normalization)
    assert on_host.shape == (active,)
    np.testing.assert_allclose(on_host, in_step[:active], rtol=2e-5)
    assert np.all(in_step[active:] == 0)


@host_cases
def test_host_width_matches_the_in_step_width(dist):
    raws = np.random.default_rng(3).uniform(-9.0, 4.0, size=200).astype("float32")
    in_step = np.array([float(np_(dist.width(float(raw), 0.9))) for raw in raws])
    on_host = np.array([dist.width_on_host(float(raw), 0.9) for raw in raws])
    # Widths a layer can hold agree exactly; for absurd widths (millions of units) the backends'
    # float32 transcendental functions may differ in the last bits.
    exact = in_step < 1e5
    assert exact.sum() > 50
    np.testing.assert_array_equal(on_host[exact], in_step[exact])
    np.testing.assert_allclose(on_host[~exact], in_step[~exact], rtol=1e-5)
