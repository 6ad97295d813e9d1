"""`AdaptiveWidthLayer`: what every layer with a learned number of units shares.

An adaptive layer physically allocates `capacity` units. Inside every (compiled) step it computes
its width from the learned width parameter, masks the units beyond it and scales the active ones
by their importance. Between steps, `keras_awn.callbacks.WidthController` reallocates the capacity
when the width approaches it or falls far below it. Subclasses (`AdaptiveDense`, ...) only say
which of their variables carry the unit axis and how they compute their pre-importance output.
"""

import contextvars
import math
import warnings

import keras
from keras import ops

from keras_awn import distributions as distributions_module
from keras_awn._engine import backend_guards
from keras_awn._engine import keras_internals
from keras_awn._engine import running_state
from keras_awn._engine import saving
from keras_awn._engine import validation
from keras_awn._engine.training_state import TrainingState

NORMALIZATIONS = ("sum", "mean")
WIDTH_LEARNING = ("search", "gradient")

# Set while a saved layer is rebuilt from its config (see `AdaptiveWidthLayer.__init__`).
_restoring = contextvars.ContextVar("keras_awn_restoring", default=False)

# The width a layer starts with when `initial_units` is not given. The width search doubles a
# layer that needs all its units and halves one that needs a third of them, so any start reaches
# the width a task needs within a few searches; 16 sits in the middle (on a log scale) of the
# widths 2 to 256 that tasks of the study needed (docs/study/width_search.md).
DEFAULT_INITIAL_UNITS = 16
# Stochastic prefixes (`width_learning="search"`): the share of a batch's examples that see only
# a prefix of the layer's units, and the smallest prefix, as a share of the width (prefixes are
# log-uniform between it and the whole width). Chosen by the study (docs/study/width_search.md):
# a quarter of the examples with prefixes down to half the width left wide layers spread over
# their units, and the search could not tell how many they needed.
PREFIX_SHARE = 0.5
PREFIX_LOW = 0.125
# The golden ratio's fractional part: the batch positions' prefix draws are a low-discrepancy
# sequence, so no random state is needed inside the step (and none is saved).
_GOLDEN = 0.6180339887498949

# The arguments that shape a learned width, with their defaults. Every adaptive layer takes them;
# blocks (`AdaptiveMLP`, `AdaptiveRNNCell`, `AdaptiveGINConv`, ...) pass them to their adaptive
# sublayers. Documented once, in `AdaptiveWidthLayer`'s docstring.
WIDTH_ARGUMENTS = {
    "quantile": 0.9,
    "distribution": "exponential",
    "min_units": 1,
    "max_units": None,
    "importance_normalization": "mean",
    "weight_prior_scale": 1.0,
    "width_prior": None,
    "width_learning": "search",
}


def validate_width_prior(width_prior):
    """Checks a `width_prior` argument and returns it as a plain dict (or None)."""
    if width_prior is None:
        return None
    if not isinstance(width_prior, dict) or set(width_prior) != {"mean_units", "scale"}:
        raise ValueError(
            "`width_prior` must be None or a dict with keys 'mean_units' and 'scale', e.g. "
            f"{{'mean_units': 64, 'scale': 1.0}}. Received: width_prior={width_prior!r}"
        )
    mean_units = validation.check_int("width_prior['mean_units']", width_prior["mean_units"])
    scale = validation.check_positive_number("width_prior['scale']", width_prior["scale"])
    return {"mean_units": mean_units, "scale": scale}


def validate_width_arguments(
    quantile,
    distribution,
    min_units,
    max_units,
    importance_normalization,
    weight_prior_scale,
    width_prior,
    width_learning="search",
) -> dict:
    """Checks the width arguments (see `WIDTH_ARGUMENTS`) and returns them normalised."""
    if width_learning not in WIDTH_LEARNING:
        raise ValueError(
            f"`width_learning` must be one of {WIDTH_LEARNING}. "
            f"Received: width_learning={width_learning!r}"
        )
    if not validation.is_number(quantile):
        raise ValueError(f"`quantile` must be a float in (0, 1). Received: quantile={quantile!r}")
    if not 0.0 < quantile < 1.0:
        raise ValueError(
            f"`quantile` must be in the open interval (0, 1). Received: quantile={quantile!r}"
        )
    distribution = distributions_module.get(distribution)
    min_units = validation.check_int("min_units", min_units)
    max_units = validation.check_int("max_units", max_units, allow_none=True)
    if max_units is not None and max_units < min_units:
        raise ValueError(
            "`max_units` must be >= `min_units`. "
            f"Received: max_units={max_units}, min_units={min_units}"
        )
    if importance_normalization not in NORMALIZATIONS:
        raise ValueError(
            f"`importance_normalization` must be one of {NORMALIZATIONS}. "
            f"Received: importance_normalization={importance_normalization!r}"
        )
    if weight_prior_scale is not None:
        weight_prior_scale = validation.check_positive_number(
            "weight_prior_scale", weight_prior_scale
        )
    width_prior = validate_width_prior(width_prior)
    if width_prior is not None and width_learning != "gradient":
        raise ValueError(
            "`width_prior` pulls the width parameter through its gradient, which only "
            "`width_learning='gradient'` (the paper's) trains; the width search sets the width "
            "itself. Pass `width_learning='gradient'` with a width prior. Received: "
            f"width_prior={width_prior!r}, width_learning={width_learning!r}"
        )
    return {
        "quantile": float(quantile),
        "distribution": distribution,
        "min_units": min_units,
        "max_units": max_units,
        "importance_normalization": importance_normalization,
        "weight_prior_scale": None if weight_prior_scale is None else float(weight_prior_scale),
        "width_prior": width_prior,
        "width_learning": width_learning,
    }


def pop_width_arguments(kwargs: dict) -> dict:
    """Takes the width arguments out of a block's `kwargs`, checked, defaults filled in.

    A block keeps what the user passed (a distribution name stays a name) for its sublayers
    and its config; the check runs here so that a bad value is refused by the block itself.
    """
    arguments = {name: kwargs.pop(name, default) for name, default in WIDTH_ARGUMENTS.items()}
    validate_width_arguments(**arguments)
    return arguments


def serialize_width_arguments(arguments: dict) -> dict:
    """The width arguments as a config holds them (a distribution instance serialized)."""
    return {
        **arguments,
        "distribution": distributions_module.serialize(arguments["distribution"]),
    }


class AdaptiveWidthLayer(keras.layers.Layer):
    """Base class of layers whose number of units is learned during `fit`.

    A subclass either exposes its units on the last axis of its output (`exposes_units = True`,
    `AdaptiveDense`, `AdaptiveConv2D`: the layers reading it follow its width), or keeps them
    inside (`exposes_units = False`, `AdaptiveMultiHeadAttention`: its heads feed its own output
    projection, and its output size is fixed).

    Args:
        initial_units: int >= 1 or None, the width the layer starts with. None (default): 16,
            from which the width search reaches what a task needs in a few searches.
        quantile: float in (0, 1), the share of the importance mass the width covers.
            Defaults to 0.9 (the paper).
        distribution: `"exponential"` (default), `"power_law"`, or a
            `keras_awn.distributions.WidthDistribution` instance.
        min_units: int >= 1, lower bound on the width. Defaults to 1.
        max_units: int >= `min_units` or None (unbounded, the default), upper bound on the width
            and on the capacity.
        capacity: int or None, units physically allocated. Defaults to twice `initial_units`,
            and at least the family's `min_capacity` (64 units for dense, recurrent and graph
            layers), capped by `max_units`, so the width can grow before the first
            reallocation.
        importance_normalization: `"mean"` (default: the active importances average 1, so
            activations keep their scale) or `"sum"` (the paper: they sum to 1). The default was
            chosen by the settings study (docs/choosing-settings.md): with `"sum"` the widths
            collapse and harder tasks are not learned at normal epoch budgets.
        weight_prior_scale: positive float or None, the standard deviation of the Gaussian prior
            on the active weights (the paper's sigma_theta). None disables it. Defaults to 1.0.
        width_prior: None (default) or `{"mean_units": int, "scale": float}`, a Gaussian prior
            on the width parameter centred where the width equals `mean_units` (requires
            `width_learning="gradient"`).
        width_learning: `"search"` (default) or `"gradient"`. `"search"`: the
            `WidthController`'s width search sets the width from what prefixes of the units
            score on training examples, and stochastic prefixes train the layer so that they
            can; the width parameter gets no gradient. `"gradient"`: the paper, the width
            parameter learns through the importance (its width stays near its start; see
            docs/semantics.md, "A deliberate deviation: the width search").
        **kwargs: base `keras.layers.Layer` arguments (`name`, `dtype`, ...).

    Example:

    ```python
    layer = keras_awn.layers.AdaptiveDense(16)  # any adaptive layer
    layer.build((None, 4))
    layer.active_units  # 16: the units in use
    layer.capacity  # 64: the units allocated (the width moves inside them between reallocations)
    layer.importance()  # one value per allocated unit: decreasing, zero from unit 16 on
    ```
    """

    # Whether the units are the last axis of the output (see the class docstring).
    exposes_units = True
    # The smallest capacity a layer of this family gets by default and from `WidthController`
    # (within its `max_units`). Below 64 units a masked unit of a dense layer costs less per
    # step than the rebuild, and on JAX and TensorFlow the recompilation, that growing later
    # takes (docs/performance.md, the spiral table). Families whose unit costs much more per
    # example (a convolution filter, an attention head) set 1: no floor.
    min_capacity = 64
    # False for layers called inside a loop (the hidden layers of a recurrent cell, set by the
    # cell): a loss added in `call` would be added once per time step, or leak from the loop's
    # trace. `keras_awn.Model` adds the prior of such layers once per step, in `compute_loss`.
    adds_prior_in_call = True

    def __init__(
        self,
        initial_units: int | None = None,
        quantile: float = 0.9,
        distribution="exponential",
        min_units: int = 1,
        max_units: int | None = None,
        capacity: int | None = None,
        importance_normalization: str = "mean",
        weight_prior_scale: float | None = 1.0,
        width_prior: dict | None = None,
        width_learning: str = "search",
        **kwargs,
    ):
        if initial_units is None:
            initial_units = DEFAULT_INITIAL_UNITS
        initial_units = validation.check_int("initial_units", initial_units)
        arguments = validate_width_arguments(
            quantile,
            distribution,
            min_units,
            max_units,
            importance_normalization,
            weight_prior_scale,
            width_prior,
            width_learning,
        )
        min_units, max_units = arguments["min_units"], arguments["max_units"]
        if capacity is not None:
            capacity = validation.check_int("capacity", capacity)
            if max_units is not None and capacity > max_units:
                raise ValueError(
                    "`capacity` must be <= `max_units`. "
                    f"Received: capacity={capacity}, max_units={max_units}"
                )
            if capacity < min_units:
                raise ValueError(
                    "`capacity` must be >= `min_units` (the width is never below it). "
                    f"Received: capacity={capacity}, min_units={min_units}"
                )
        if not _restoring.get():
            # A saved layer may hold less than it started with (its capacity followed its
            # width, or it was truncated); a new one starts inside its bounds.
            if capacity is not None and capacity < initial_units:
                raise ValueError(
                    "`capacity` must be >= `initial_units` (the units the layer starts with "
                    f"must exist). Received: capacity={capacity}, initial_units={initial_units}"
                )
            if max_units is not None and initial_units > max_units:
                raise ValueError(
                    "`initial_units` must be <= `max_units`. "
                    f"Received: initial_units={initial_units}, max_units={max_units}"
                )
        super().__init__(**kwargs)
        self.initial_units = initial_units
        self.quantile = arguments["quantile"]
        self.distribution = arguments["distribution"]
        self.min_units = arguments["min_units"]
        self.max_units = arguments["max_units"]
        self.importance_normalization = arguments["importance_normalization"]
        self.weight_prior_scale = arguments["weight_prior_scale"]
        self.width_prior = arguments["width_prior"]
        self.width_learning = arguments["width_learning"]
        if capacity is None:
            capacity = max(2 * initial_units, self.min_capacity, min_units)
            if max_units is not None:
                capacity = min(capacity, max_units)
        self.capacity = capacity
        # Computed eagerly here because readers may be built later inside a traced call.
        self.initial_reader_stddev = self._initial_reader_stddev()
        starting = self.active_units_on_host(
            self.distribution.raw_for_width(initial_units, self.quantile)
        )
        if starting != initial_units and not _restoring.get():
            if self.min_units > initial_units:
                reason = f"min_units={self.min_units} is above it"
            else:
                reason = (
                    "the narrowest width its distribution gives is "
                    f"{distributions_module.WIDTH_OFFSET + 1} units (the paper adds "
                    f"{distributions_module.WIDTH_OFFSET} to the quantile); `max_units` caps it "
                    "lower"
                )
            warnings.warn(
                f"Adaptive layer '{self.name}' starts at {starting} units, not "
                f"initial_units={initial_units}: {reason}.",
                stacklevel=2,
            )
        # What a running fit tells this layer (see `keras_awn._engine.training_state`); never
        # serialized.
        self.training_state = TrainingState()

    def _initial_reader_stddev(self) -> float:
        """The paper's initialisation scale of the layers reading this one, at the start."""
        return self.reader_stddev(
            self.distribution.raw_for_width(self.initial_units, self.quantile)
        )

    def reader_stddev(self, width_parameter: float) -> float:
        """`sqrt(2 / sum(p ** 2))` for this layer's importance `p` at `width_parameter`.

        The paper's initialisation of weights reading importance-scaled units: it keeps their
        scaled activations at unit variance, as He initialisation does for unscaled inputs.
        Computed on the host (used at construction and between steps).
        """
        active = self.active_units_on_host(width_parameter)
        importance = self.distribution.importance_on_host(
            width_parameter, active, self.importance_normalization
        )
        return math.sqrt(2.0 / float((importance**2).sum()))

    # -- Width and importance, in-graph ----------------------------------------------------------

    def _build_width_parameter(self):
        raw = self.distribution.raw_for_width(self.initial_units, self.quantile)
        self.width_parameter = self.add_weight(
            name="width_parameter",
            shape=(),
            initializer=keras.initializers.Constant(raw),
            # Trainable in both modes (the width search assigns it between steps and gives it a
            # zero gradient): on JAX the optimizer's step sees trainable variables only, and the
            # unit mask that `topology.UnitMaskConstraint` applies there reads it.
            trainable=True,
            # The width parameter feeds exp/log/ceil: keep it in float32 under mixed precision.
            dtype="float32",
            autocast=False,
        )

    def _learned_width_parameter(self):
        """The width parameter as the step uses it: without gradient while the width is frozen
        or set by the width search."""
        # `.value` (the step's value inside a stateless JAX step): operators and ops on it skip
        # the variable conversion, a dispatch on eager backends.
        raw = self.width_parameter.value
        if (
            self.width_learning == "search"
            or self.training_state.width_frozen
            or self.width_is_fixed
        ):
            # A zero gradient rather than none: TensorFlow's optimizer warns at every step about
            # a trainable variable without gradient.
            return ops.stop_gradient(raw) + 0.0 * raw
        return raw

    @property
    def width_is_fixed(self) -> bool:
        """Whether `min_units == max_units`: the width cannot move, so the layer learns none
        (no width gradient, no stochastic prefixes, no width search), and its importance stays
        as it is (`keras_awn.callbacks.WidthAnnealing` holds compressed layers so)."""
        return self.max_units is not None and self.min_units >= self.max_units

    def desired_units_tensor(self):
        """Width the distribution asks for, clamped to `[min_units, max_units]` (float tensor)."""
        return self._bounded_width(self.width_parameter.value, self._upper_units())

    def active_units_tensor(self):
        """Units that exist in this step: the desired width, capped by the capacity."""
        return self._bounded_width(
            self.width_parameter.value, min(self._upper_units(), self.capacity)
        )

    def _upper_units(self) -> float:
        return self.max_units if self.max_units is not None else math.inf

    def _bounded_width(self, width_parameter, upper):
        """The distribution's width clipped to `[min_units, upper]`.

        A bound that cannot bind is skipped. Widths are `ceil(quantile) + 2 >= 2` by
        construction. (The step itself needs no width: see `_unit_mask_at`.)
        """
        width = self.distribution.width(width_parameter, self.quantile)
        if self.min_units > distributions_module.WIDTH_OFFSET:
            width = ops.maximum(width, float(self.min_units))
        if math.isfinite(upper):
            width = ops.minimum(width, float(upper))
        return width

    def unit_mask(self):
        """1.0 for the active units, 0.0 beyond them; shape `(capacity,)`."""
        index = ops.arange(self.capacity, dtype="float32")
        frozen_units = self.training_state.frozen_units
        if frozen_units is not None:
            # Frozen: a constant of the fit. Also read where the width parameter is out of
            # reach (on JAX, the optimizer's update sees only trainable variables).
            return ops.cast(index < frozen_units, "float32")
        parameter = self.distribution.parameter(ops.stop_gradient(self.width_parameter.value))
        return self._unit_mask_at(parameter, index)

    def _unit_mask_at(self, parameter, index):
        """`unit_mask` at the distribution's parameter (a tensor without gradient).

        `index < ceil(icdf) + 2` holds exactly when `index - 2 < icdf` (the index is an integer),
        so the mask needs neither the width nor its bounds: `max_units` cannot bind below the
        capacity, and `min_units` raises the threshold. Three ops fewer than through the width,
        in every step of every layer (a dispatch each on eager backends).
        """
        threshold = self.distribution.icdf(self.quantile, parameter)
        if self.min_units > distributions_module.WIDTH_OFFSET:
            threshold = ops.maximum(
                threshold, float(self.min_units - distributions_module.WIDTH_OFFSET)
            )
        return ops.cast(index - float(distributions_module.WIDTH_OFFSET) < threshold, "float32")

    def importance(self):
        """Importance of each allocated unit, zero for masked units; shape `(capacity,)`."""
        return self.importance_and_mask()[0]

    def importance_and_mask(self):
        """`(importance, unit_mask)`, sharing one width computation.

        A layer's `call` uses this once per step and hands the mask to `prior_loss`: on eager
        backends (torch) every small op costs a dispatch, so neither the distribution's
        parameter nor the mask is computed twice.
        """
        parameter = self.distribution.parameter(self._learned_width_parameter())
        index = ops.arange(self.capacity, dtype="float32")
        mask = self._unit_mask_at(ops.stop_gradient(parameter), index)
        importance = self.distribution.importance_from_parameter(
            parameter, mask, index, self.importance_normalization
        )
        probe_cut = self.training_state.probe_cut
        if probe_cut is not None:
            # The width search evaluates the model with only the first `probe_cut` units.
            kept = ops.cast(index < float(probe_cut), "float32")
            importance, mask = importance * kept, mask * kept
        return importance, mask

    def _stochastic_prefixes(self, outputs, unit_mask, training):
        """`outputs` (units on the last axis) with `PREFIX_SHARE` of the batch's examples cut to
        a prefix of the active units (`width_learning="search"`, while training).

        Each example in a cut position sees units `0..c-1` only, with `c` log-uniform between
        `PREFIX_LOW` of the width and the width: the network learns to put what it needs first,
        so that the width search can read, from prefixes of the units, how many a task needs. No
        random state: the batch positions follow a low-discrepancy sequence (counted over the
        global batch under `tf.distribute`), and batches are shuffled.
        """
        if not (training and self.width_learning == "search") or self.width_is_fixed:
            return outputs
        if not self.training_state.prefix_training:
            return outputs
        batch = ops.shape(outputs)[0]
        offset = backend_guards.replica_batch_offset(batch)
        position = ops.arange(batch, dtype="float32") + 1.0 + offset
        draw = position * _GOLDEN - ops.floor(position * _GOLDEN)  # in [0, 1)
        width = ops.sum(unit_mask)
        # Log-uniform between PREFIX_LOW and 1 of the width: every scale gets trained.
        share = ops.exp(math.log(PREFIX_LOW) * draw / PREFIX_SHARE) * width
        cut = ops.where(draw < PREFIX_SHARE, ops.floor(share) + 1.0, float(self.capacity))
        index = ops.arange(self.capacity, dtype="float32")
        kept = ops.cast(index[None, :] < cut[:, None], outputs.dtype)
        shape = [-1] + [1] * (len(outputs.shape) - 2) + [self.capacity]
        return outputs * ops.reshape(kept, shape)

    # -- Width, eager (between steps) -----------------------------------------------------------

    def desired_units_on_host(self, width_parameter: float) -> float:
        """`desired_units_tensor()` at `width_parameter`, computed on the host (a Python float)."""
        width = self.distribution.width_on_host(width_parameter, self.quantile)
        return min(max(width, float(self.min_units)), self._upper_units())

    def active_units_on_host(self, width_parameter: float) -> int:
        """`active_units` at `width_parameter`, computed on the host: the desired width, capped
        by the capacity."""
        return int(min(self.desired_units_on_host(width_parameter), self.capacity))

    def _check_width_parameter(self) -> None:
        raw = float(running_state.host_value(self.width_parameter))
        if not math.isfinite(raw):
            raise ValueError(
                f"The width parameter of adaptive layer '{self.name}' is {raw}: its training "
                "diverged (a non-finite batch) before these weights were saved or read. Load an "
                "earlier checkpoint, or give it a finite value: "
                "`layer.width_parameter.assign(layer.distribution.raw_for_width(units, "
                "layer.quantile))`."
            )

    @property
    def desired_units(self) -> int:
        """Width the distribution asks for now (Python int, may exceed the capacity)."""
        self._check_width_parameter()
        width = float(ops.convert_to_numpy(self.desired_units_tensor()))
        if not math.isfinite(width):
            raise ValueError(
                f"The width of adaptive layer '{self.name}' is not finite ({width}): its width "
                f"parameter is {float(running_state.host_value(self.width_parameter))}. Set "
                "`max_units` to bound it."
            )
        return int(width)

    @property
    def active_units(self) -> int:
        """Number of units that currently exist (Python int)."""
        self._check_width_parameter()
        return int(ops.convert_to_numpy(self.active_units_tensor()))

    # -- What subclasses provide ---------------------------------------------------------------

    def output_unit_variables(self):
        """`[(variable, axis), ...]`: the variables indexed by this layer's units."""
        raise NotImplementedError

    def input_unit_variables(self):
        """`[(variable, axis), ...]`: the variables indexed by the units of the layer feeding this
        one, resized with it when this layer consumes an adaptive layer."""
        raise NotImplementedError

    def initializer_for(self, variable):
        """The initializer that draws new units of `variable` when the capacity grows."""
        raise NotImplementedError

    # -- The variational objective ---------------------------------------------------------------

    def _unit_square_sums(self, variable, axis, input_axis=None, input_mask=None):
        """Per unit on `axis`: the sum of the squares of its weights in `variable` (over the
        active inputs only when `input_axis` is given, masked by `input_mask`); shape
        `(units,)`.

        The caller masks the result once for all of a layer's variables: fewer ops than masking
        each variable, which matters on eager backends (torch), where each op costs a dispatch in
        the forward and in the backward pass.
        """
        value = variable.value
        if keras.backend.standardize_dtype(value.dtype) != "float32":
            value = ops.cast(value, "float32")
        squares = ops.square(value)
        rank = len(value.shape)
        if input_axis is not None:
            if rank == 2 and (input_axis, axis) == (0, 1):
                # A kernel: one product contracts the input axis with its mask. The `@` of a
                # 1 x n matrix, which every backend's tensors implement, skips the argument
                # conversion of a `keras.ops` call (a few times the product's cost on torch).
                return (input_mask[None, :] @ squares)[0]
            shape = [-1 if a == input_axis else 1 for a in range(rank)]
            squares = squares * ops.reshape(input_mask, shape)
        other_axes = tuple(a for a in range(rank) if a != axis)
        return ops.sum(squares, axis=other_axes) if other_axes else squares

    def prior_loss(self, unit_mask=None):
        """Negative log prior of this layer's active weights and width parameter (unscaled).

        `sum(theta^2) / (2 sigma_theta^2)` over the weights of active units (and, when an adaptive
        layer feeds this one, of its active inputs), plus `(nu - mu)^2 / (2 sigma_nu^2)` when a
        width prior is set. Masked units are excluded so they stay exactly as initialised.

        Args:
            unit_mask: this layer's `unit_mask()` when the caller has computed it already.
        """
        prior = self._prior(unit_mask, 1.0)
        return ops.zeros((), "float32") if prior is None else prior

    def _prior(self, unit_mask, factor):
        """`factor * prior_loss(unit_mask)`, or None without any prior.

        The factor is folded into the constants: on eager backends (torch) each op of the step
        costs a dispatch.
        """
        total = None
        if self.weight_prior_scale is not None:
            output_mask = self.unit_mask() if unit_mask is None else unit_mask
            producer = self.training_state.producer
            input_mask = producer.unit_mask() if producer is not None else None
            input_axes = {id(v): axis for v, axis in self.input_unit_variables()}
            unit_squares = None
            for variable, axis in self.output_unit_variables():
                input_axis = input_axes.get(id(variable)) if input_mask is not None else None
                term = self._unit_square_sums(variable, axis, input_axis, input_mask)
                unit_squares = term if unit_squares is None else unit_squares + term
            total = ops.sum(unit_squares * output_mask) * (
                factor / (2.0 * self.weight_prior_scale**2)
            )
        if self.width_prior is not None:
            mean = self.distribution.raw_for_width(self.width_prior["mean_units"], self.quantile)
            deviation = self._learned_width_parameter() - mean
            term = ops.square(deviation) * (factor / (2.0 * self.width_prior["scale"] ** 2))
            total = term if total is None else total + term
        return total

    def has_prior(self) -> bool:
        """Whether the layer has a prior (on its weights or on its width parameter)."""
        return self.weight_prior_scale is not None or self.width_prior is not None

    def _add_prior_loss(self, training, unit_mask=None):
        """Adds the prior scaled by 1/N (the ELBO per example) once N is known."""
        state = self.training_state
        if training and not state.controlled and not state.warned:
            state.warned = True
            warnings.warn(
                f"Adaptive layer '{self.name}' is training without a "
                "`keras_awn.callbacks.WidthController`: its capacity cannot grow or shrink and "
                "the prior is not part of the loss until the number of training examples is "
                "known. Use `keras_awn.Model`/`keras_awn.Sequential`, or pass "
                "`callbacks=[keras_awn.callbacks.WidthController()]` to `fit`. "
                "(`keras.models.clone_model` returns Keras' own model classes: clone with "
                "`keras_awn.clone_model`.)",
                stacklevel=3,
            )
        if self.adds_prior_in_call and state.num_examples is not None and self.has_prior():
            self.add_loss(self._prior(unit_mask, 1.0 / state.num_examples))

    def _clear_losses(self):
        # Keras' private hook, called at the start of every call: see
        # `keras_internals.forget_loss_ids` for why the old loss ids go first.
        keras_internals.forget_loss_ids(self)
        super()._clear_losses()

    def scaled_prior_loss(self):
        """The prior scaled by 1/N, or None while N is unknown or the layer has no prior."""
        num_examples = self.training_state.num_examples
        if num_examples is None or not self.has_prior():
            return None
        return self._prior(None, 1.0 / num_examples)

    # -- Loading -------------------------------------------------------------------------------

    def load_own_variables(self, store):
        stored = saving.stored_capacity(self, store) if self.built else None
        if stored is not None and stored != self.capacity:
            resize_on_load = self.training_state.resize_on_load
            if resize_on_load is None:
                raise ValueError(
                    f"The weights stored for adaptive layer '{self.name}' "
                    f"({type(self).__name__}) hold {stored} units, but its configuration says "
                    f"capacity={self.capacity}: the file does not match this model. Load a "
                    "`.keras` file with `keras.saving.load_model` (it restores the capacities), "
                    "or load weights into a `keras_awn.Model`/`keras_awn.Sequential`, whose "
                    "`load_weights` resizes its adaptive layers to the file."
                )
            resize_on_load(self, stored)
        super().load_own_variables(store)

    @classmethod
    def from_config(cls, config):
        restoring = _restoring.set(True)
        try:
            return cls(**config)
        except (TypeError, ValueError) as error:
            raise ValueError(
                f"The saved configuration of adaptive layer '{config.get('name')}' "
                f"({cls.__name__}) is incomplete or inconsistent: {error}. "
                f"Received: config={config!r}"
            ) from error
        finally:
            _restoring.reset(restoring)

    # -- Serialization -------------------------------------------------------------------------

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "initial_units": self.initial_units,
                "quantile": self.quantile,
                "distribution": distributions_module.serialize(self.distribution),
                "min_units": self.min_units,
                "max_units": self.max_units,
                # The current allocation, so that a reloaded model rebuilds the saved shapes.
                "capacity": self.capacity,
                "importance_normalization": self.importance_normalization,
                "weight_prior_scale": self.weight_prior_scale,
                "width_prior": self.width_prior,
                "width_learning": self.width_learning,
            }
        )
        return config


def deserialize_layer(layer):
    """`layer` itself, or the layer a serialized config (a block's saved sublayer) describes."""
    if layer is None or isinstance(layer, keras.layers.Layer):
        return layer
    return keras.saving.deserialize_keras_object(layer)
