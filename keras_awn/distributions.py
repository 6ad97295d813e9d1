"""Discretized width distributions: how important neuron i is, and how many neurons exist.

An adaptive layer owns one unconstrained scalar, its *width parameter* `raw`. A distribution maps it
to a positive parameter (`softplus(raw)` by default) of a continuous, decreasing base distribution
over `[0, inf)` with cdf `F`. Neuron `i` (0, 1, 2, ...) gets the probability mass

    f(i) = F(i + 1) - F(i)

and the layer's width is the smallest integer count of neurons whose mass reaches the `quantile`,
plus the reference implementation's offset of 2:

    width = ceil(F^-1(quantile)) + 2

Everything is written once with `keras.ops`, so it runs inside compiled train steps on every
backend. Subclass `WidthDistribution` and implement `log_survival`, `icdf` and
`parameter_for_quantile` to plug in your own base distribution.

References:
    Errica et al., "Adaptive Width Neural Networks", ICLR 2026 (arXiv:2501.15889).
"""

import math

import keras
import numpy as np
from keras import ops

from keras_awn._engine import validation

# The reference implementation adds 2 neurons to the quantile "to avoid degenerate cases".
WIDTH_OFFSET = 2


def _inverse_softplus(value: float) -> float:
    """Python-side inverse of softplus, stable for small and large values."""
    if value > 20.0:
        return value
    return math.log(math.expm1(value))


def _neg_log1p_neg(q):
    """`-log(1 - q)`, a Python float when `q` is one (a constant of the traced step)."""
    if isinstance(q, (int, float)):
        return -math.log1p(-q)
    return -ops.log1p(-q)


class WidthDistribution:
    """Base class of the discretized, decreasing distributions that set an adaptive width.

    Subclasses implement three methods of the continuous base distribution, all in terms of its
    positive parameter (see `parameter`):

    - `log_survival(x, parameter)`: `log(1 - F(x))`.
    - `icdf(q, parameter)`: the continuous quantile `F^-1(q)`.
    - `parameter_for_quantile(q, x)`: the parameter for which `F^-1(q) == x` (a Python float),
      used to start a layer at a requested width.

    Everything else (masses, cdf, log-probabilities, widths and importance vectors) is derived
    here. The base distribution must be decreasing: neuron 0 is always the most important one.

    Example:

    ```python
    class Geometric(keras_awn.distributions.WidthDistribution):
        def log_survival(self, x, parameter):
            return -parameter * x
        def icdf(self, q, parameter):
            return -keras.ops.log1p(-q) / parameter
        def parameter_for_quantile(self, q, x):
            return -math.log1p(-q) / x

    layer = keras_awn.layers.AdaptiveDense(16, distribution=Geometric())
    ```
    (Register the subclass with `keras.saving.register_keras_serializable` to save models using
    it.)
    """

    # -- The three methods a subclass provides ---------------------------------------------------

    def log_survival(self, x, parameter):
        """Log of the survival function `log(1 - F(x))` of the continuous base distribution."""
        raise NotImplementedError(
            f"{type(self).__name__} must implement `log_survival(x, parameter)`."
        )

    def icdf(self, q, parameter):
        """Continuous quantile function `F^-1(q)` of the base distribution.

        `q` is a Python float when the layers call it (so a closed form can fold it into a
        constant), a tensor in general.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement `icdf(q, parameter)`.")

    def parameter_for_quantile(self, q: float, x: float) -> float:
        """The positive parameter for which `icdf(q, parameter) == x` (Python floats)."""
        raise NotImplementedError(
            f"{type(self).__name__} must implement `parameter_for_quantile(q, x)`."
        )

    # -- Parameterisation -------------------------------------------------------------------------

    def parameter(self, raw):
        """Maps the unconstrained width parameter to the distribution's positive parameter."""
        return ops.softplus(raw)

    def inverse_parameter(self, parameter: float) -> float:
        """Python-side inverse of `parameter`: the raw value giving a positive parameter."""
        if not parameter > 0:
            raise ValueError(f"The parameter must be positive. Received: parameter={parameter}")
        return _inverse_softplus(float(parameter))

    # -- Derived quantities, all in keras.ops ---------------------------------------------------

    def cdf(self, x, raw):
        """Continuous cdf `F(x)` at the width parameter `raw`."""
        x = ops.convert_to_tensor(x, dtype="float32")
        return -ops.expm1(self.log_survival(x, self.parameter(raw)))

    def discrete_cdf(self, i, raw):
        """Mass of neurons `0..i`: `F(i + 1)`."""
        i = ops.convert_to_tensor(i, dtype="float32")
        return self.cdf(i + 1.0, raw)

    def log_prob(self, i, raw):
        """Log mass of neuron `i`: `log(F(i + 1) - F(i))`.

        Computed as `log S(i) + log(1 - S(i + 1) / S(i))` with `S = 1 - F`, which stays accurate
        where `F` is close to 1 (the tail) and where consecutive masses are almost equal (a wide
        layer), instead of subtracting two cdf values.
        """
        i = ops.convert_to_tensor(i, dtype="float32")
        return self._log_prob_from_parameter(i, self.parameter(raw))

    def _log_prob_from_parameter(self, i, parameter):
        log_s = self.log_survival(i, parameter)
        log_s_next = self.log_survival(i + 1.0, parameter)
        return log_s + ops.log(-ops.expm1(log_s_next - log_s))

    def relative_log_mass_from_parameter(self, i, parameter):
        """`log_prob(i) - max log_prob` at the positive parameter (`i`: float32 tensor): the log
        mass relative to neuron 0, all the normalised importance needs (values <= 0, so `exp`
        stays in range).

        It runs in every training step: subclasses with a cheaper closed form override it (the
        exponential's is `-rate * i`).
        """
        log_mass = self._log_prob_from_parameter(i, parameter)
        return log_mass - ops.max(log_mass)

    def prob(self, i, raw):
        """Mass of neuron `i`: `F(i + 1) - F(i)`."""
        return ops.exp(self.log_prob(i, raw))

    def width(self, raw, quantile):
        """Number of neurons covering `quantile` of the mass, plus the offset of 2 (float tensor).

        Has no gradient: the width is an integer; the width parameter learns through the
        importance vector only.
        """
        raw = ops.stop_gradient(ops.convert_to_tensor(raw, dtype="float32"))
        # `quantile` stays a Python float: the built-in `icdf`s then fold it into a constant.
        return ops.ceil(self.icdf(float(quantile), self.parameter(raw))) + float(WIDTH_OFFSET)

    def importance(
        self, raw, capacity: int, active_units, normalization: str = "mean", mask=None, index=None
    ):
        """Importance of neurons `0..capacity-1`, zero from `active_units` on.

        Args:
            raw: scalar width parameter.
            capacity: static number of neurons physically allocated.
            active_units: scalar tensor, the number of neurons that exist (`<= capacity`).
            normalization: `"mean"` (the active importances average 1, so the scaled
                activations keep their scale; keras_awn's default) or `"sum"` (the paper: they
                sum to 1).
            mask: optional `(capacity,)` float tensor equal to `index < active_units`, when the
                caller has already computed it.
            index: optional `(capacity,)` float tensor `0, 1, ..., capacity - 1`, likewise.

        Returns:
            A float32 tensor of shape `(capacity,)`.
        """
        if normalization not in ("sum", "mean"):
            raise ValueError(
                "`normalization` must be one of 'sum', 'mean'. "
                f"Received: normalization={normalization!r}"
            )
        if index is None:
            index = ops.arange(capacity, dtype="float32")
        active_units = ops.cast(active_units, "float32")
        if mask is None:
            mask = ops.cast(index < active_units, "float32")
        return self.importance_from_parameter(
            self.parameter(raw), mask, index, normalization, active_units
        )

    def importance_from_parameter(self, parameter, mask, index, normalization, active_units=None):
        """`importance` at the positive parameter, from the step's float32 tensors.

        `active_units` defaults to the number of ones in `mask`. Written with Python operators
        on tensors where it can: on eager backends (torch) an operator skips the argument
        conversion of a `keras.ops` call, and this runs in every step of every adaptive layer.
        """
        mass = ops.exp(self.relative_log_mass_from_parameter(index, parameter)) * mask
        if normalization == "sum":
            return mass / ops.sum(mass)
        if active_units is None:
            active_units = ops.sum(mask)
        return mass * (active_units / ops.sum(mass))

    # -- Host-side evaluation, between steps ----------------------------------------------------

    def parameter_on_host(self, raw: float) -> float:
        """`parameter(raw)` as a Python float (computed in float32, as in the step)."""
        if type(self).parameter is WidthDistribution.parameter:
            return float(np.logaddexp(np.float32(0.0), np.float32(raw)))  # softplus
        return float(ops.convert_to_numpy(self.parameter(ops.convert_to_tensor(raw, "float32"))))

    def icdf_on_host(self, q: float, parameter: float):
        """`icdf` as a float32 numpy scalar, or None (the default) to evaluate `icdf` eagerly."""
        return None

    def width_on_host(self, raw: float, quantile: float) -> float:
        """`width(raw, quantile)` as a Python float, computed between steps.

        The built-in distributions compute it with numpy in float32 like the step does (the
        controller checks widths every few steps; eager backend ops would cost a dispatch each,
        and on JAX a device round trip). Other distributions evaluate `width` eagerly.
        """
        icdf = self.icdf_on_host(float(quantile), self.parameter_on_host(float(raw)))
        if icdf is None:
            return float(ops.convert_to_numpy(self.width(float(raw), quantile)))
        return float(np.ceil(np.float32(icdf)) + np.float32(WIDTH_OFFSET))

    def log_survival_on_host(self, x: np.ndarray, parameter: float) -> np.ndarray:
        """`log_survival` in numpy (float64), used between steps.

        Defaults to evaluating `log_survival` eagerly. The built-in distributions override it:
        on JAX every eager op at a new shape compiles a kernel, and reallocations bring new
        shapes.
        """
        x = ops.convert_to_tensor(np.asarray(x, dtype="float32"))
        value = self.log_survival(x, ops.convert_to_tensor(parameter, dtype="float32"))
        return np.asarray(ops.convert_to_numpy(value), dtype="float64")

    def importance_on_host(self, raw: float, active_units: int, normalization: str = "mean"):
        """The importance of the first `active_units` neurons, in numpy (float64).

        The same values as `importance(raw, capacity, active_units, normalization)` over its
        active entries, computed on the host (used between steps, e.g. to initialise the
        weights that read a layer's new units).
        """
        index = np.arange(int(active_units), dtype="float64")
        parameter = self.parameter_on_host(float(raw))
        log_s = self.log_survival_on_host(index, parameter)
        log_s_next = self.log_survival_on_host(index + 1.0, parameter)
        log_mass = log_s + np.log(-np.expm1(log_s_next - log_s))
        mass = np.exp(log_mass - log_mass.max())
        if normalization == "sum":
            return mass / mass.sum()
        return mass * (len(mass) / mass.sum())

    def raw_for_width(self, units: int, quantile: float) -> float:
        """The raw width parameter whose `width(raw, quantile)` equals `units` (Python float).

        The quantile is placed in the middle of the interval that rounds up to `units - 2`, so
        float32 rounding cannot tip the width by one. The smallest width the offset of 2 allows
        is 3; smaller requests start at 3.
        """
        target = max(units - WIDTH_OFFSET - 0.5, 0.5)
        return self.inverse_parameter(self.parameter_for_quantile(float(quantile), target))

    # -- Serialization -------------------------------------------------------------------------

    def get_config(self) -> dict:
        return {}

    @classmethod
    def from_config(cls, config: dict):
        return cls(**config)

    def __eq__(self, other):
        return type(self) is type(other) and self.get_config() == other.get_config()

    def __hash__(self):
        return hash((type(self).__name__, tuple(sorted(self.get_config().items()))))

    def __repr__(self):
        arguments = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({arguments})"


@keras.saving.register_keras_serializable(package="keras_awn")
class Exponential(WidthDistribution):
    """Discretized exponential importance, the paper's default.

    `F(x) = 1 - exp(-rate * x)` with `rate = softplus(raw)`, so neuron `i` has mass
    `exp(-rate * i) * (1 - exp(-rate))` and the width is `ceil(-log(1 - q) / rate) + 2`.
    Rate 0.01 gives about 230 neurons at the 0.9 quantile.

    Example:

    >>> dist = keras_awn.distributions.Exponential()
    >>> int(dist.width(dist.raw_for_width(32, 0.9), 0.9))
    32
    """

    def log_survival(self, x, parameter):
        return -parameter * x

    def icdf(self, q, parameter):
        return _neg_log1p_neg(q) / parameter

    def parameter_for_quantile(self, q, x):
        return -math.log1p(-q) / x

    def log_survival_on_host(self, x, parameter):
        return -parameter * np.asarray(x, dtype="float64")

    def icdf_on_host(self, q, parameter):
        return np.float32(-math.log1p(-q)) / np.float32(parameter)

    def relative_log_mass_from_parameter(self, i, parameter):
        # log p(i) = -rate * i + log(1 - exp(-rate)); the second term does not depend on i.
        return -parameter * i


@keras.saving.register_keras_serializable(package="keras_awn")
class PowerLaw(WidthDistribution):
    """Discretized power-law (Lomax) importance with a learned exponent.

    `F(x) = 1 - (1 + x / scale) ** (-exponent)` with `exponent = softplus(raw)`: the mass of
    neuron `i` decays like `i ** -(exponent + 1)`, a heavier tail than the exponential, so the
    importance of late neurons falls off slowly and a layer keeps more "almost important" neurons.
    The width is `ceil(scale * ((1 - q) ** (-1 / exponent) - 1)) + 2`.

    Args:
        scale: positive float, the number of neurons over which the importance stays roughly
            flat before the power-law decay sets in. Defaults to 1.0.

    Example:

    >>> dist = keras_awn.distributions.PowerLaw(scale=4.0)
    >>> int(dist.width(dist.raw_for_width(64, 0.9), 0.9))
    64
    """

    def __init__(self, scale: float = 1.0):
        self.scale = validation.check_positive_number("scale", scale)

    def log_survival(self, x, parameter):
        return -parameter * ops.log1p(x / self.scale)

    def log_survival_on_host(self, x, parameter):
        return -parameter * np.log1p(np.asarray(x, dtype="float64") / self.scale)

    def icdf_on_host(self, q, parameter):
        exponent = np.float32(-math.log1p(-q)) / np.float32(parameter)
        with np.errstate(over="ignore"):  # inf, as in the step, for a diverged parameter
            return np.float32(self.scale) * np.expm1(exponent)

    def icdf(self, q, parameter):
        return self.scale * ops.expm1(_neg_log1p_neg(q) / parameter)

    def parameter_for_quantile(self, q, x):
        return -math.log1p(-q) / math.log1p(x / self.scale)

    def get_config(self):
        return {"scale": self.scale}


_BY_NAME = {"exponential": Exponential, "power_law": PowerLaw}


def serialize(distribution):
    """Serializes a distribution for a config: a name stays a name, an instance becomes a Keras
    config dict."""
    if isinstance(distribution, str):
        return distribution
    return keras.saving.serialize_keras_object(distribution)


def get(identifier) -> WidthDistribution:
    """Returns a distribution from a name (`"exponential"`, `"power_law"`), config or instance.

    Raises:
        ValueError: the identifier names no known distribution.
    """
    if isinstance(identifier, WidthDistribution):
        return identifier
    if isinstance(identifier, str):
        if identifier not in _BY_NAME:
            raise ValueError(
                f"Unknown distribution. Expected one of {sorted(_BY_NAME)} or a "
                f"`WidthDistribution` instance. Received: distribution={identifier!r}"
            )
        return _BY_NAME[identifier]()
    if isinstance(identifier, dict):
        distribution = keras.saving.deserialize_keras_object(identifier)
        if isinstance(distribution, WidthDistribution):
            return distribution
    raise ValueError(
        f"Expected a distribution name from {sorted(_BY_NAME)}, a `WidthDistribution` instance "
        f"or its serialized config. Received: distribution={identifier!r}"
    )
