"""`WidthAnnealing`: dynamic compression, the paper's annealing of the width prior."""

import keras

from keras_awn._engine import topology
from keras_awn._engine import training_state
from keras_awn._engine import validation


class WidthAnnealing(keras.callbacks.Callback):
    """Dynamic compression: anneals the width prior's scale so that the network shrinks while it
    trains (the paper's "annealing").

    From `start_epoch` to `end_epoch`, the scale (sigma_nu) of every adaptive layer's width prior
    falls linearly from its value at the start of training to `final_fraction` of it. A smaller
    scale pulls each width parameter harder toward the prior's mean width
    (`width_prior["mean_units"]`, set it small), so the widths fall while the data keeps the units
    that matter. Only layers with a `width_prior` are annealed. The scale is a constant of the
    compiled step: each epoch that changes it rebuilds the step once.

    Args:
        start_epoch: int >= 0, the first epoch (0-based) whose scale is lowered.
        end_epoch: int > `start_epoch`; from epoch `end_epoch - 1` on, the scale stays at its
            final value.
        final_fraction: float in (0, 1], the final scale as a share of the initial one.
            Defaults to 0.1 (the paper anneals by 90%).

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
    ```
    """

    def __init__(self, start_epoch: int, end_epoch: int, final_fraction: float = 0.1):
        super().__init__()
        start_epoch = validation.check_int("start_epoch", start_epoch, minimum=0)
        if not validation.is_integer(end_epoch) or end_epoch <= start_epoch:
            raise ValueError(
                f"`end_epoch` must be an integer > start_epoch ({start_epoch}). "
                f"Received: end_epoch={end_epoch!r}"
            )
        validation.check_in_open_interval("final_fraction", final_fraction, 0.0, 1.0 + 1e-12)
        self.start_epoch = start_epoch
        self.end_epoch = int(end_epoch)
        self.final_fraction = float(final_fraction)
        self._initial_scales = {}

    def scale_fraction(self, epoch: int) -> float:
        """The share of the initial scale used during `epoch` (0-based)."""
        progress = (epoch - self.start_epoch + 1) / (self.end_epoch - self.start_epoch)
        progress = min(max(progress, 0.0), 1.0)
        return 1.0 - (1.0 - self.final_fraction) * progress

    def on_train_begin(self, logs=None):
        layers = [
            layer for layer in topology.adaptive_layers(self.model) if layer.width_prior is not None
        ]
        if not layers:
            raise ValueError(
                "WidthAnnealing anneals the width prior, but no adaptive layer of the model has "
                "one. Give the layers a `width_prior={'mean_units': m, 'scale': s}`."
            )
        for layer in layers:
            self._initial_scales.setdefault(id(layer), (layer, layer.width_prior["scale"]))

    def on_epoch_begin(self, epoch, logs=None):
        fraction = self.scale_fraction(epoch)
        # The scale is a constant of the compiled step.
        training_state.set_trace_constants(
            self.model,
            [
                (layer, "width_prior", {**layer.width_prior, "scale": initial * fraction})
                for layer, initial in self._initial_scales.values()
            ],
        )

    def get_config(self):
        return {
            "start_epoch": self.start_epoch,
            "end_epoch": self.end_epoch,
            "final_fraction": self.final_fraction,
        }
