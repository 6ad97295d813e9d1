"""Callbacks that manage adaptive widths during `fit`."""

import math
import warnings

import keras
from keras import ops

from keras_awn import graph
from keras_awn import reallocation


def _check_fraction(name, value, low, high):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low < value < high:
        raise ValueError(f"`{name}` must be a number in ({low}, {high}). Received: {name}={value!r}")


class WidthController(keras.callbacks.Callback):
    """Reallocates adaptive layers' capacity between training steps and scales their prior.

    Inside each step an adaptive layer's width moves freely up to its `capacity` (the units it
    physically owns). Every `check_every` steps and at the end of each epoch, this callback
    compares each layer's width with its capacity:

    - the width exceeds `grow_threshold * capacity`: the capacity becomes
      `ceil(growth_factor * width)`;
    - the width falls below `shrink_threshold * capacity`: likewise, the capacity shrinks to
      `ceil(growth_factor * width)`.

    So after any reallocation the width sits at `1 / growth_factor` of the capacity, and it must
    move by a constant factor before the next one: reallocations (each one rebuilds the compiled
    step) happen O(log(final width / initial width)) times per layer. A larger `growth_factor`
    means fewer rebuilds and more masked (wasted) units per step.

    Reallocation keeps the model's outputs, the optimizer state of surviving units and the
    training trajectory unchanged; see `keras_awn.reallocation`.

    The controller also gives each layer the number of training examples N, which scales the
    prior in the loss (the ELBO per example). `keras_awn.Model` and `keras_awn.Sequential` infer
    N from array inputs to `fit` and attach a controller themselves; pass one explicitly for a
    plain `keras.Model`, or to set N for datasets whose size Keras cannot know.

    Args:
        num_examples: int or None, the number of training examples N. None (default) takes the
            value inferred by `keras_awn.Model.fit`.
        check_every: int >= 1, the number of steps between width checks. Defaults to 8. Each
            check reads the width parameters from the device.
        growth_factor: float > 1, the capacity allocated per unit of width. Defaults to 2.0.
        grow_threshold: float in (0, 1], the share of the capacity the width may reach before
            the capacity grows. Defaults to 0.8.
        shrink_threshold: float in (0, 1 / growth_factor), the share of the capacity below
            which the capacity shrinks. Defaults to 0.25.
        width_warmup_epochs: int >= 0, the number of epochs at the start of training during
            which the width parameters get no gradient (the weights train at the initial widths).
            Defaults to 0 (the paper: the width learns from the first step).
        verbose: 0 (silent, default) or 1 (print each reallocation).

    Attributes:
        reallocations: list of dicts, one per layer reallocation, with keys `epoch`, `step`,
            `layer`, `width`, `old_capacity`, `new_capacity`.
        rebuilds: number of times the compiled step functions were rebuilt by a reallocation.

    Example:

    ```python
    model = keras.Sequential([
        keras.Input((2,)),
        keras_awn.layers.AdaptiveDense(16, activation="relu"),
        keras.layers.Dense(1),
    ])
    model.compile("adam", "mse")
    controller = keras_awn.callbacks.WidthController(num_examples=len(x))
    model.fit(x, y, epochs=10, callbacks=[controller])
    print(controller.reallocations)
    ```
    """

    def __init__(
        self,
        num_examples: int | None = None,
        check_every: int = 8,
        growth_factor: float = 2.0,
        grow_threshold: float = 0.8,
        shrink_threshold: float = 0.25,
        width_warmup_epochs: int = 0,
        verbose: int = 0,
    ):
        super().__init__()
        if num_examples is not None and (
            isinstance(num_examples, bool) or not isinstance(num_examples, int) or num_examples < 1
        ):
            raise ValueError(
                f"`num_examples` must be a positive integer or None. Received: num_examples={num_examples!r}"
            )
        if isinstance(check_every, bool) or not isinstance(check_every, int) or check_every < 1:
            raise ValueError(f"`check_every` must be an integer >= 1. Received: check_every={check_every!r}")
        if isinstance(growth_factor, bool) or not isinstance(growth_factor, (int, float)) or not growth_factor > 1:
            raise ValueError(f"`growth_factor` must be a number > 1. Received: growth_factor={growth_factor!r}")
        _check_fraction("grow_threshold", grow_threshold, 0.0, 1.0 + 1e-12)
        _check_fraction("shrink_threshold", shrink_threshold, 0.0, 1.0 / growth_factor)
        if (
            isinstance(width_warmup_epochs, bool)
            or not isinstance(width_warmup_epochs, int)
            or width_warmup_epochs < 0
        ):
            raise ValueError(
                "`width_warmup_epochs` must be an integer >= 0. "
                f"Received: width_warmup_epochs={width_warmup_epochs!r}"
            )
        if verbose not in (0, 1):
            raise ValueError(f"`verbose` must be 0 or 1. Received: verbose={verbose!r}")
        self.num_examples = num_examples
        self.check_every = check_every
        self.growth_factor = float(growth_factor)
        self.grow_threshold = float(grow_threshold)
        self.shrink_threshold = float(shrink_threshold)
        self.width_warmup_epochs = width_warmup_epochs
        self.verbose = verbose
        self.reallocations = []
        self.rebuilds = 0
        # Set by keras_awn.Model.fit from its inputs; an explicit num_examples wins.
        self.inferred_num_examples = None
        self._links = {}
        self._layers = []
        self._steps = 0
        self._epoch = 0

    # -- The capacity policy ----------------------------------------------------------------------

    def target_capacity(self, layer, width: int) -> int:
        """The capacity `layer` should have for `width` (its current capacity if no change)."""
        capacity = layer.capacity
        upper = layer.max_units if layer.max_units is not None else math.inf
        grow = width > self.grow_threshold * capacity and capacity < upper
        shrink = width < self.shrink_threshold * capacity
        if not (grow or shrink):
            return capacity
        target = max(math.ceil(self.growth_factor * width), layer.min_units, 1)
        return int(min(target, upper))

    # -- Callback hooks -------------------------------------------------------------------------

    def on_train_begin(self, logs=None):
        model = self.model  # on JAX, reading `self.model` syncs the training state
        self._links = graph.link(model)
        self._layers = graph.adaptive_layers(model)
        num_examples = self.num_examples or self.inferred_num_examples
        if num_examples is None and any(layer._has_prior() for layer in self._layers):
            raise ValueError(
                "keras_awn needs the number of training examples N to scale the prior of the "
                "adaptive layers (the ELBO per example), and could not infer it from the data "
                "passed to `fit` (it can from arrays and from loaders with a known length). Pass "
                "it as `callbacks=[keras_awn.callbacks.WidthController(num_examples=N)]`, or "
                "disable the priors (`weight_prior_scale=None` and `width_prior=None`)."
            )
        changed = False
        for layer in self._layers:
            layer._width_links.controlled = True
            if layer._num_examples != num_examples:
                layer._num_examples = num_examples
                changed = True
        if changed:
            # N is a constant of the traced step: retrace with the new value.
            reallocation.rebuild_step_functions(model)
        self._steps = 0
        self._check(model)

    def _set_width_frozen(self, frozen):
        """Freezes or releases the width parameters (a constant of the traced step)."""
        if any(layer._width_frozen != frozen for layer in self._layers):
            for layer in self._layers:
                layer._width_frozen = frozen
            reallocation.rebuild_step_functions(self.model)

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        self._set_width_frozen(epoch < self.width_warmup_epochs)

    def on_train_batch_begin(self, batch, logs=None):
        # Checked at the beginning of a batch: the end-of-batch hook would make Keras dispatch
        # every batch's callbacks synchronously.
        if self._steps and self._steps % self.check_every == 0:
            self._check(self.model)
        self._steps += 1

    def on_epoch_end(self, epoch, logs=None):
        self._check(self.model)
        if logs is not None:
            for layer in self._layers:
                logs.setdefault(f"{layer.name}_width", layer.active_units)

    def on_train_end(self, logs=None):
        self._set_width_frozen(False)
        for layer in self._layers:
            layer._width_links.controlled = False

    # -- Checking -------------------------------------------------------------------------------

    def _check(self, model):
        plan, widths = {}, {}
        for layer in self._layers:
            if not layer.built:
                continue
            width = float(ops.convert_to_numpy(layer.desired_units_tensor()))
            if not math.isfinite(width):
                warnings.warn(
                    f"The width of adaptive layer '{layer.name}' is not finite (its width "
                    "parameter diverged); its capacity is left unchanged.",
                    stacklevel=2,
                )
                continue
            widths[layer] = int(width)
            target = self.target_capacity(layer, int(width))
            if target != layer.capacity:
                plan[layer] = target
        if not plan:
            return
        old = {layer: layer.capacity for layer in plan}
        reallocation.resize(model, plan, self._links)
        self.rebuilds += 1
        for layer, capacity in plan.items():
            event = {
                "epoch": self._epoch,
                "step": self._steps,
                "layer": layer.name,
                "width": widths[layer],
                "old_capacity": old[layer],
                "new_capacity": capacity,
            }
            self.reallocations.append(event)
            if self.verbose:
                print(
                    f"WidthController: '{layer.name}' capacity {old[layer]} -> {capacity} "
                    f"(width {widths[layer]}, epoch {self._epoch}, step {self._steps})"
                )

    def get_config(self):
        return {
            "num_examples": self.num_examples,
            "check_every": self.check_every,
            "growth_factor": self.growth_factor,
            "grow_threshold": self.grow_threshold,
            "shrink_threshold": self.shrink_threshold,
            "width_warmup_epochs": self.width_warmup_epochs,
            "verbose": self.verbose,
        }
