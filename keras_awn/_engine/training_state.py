"""What a running `fit` tells an adaptive layer, and how the values its compiled step reads change.

A compiled train step (a `tf.function`, a `jax.jit` program) captures Python values when it is
traced: the number of training examples N that scales the prior, whether the width parameter is
frozen, the producer whose mask the prior reads, a width prior's scale. Changing one of them
without rebuilding the step would silently keep training with the old value, so every change
goes through `set_trace_constants`, which rebuilds the step functions when something changed.
"""

from keras_awn._engine import keras_internals
from keras_awn._engine.capacity_policy import CapacityRecord
from keras_awn._engine.capacity_policy import TrainingLedger


class TrainingState:
    """The values a `fit` gives one adaptive layer; never saved.

    Attributes:
        num_examples: the number of training examples N (scales the prior), or None while
            unknown. Read by the compiled step.
        width_frozen: whether the width parameter gets no gradient (a width warm-up). Read by
            the compiled step.
        producer: the adaptive layer whose units this layer reads, if any (the prior counts only
            its active inputs). Read by the compiled step; set by `topology.link`.
        controlled: whether a `WidthController` runs the current `fit`.
        warned: whether the layer warned that it trains without a controller.
        capacity: the capacity policy's `CapacityRecord` of the layer (settled or moving, the
            widths seen), kept from one `fit` call to the next.
        prefix_training: whether stochastic prefixes train the layer (`width_learning="search"`);
            off for the last part of a fit. Read by the compiled step.
        probe_cut: while the width search evaluates the model, the number of the layer's first
            units kept (the others count as masked); None otherwise. Read by eager calls only.
        compensated_readers: the ids of the layers given the paper's initialisation for reading
            this layer (`topology.compensate`), whose kernels are never redrawn again.
        frozen_units: while a `fit` runs with the layer frozen (`trainable = False`), its width
            (a float), else None. Read by the compiled step through `unit_mask()` (the
            `topology.UnitMaskConstraint` of a BatchNormalization reader): on JAX the
            optimizer's update sees only trainable variables, so the width parameter of a frozen
            layer cannot be read there, and a frozen width does not change.
        resize_on_load: while a keras_awn model loads weights, a function
            `(layer, capacity)` that reallocates the layer to the capacity the file holds;
            None otherwise (a mismatch is then an error).
    """

    def __init__(self):
        self.num_examples = None
        self.width_frozen = False
        self.producer = None
        self.controlled = False
        self.warned = False
        self.capacity = CapacityRecord()
        self.prefix_training = True
        self.probe_cut = None
        self.compensated_readers = set()
        self.frozen_units = None
        self.resize_on_load = None

    def __repr__(self):
        producer = self.producer.name if self.producer is not None else None
        return (
            f"TrainingState(num_examples={self.num_examples}, width_frozen={self.width_frozen}, "
            f"producer={producer}, controlled={self.controlled})"
        )


def set_trace_constants(model, assignments) -> bool:
    """Sets values that compiled steps read, and marks `model`'s steps stale if any changed.

    Args:
        model: the model whose train, test and predict functions read the values.
        assignments: iterable of `(holder, attribute, value)`: a layer's `training_state` or the
            layer itself (e.g. its `width_prior`).

    Returns:
        Whether anything changed (and the step functions will be rebuilt at their next use).
    """
    changed = False
    for holder, attribute, value in assignments:
        if getattr(holder, attribute) != value:
            setattr(holder, attribute, value)
            changed = True
    if changed:
        rebuild_step_functions(model)
    return changed


def rebuild_step_functions(model, new_shapes_only=False) -> None:
    """Forces the train/test/predict functions to be rebuilt at their next use.

    Needed after any change a traced step would not see: new variables (TensorFlow captures them
    by reference) or new trace constants (`set_trace_constants`).

    Args:
        model: the model.
        new_shapes_only: the change is new variables of new shapes and nothing else (a
            reallocation). On JAX the step functions are then kept: `jax.jit` traces them again
            for the new shapes by itself and keeps what it compiled for the shapes it has seen,
            so a capacity seen before costs no compilation. (A model on a `keras.distribution`
            is rebuilt: its steps carry the variables' layouts.)
    """
    if new_shapes_only and keras_internals.retraces_on_new_shapes(model):
        object.__setattr__(model, "_keras_awn_step_changes", step_changes(model) + 1)
        return
    if getattr(model, "compiled", False):
        model.make_train_function(force=True)
        model.make_test_function(force=True)
    if hasattr(model, "make_predict_function"):
        model.predict_function = None
    # Counted for custom loops that compile their own step (`step_changes`).
    object.__setattr__(model, "_keras_awn_step_changes", step_changes(model) + 1)


def step_changes(model) -> int:
    """How many times `model`'s compiled steps had to be rebuilt (new variables or new trace
    constants), by a reallocation, a `WidthController` or `WidthAnnealing`."""
    return getattr(model, "_keras_awn_step_changes", 0)


def training_ledger(model) -> TrainingLedger:
    """`model`'s `TrainingLedger` (what its rebuilds and masked units cost), kept with the model
    so that the capacity policy carries over from one `fit` call to the next; never saved."""
    ledger = getattr(model, "_keras_awn_training_ledger", None)
    if ledger is None:
        ledger = TrainingLedger()
        object.__setattr__(model, "_keras_awn_training_ledger", ledger)
    return ledger
