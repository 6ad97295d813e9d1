"""`WidthAnnealing`: dynamic compression, by the width prior (the paper) or to a target size."""

import math

import keras

from keras_awn._engine import resize
from keras_awn._engine import topology
from keras_awn._engine import training_state
from keras_awn._engine import validation
from keras_awn._engine import width_search

DEFAULT_FINAL_FRACTION = 0.1


class WidthAnnealing(keras.callbacks.Callback):
    """Dynamic compression: the network shrinks while it trains.

    Two schedules, both linear from `start_epoch` to `end_epoch`:

    **The width prior (the paper's annealing)**, the default. The scale (sigma_nu) of every
    adaptive layer's width prior falls from its value at the start of training to
    `final_fraction` of it. A smaller scale pulls each width parameter harder toward the prior's
    mean width (`width_prior["mean_units"]`, set it small), so the widths fall while the data
    keeps the units that matter. Only layers with a `width_prior` are annealed.

    **A target size** (`target_fraction`, `target_units` or `target_parameters`). Each annealed
    layer's width falls from its width when annealing starts to its target, one step per
    epoch: its least important units go, and the layers reading it are rescaled so that the
    kept units compute what they computed (the width search's `set_width`). The width is held
    there (`min_units = max_units`, also in the saved config), so from `end_epoch - 1` on every
    annealed layer has its target width, and `keras_awn.strip` gives a model of that size.
    This is the compression recipe for a model made adaptive by `keras_awn.adapt`
    (docs/adapt.md). Layers frozen with `trainable = False` are not annealed.

    Either schedule changes a constant of the compiled step: each epoch that changes it
    rebuilds the step once.

    Args:
        start_epoch: int >= 0, the first epoch (0-based) annealed.
        end_epoch: int > `start_epoch`; from epoch `end_epoch - 1` on, the scale or the bounds
            stay at their final values.
        final_fraction: float in (0, 1], the final scale of the width prior as a share of the
            initial one. Defaults to 0.1 (the paper anneals by 90%).
        target_fraction: float in (0, 1], each layer's target width as a share of its width
            when this callback first sees the model (at least one unit). A `fit` resumed
            after an interruption (`BackupAndRestore`) gets a new callback, which would take
            the share of the widths already cut: resume with `target_units` instead.
        target_units: `{layer name: units}`, the target width of some adaptive layers (the
            others are not annealed).
        target_parameters: int >= 1, a budget: the most parameters the model may hold at its
            active widths (what `keras_awn.strip` keeps). Every layer keeps the same share of
            its width, the largest that fits.

    Example:

    ```python
    model = keras_awn.Sequential([
        keras.Input((2,)),
        keras_awn.layers.AdaptiveDense(32, activation="relu",
                                       width_prior={"mean_units": 4, "scale": 10.0},
                                       width_learning="gradient"),
        keras.layers.Dense(2),
    ])
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=20, callbacks=[
        keras_awn.callbacks.WidthAnnealing(start_epoch=8, end_epoch=16, final_fraction=0.1)
    ])
    # Or to a size: a quarter of each layer's units from the first epoch on (one cut, then
    # fine-tuning at that size; `WidthAnnealing(0, 4, ...)` would cut over epochs 0 to 3).
    model.fit(x, y, epochs=6, callbacks=[
        keras_awn.callbacks.WidthAnnealing(0, 1, target_fraction=0.25)
    ])
    ```
    """

    def __init__(
        self,
        start_epoch: int,
        end_epoch: int,
        final_fraction: float | None = None,
        target_fraction: float | None = None,
        target_units: dict | None = None,
        target_parameters: int | None = None,
    ):
        super().__init__()
        start_epoch = validation.check_int("start_epoch", start_epoch, minimum=0)
        if not validation.is_integer(end_epoch) or end_epoch <= start_epoch:
            raise ValueError(
                f"`end_epoch` must be an integer > start_epoch ({start_epoch}). "
                f"Received: end_epoch={end_epoch!r}"
            )
        targets = {
            "target_fraction": target_fraction,
            "target_units": target_units,
            "target_parameters": target_parameters,
        }
        given = {name: value for name, value in targets.items() if value is not None}
        if len(given) > 1 or (given and final_fraction is not None):
            raise ValueError(
                "Pass at most one of `final_fraction` (the width prior's schedule), "
                "`target_fraction`, `target_units` and `target_parameters`. Received: "
                + ", ".join(
                    f"{n}={v!r}"
                    for n, v in {"final_fraction": final_fraction, **given}.items()
                    if v is not None
                )
            )
        if target_fraction is not None:
            if not validation.is_number(target_fraction) or not 0.0 < target_fraction <= 1.0:
                raise ValueError(
                    "`target_fraction` must be a number in (0, 1]. "
                    f"Received: target_fraction={target_fraction!r}"
                )
            target_fraction = float(target_fraction)
        if target_units is not None:
            if not isinstance(target_units, dict) or not target_units:
                raise ValueError(
                    "`target_units` must be a non-empty dict {layer name: units}. "
                    f"Received: target_units={target_units!r}"
                )
            for name, units in target_units.items():
                validation.check_int(f"target_units[{name!r}]", units)
        if target_parameters is not None:
            target_parameters = validation.check_int("target_parameters", target_parameters)
        if final_fraction is None and not given:
            final_fraction = DEFAULT_FINAL_FRACTION
        if final_fraction is not None:
            validation.check_in_open_interval("final_fraction", final_fraction, 0.0, 1.0 + 1e-12)
            final_fraction = float(final_fraction)
        self.start_epoch = start_epoch
        self.end_epoch = int(end_epoch)
        self.final_fraction = final_fraction
        self.target_fraction = target_fraction
        self.target_units = dict(target_units) if target_units is not None else None
        self.target_parameters = target_parameters
        self._initial_scales = {}
        # Size targets: {id(layer): (layer, width when annealing starts, target width)}.
        self._targets = {}

    @property
    def anneals_size(self) -> bool:
        return self.final_fraction is None

    def scale_fraction(self, epoch: int) -> float:
        """The share of the initial scale (or of the way from the start width to the target
        width still to go) used during `epoch` (0-based)."""
        final = 0.0 if self.anneals_size else self.final_fraction
        return 1.0 - (1.0 - final) * self._progress(epoch)

    def _progress(self, epoch: int) -> float:
        progress = (epoch - self.start_epoch + 1) / (self.end_epoch - self.start_epoch)
        return min(max(progress, 0.0), 1.0)

    def on_train_begin(self, logs=None):
        if self.anneals_size:
            return
        layers = [
            layer for layer in topology.adaptive_layers(self.model) if layer.width_prior is not None
        ]
        if not layers:
            raise ValueError(
                "WidthAnnealing anneals the width prior, but no adaptive layer of the model has "
                "one. Give the layers a `width_prior={'mean_units': m, 'scale': s}`, or anneal "
                "to a size with `target_fraction`, `target_units` or `target_parameters`."
            )
        for layer in layers:
            self._initial_scales.setdefault(id(layer), (layer, layer.width_prior["scale"]))

    def on_epoch_begin(self, epoch, logs=None):
        if self.anneals_size:
            if epoch >= self.start_epoch:
                self._anneal_size(epoch)
            return
        fraction = self.scale_fraction(epoch)
        # The scale is a constant of the compiled step.
        training_state.set_trace_constants(
            self.model,
            [
                (layer, "width_prior", {**layer.width_prior, "scale": initial * fraction})
                for layer, initial in self._initial_scales.values()
            ],
        )

    # -- Annealing to a size -------------------------------------------------------------------

    def _annealed_layers(self):
        layers = [
            layer
            for layer in topology.adaptive_layers(self.model)
            if layer.built and layer.trainable
        ]
        if self.target_units is not None:
            names = {layer.name for layer in layers}
            unknown = sorted(set(self.target_units) - names)
            if unknown:
                raise ValueError(
                    f"`target_units` names layers that are not trainable adaptive layers of the "
                    f"model: {unknown}. Adaptive layers: {sorted(names)}. "
                    f"Received: target_units={self.target_units!r}"
                )
            layers = [layer for layer in layers if layer.name in self.target_units]
        if not layers:
            raise ValueError("WidthAnnealing found no trainable adaptive layer to anneal.")
        return layers

    def _parameters_at(self, widths, links):
        """Parameters of the model at `widths` (the width parameters, which `strip` drops, left
        out)."""
        return resize.parameter_count(self.model, widths, links) - len(widths)

    def _targets_for(self, layers, links):
        starts = {layer: layer.active_units for layer in layers}
        if self.target_units is not None:
            return {
                layer: min(int(self.target_units[layer.name]), starts[layer]) for layer in layers
            }
        if self.target_fraction is not None:
            return {
                layer: max(1, math.ceil(self.target_fraction * w)) for layer, w in starts.items()
            }
        # A budget: the largest common share of every layer's width that fits it.
        others = {
            layer: layer.active_units
            for layer in topology.adaptive_layers(self.model)
            if layer.built and layer not in starts
        }

        def widths_at(share):
            return {layer: max(1, math.ceil(share * w)) for layer, w in starts.items()}

        def fits(share):
            return self._parameters_at({**others, **widths_at(share)}, links) <= (
                self.target_parameters
            )

        if not fits(0.0):
            smallest = self._parameters_at({**others, **widths_at(0.0)}, links)
            raise ValueError(
                f"`target_parameters` is below what model '{self.model.name}' holds with one "
                f"unit per annealed layer ({smallest:,} parameters). "
                f"Received: target_parameters={self.target_parameters}"
            )
        if fits(1.0):
            return widths_at(1.0)
        low, high = 0.0, 1.0  # fits(low) and not fits(high)
        for _ in range(40):
            middle = (low + high) / 2
            low, high = (middle, high) if fits(middle) else (low, middle)
        return widths_at(low)

    def _anneal_size(self, epoch):
        links = topology.link(self.model)
        if not self._targets:
            layers = self._annealed_layers()
            for layer, target in self._targets_for(layers, links).items():
                self._targets[id(layer)] = (layer, layer.active_units, target)
        still_to_go = self.scale_fraction(epoch)
        bounds, capacities = [], {}
        for layer, start, target in self._targets.values():
            bound = target + math.floor((start - target) * still_to_go)
            if layer.max_units == bound and layer.min_units == bound:
                continue
            if layer.active_units != bound:
                # `set_width` reads the layer's bounds for the old width and the new one: a
                # lower `min_units` first lets the new one go below the old bound.
                layer.min_units = min(layer.min_units, bound)
                width_search.set_width(layer, bound, links[layer])
            # Held at the bound: the width search (or the gradient) cannot move it.
            bounds += [(layer, "max_units", bound), (layer, "min_units", bound)]
            if layer.capacity > bound:
                # The mask reads the width parameter and the capacity, not `max_units`.
                capacities[layer] = bound
        if capacities:
            resize.resize(self.model, capacities, links)
        # The bounds are constants of the compiled step.
        # (A changed bound always includes `max_units`, so this rebuilds the step.)
        training_state.set_trace_constants(self.model, bounds)

    def get_config(self):
        return {
            "start_epoch": self.start_epoch,
            "end_epoch": self.end_epoch,
            "final_fraction": self.final_fraction,
            "target_fraction": self.target_fraction,
            "target_units": self.target_units,
            "target_parameters": self.target_parameters,
        }
