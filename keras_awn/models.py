"""`keras_awn.Model` and `keras_awn.Sequential`: Keras models that manage adaptive widths.

They differ from their Keras parents in these ways, all backend-agnostic:

- `fit` attaches a `keras_awn.callbacks.WidthController` (unless one is passed), runs it before
  the other callbacks, and tells it the number of training examples N, inferred from array
  inputs. The controller puts each layer's width, `<layer name>_width`, in the logs of every
  epoch (the progress bar, `History`, and the user's callbacks).
- `save` and `save_weights` write local files atomically (a temporary file, then a rename).
- `compute_loss` adds the prior of adaptive layers that cannot add it in `call` (recurrent
  cells).
- Building a Sequential or functional model links each adaptive layer to the layers reading it,
  refuses readers that cannot follow its width, and applies the paper's compensating
  initialisation to them.

The widths are not Keras metrics updated in every step: on PyTorch each step would compute every
width once more, eagerly, for a value that the controller reads anyway.
"""

import inspect
import math
import os
import random
import warnings

import keras
import numpy as np
from keras import ops

from keras_awn._engine import keras_internals
from keras_awn._engine import resize
from keras_awn._engine import saving
from keras_awn._engine import topology
from keras_awn._engine.untracked import Untracked
from keras_awn.callbacks import WidthController


def infer_num_examples(x, validation_split=0.0):
    """The number of training examples in `fit`'s `x`, or None where it cannot be known.

    Arrays (numpy, backend tensors, pandas) and nested structures of them give their first
    dimension; loaders with a sized `dataset` (torch `DataLoader`) give `len(dataset)`; objects
    with an integer `num_examples` attribute (`keras_awn.graph_data.GraphBatches`) give it. Other
    datasets and generators give None. `validation_split` is taken out as Keras does.
    """
    if x is None:
        return None
    declared = getattr(x, "num_examples", None)  # e.g. keras_awn.graph_data.GraphBatches
    if isinstance(declared, int) and not isinstance(declared, bool):
        return declared
    leaves = keras.tree.flatten(x)
    if not leaves:
        return None
    first = leaves[0]
    count = None
    shape = getattr(first, "shape", None)
    if shape is not None and not callable(shape) and len(shape) >= 1 and shape[0] is not None:
        count = int(shape[0])
    else:
        dataset = getattr(first, "dataset", None)
        if dataset is not None and hasattr(first, "batch_size") and hasattr(dataset, "__len__"):
            count = len(dataset)
    if count is not None and validation_split:
        count = int(math.floor(count * (1.0 - validation_split)))
    return count


# Examples the width search scores the model on (a fixed random sample of the training data).
PROBE_SIZE = 2048


def _first_batch(dataset):
    """The first batch of a `keras.utils.PyDataset`, or None when it has none or cannot say."""
    try:
        count = dataset.num_batches
    except (NotImplementedError, TypeError):
        count = None
    if count == 0:
        return None
    try:
        return dataset[0]
    except (IndexError, StopIteration):
        return None


def probe_sample(x, y, validation_split=0.0, size=PROBE_SIZE):
    """Up to `size` training examples `(x, y)` for the width search, or None.

    From arrays (numpy, backend tensors, nested structures of them): a random sample of the
    training part (Keras takes the validation split from the end). From a
    `keras.utils.PyDataset`: its first batch. Other datasets and generators give None (pass
    `WidthController(probe_data=...)`).
    """
    if x is None:
        return None
    if isinstance(x, keras.utils.PyDataset):
        # Its first batch: joining batches is the dataset's business (graph batches renumber
        # their nodes, for instance).
        batch = _first_batch(x)
        if isinstance(batch, tuple) and len(batch) >= 2:
            return batch[0], batch[1]
        return None
    count = infer_num_examples(x, validation_split)
    if y is None or count is None or not keras.tree.flatten(x):
        return None
    rng = np.random.default_rng(random.randint(0, 2**31 - 1))
    chosen = np.sort(rng.choice(count, size=min(size, count), replace=False))

    def take(values):
        return np.asarray(ops.convert_to_numpy(values))[chosen]

    try:
        return keras.tree.map_structure(take, x), keras.tree.map_structure(take, y)
    except (TypeError, ValueError, IndexError):
        return None


class _AdaptiveTrainingMixin:
    """What `keras_awn.Model` and `keras_awn.Sequential` add to their Keras parents."""

    # `compute_loss` adds the prior of layers that cannot add it in `call` (recurrent cells).
    adds_deferred_priors = True
    # `fit` infers the number of training examples N for the controller.
    infers_num_examples = True

    def compile(self, *args, **kwargs):
        super().compile(*args, **kwargs)
        # Found once: on torch `compute_loss` runs eagerly at every step.
        deferred = [
            layer for layer in topology.adaptive_layers(self) if not layer.adds_prior_in_call
        ]
        object.__setattr__(self, "_deferred_prior_layers", Untracked(deferred))

    def load_weights(self, filepath, skip_mismatch=False, **kwargs):
        """Loads weights, first resizing adaptive layers to the capacities the file holds.

        A weights file written after reallocations (by `keras.callbacks.BackupAndRestore` or
        `ModelCheckpoint(save_weights_only=True)`) holds other capacities than a freshly built
        model: each adaptive layer is reallocated to the file's before its weights are read.
        """

        def resize_layer(layer, capacity):
            resize.resize(self, {layer: capacity})

        with saving.resizing_on_load(topology.adaptive_layers(self), resize_layer):
            return super().load_weights(filepath, skip_mismatch=skip_mismatch, **kwargs)

    def save(self, filepath, overwrite=True, zipped=None, **kwargs):
        """Saves the model as `keras.Model.save` does, atomically for a local `.keras` file.

        The file is written beside `filepath` under a temporary name, flushed to disk, then
        renamed over it: a process killed while saving, a full disk or an error leaves the
        previous file intact (`ModelCheckpoint` saves through here).
        """
        self._warn_if_rebuilt_from_defaults()
        suffix = saving.atomic_suffix(filepath)
        if suffix != ".keras" or zipped is False or (not overwrite and os.path.exists(filepath)):
            return super().save(filepath, overwrite=overwrite, zipped=zipped, **kwargs)
        with saving.atomic_write(filepath, suffix) as temporary:
            return super().save(temporary, overwrite=True, zipped=zipped, **kwargs)

    def _warn_if_rebuilt_from_defaults(self):
        """Warns when a subclassed model without a `get_config` of its own is saved: loading
        rebuilds it with its constructor's defaults, at other capacities than the file's
        once its layers were reallocated, and Keras' error then names no cause."""
        if isinstance(self, keras.Sequential) or topology.functional_graph(self) is not None:
            return
        if type(self).get_config is not keras.Model.get_config:
            return
        if topology.adaptive_layers(self):
            warnings.warn(
                f"Model '{self.name}' ({type(self).__name__}) subclasses keras_awn.Model without "
                "a `get_config` of its own: `keras.saving.load_model` rebuilds it with its "
                "constructor's defaults, whose adaptive layers have other capacities than the "
                "file's once they were reallocated, and the file will not load. Serialize the "
                "adaptive block in `get_config` and restore it in `from_config` "
                "(docs/saving.md, 'Subclassed models').",
                stacklevel=3,
            )

    def save_weights(self, filepath, overwrite=True, max_shard_size=None):
        """Saves the weights as `keras.Model.save_weights` does, atomically for a local
        `.weights.h5` file (see `save`; `BackupAndRestore` and
        `ModelCheckpoint(save_weights_only=True)` save through here)."""
        suffix = saving.atomic_suffix(filepath)
        if (
            suffix != ".weights.h5"
            or max_shard_size is not None
            or (not overwrite and os.path.exists(filepath))
        ):
            return super().save_weights(
                filepath, overwrite=overwrite, max_shard_size=max_shard_size
            )
        with saving.atomic_write(filepath, suffix) as temporary:
            return super().save_weights(temporary, overwrite=True)

    def set_weights(self, weights):
        """Sets the weights as `keras.Model.set_weights` does, first reallocating each adaptive
        layer to the capacity `weights` hold.

        A list taken by `get_weights()` before a reallocation (what
        `EarlyStopping(restore_best_weights=True)` keeps) holds other capacities than the model
        has now. A list that does not fit at those capacities is refused before anything
        changes.
        """
        weights = list(weights)
        positions = {id(v): i for i, v in enumerate(self.weights)}
        capacities = {}
        if len(weights) == len(positions):
            for layer in topology.adaptive_layers(self):
                if not layer.built:
                    continue
                variable, axis = layer.output_unit_variables()[0]
                shape = np.shape(weights[positions[id(variable)]])
                if len(shape) == len(variable.shape) and shape[axis] != layer.capacity:
                    capacities[layer] = int(shape[axis])
        if not capacities:
            return super().set_weights(weights)
        # Checked before anything is resized: a list that does not fit leaves the model as it is.
        for index, (variable, shape, value) in enumerate(
            zip(self.weights, resize.planned_shapes(self, capacities), weights)
        ):
            if tuple(np.shape(value)) != shape:
                raise ValueError(
                    f"The weights do not fit model '{self.name}' at any capacity: variable "
                    f"'{variable.path}' would have shape {shape} at the capacities "
                    f"{ {layer.name: c for layer, c in capacities.items()} } that the list "
                    f"holds. Received: weights[{index}] of shape {tuple(np.shape(value))}"
                )
        resize.resize(self, capacities)
        return super().set_weights(weights)

    def summary(self, *args, **kwargs):
        """Prints Keras' summary, then each adaptive layer's width.

        Keras counts the allocated units (the capacity); the units beyond each layer's width
        are masked and compute nothing. The lines after the table give each adaptive layer's
        active units and capacity, and the parameters the model holds at its active widths
        (what `keras_awn.strip` keeps).
        """
        super().summary(*args, **kwargs)
        arguments = inspect.signature(keras.Model.summary).bind(self, *args, **kwargs)
        print_fn = arguments.arguments.get("print_fn") or print
        try:
            lines = self._adaptive_summary()
        except ValueError as error:  # a diverged width, readers keras_awn cannot see
            lines = [f"Adaptive layers: not summarised ({error})"]
        if lines:
            print_fn("\n".join(lines))

    def _adaptive_summary(self):
        layers = [layer for layer in topology.adaptive_layers(self) if layer.built]
        if not layers:
            return []
        width = max(len(layer.name) for layer in layers) + 2
        lines = [
            "Adaptive layers (Keras counts the allocated capacity; units beyond the width are "
            "masked):",
            f"  {'layer':<{width}}{'active units':>14}{'capacity':>10}",
        ]
        lines += [
            f"  {layer.name:<{width}}{layer.active_units:>14}{layer.capacity:>10}"
            for layer in layers
        ]
        active = {layer: layer.active_units for layer in layers}
        at_widths = sum(math.prod(shape) for shape in resize.planned_shapes(self, active))
        at_widths -= len(layers)  # the width parameters, which `strip` drops
        lines.append(
            f"Parameters at the active widths: {at_widths:,} (allocated: {self.count_params():,})"
        )
        return lines

    def get_compile_config(self):
        config = super().get_compile_config()
        return saving.portable_compile_config(config) if config else config

    def compile_from_config(self, config):
        # Keras skips compiling a loaded model whose class overrides `compile`; restore the saved
        # compile arguments as Keras does for plain models.
        config = keras.saving.deserialize_keras_object(saving.portable_compile_config(config))
        # Keras saves `jit_compile` resolved for the saving backend (True on JAX); a file saved
        # on JAX would otherwise run torch.compile on torch. Let the loading backend decide,
        # except for an explicit False, which means the same on every backend.
        if config.get("jit_compile") is not False:
            config["jit_compile"] = "auto"
        self.compile(**config)
        if self.built:
            self.optimizer.build(self.trainable_variables)

    def stateless_call(self, *args, **kwargs):
        # Keras (the JAX trainer) runs `call` directly here, so every layer clears the loss ids
        # it recorded at its previous call against this step's losses; a stale id reused by a
        # new tensor drops another layer's loss (see keras_internals.forget_loss_ids, which
        # adaptive layers call in any model). Forgetting every layer's old ids first protects
        # the adaptive priors from the other layers' stale ids too (activity regularizers).
        self._clear_losses()
        return super().stateless_call(*args, **kwargs)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        loss = super().compute_loss(
            x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=training
        )
        # Layers called inside a loop (recurrent cells) leave their prior to the model.
        deferred = getattr(self, "_deferred_prior_layers", None)
        for layer in deferred.value if deferred is not None else []:
            prior = layer.scaled_prior_loss() if layer.built else None
            if prior is not None:
                loss = loss + ops.cast(prior, loss.dtype)
        return loss

    def fit(self, x=None, y=None, *args, **kwargs):
        arguments = inspect.signature(keras.Model.fit).bind(self, x, y, *args, **kwargs)
        arguments.apply_defaults()
        callbacks = list(arguments.arguments.get("callbacks") or [])
        controllers = [c for c in callbacks if isinstance(c, WidthController)]
        if not controllers:
            controllers = [WidthController()]
        # The controller runs first, so that the user's callbacks see each epoch's widths in
        # their logs (CSVLogger, EarlyStopping) and a model whose diverged width parameters it
        # restored (ModelCheckpoint).
        callbacks = controllers + [c for c in callbacks if not isinstance(c, WidthController)]
        if isinstance(self, keras.Sequential) and not self.built:
            # Without `keras.Input`, Keras builds a Sequential inside the first step on
            # TensorFlow, after the controller needs its graph: build it from the data first
            # (arrays, or the first batch of a PyDataset).
            sample = x
            if isinstance(x, keras.utils.PyDataset):
                batch = _first_batch(x)
                sample = batch[0] if isinstance(batch, tuple) else batch
            leaves = keras.tree.flatten(sample) if sample is not None else []
            shape = getattr(leaves[0], "shape", None) if len(leaves) == 1 else None
            if shape is not None and not callable(shape) and len(shape) >= 1:
                self.build((None,) + tuple(shape[1:]))
        for callback in callbacks:
            if isinstance(callback, keras.callbacks.BackupAndRestore):
                saving.repair_backup_metadata(callback)
        validation_split = arguments.arguments.get("validation_split") or 0.0
        num_examples = infer_num_examples(x, validation_split)
        if num_examples == 0:
            shapes = [tuple(getattr(leaf, "shape", ())) for leaf in keras.tree.flatten(x)]
            raise ValueError(
                "`fit` received no training examples: the prior of the adaptive layers is "
                "scaled by 1 / N, the number of training examples. Received: x with shapes "
                f"{shapes}, validation_split={validation_split}"
            )
        probe_data = probe_sample(x, arguments.arguments.get("y"), validation_split)
        for controller in controllers:
            controller.inferred_num_examples = num_examples
            controller.inferred_probe_data = probe_data
        arguments.arguments["callbacks"] = callbacks
        call = dict(arguments.arguments)
        call.pop("self")
        return super().fit(**call)


@keras.saving.register_keras_serializable(package="keras_awn")
class Model(_AdaptiveTrainingMixin, keras.Model):
    """A `keras.Model` whose adaptive layers learn their width during `fit`.

    Use it exactly like `keras.Model`, functionally (`keras_awn.Model(inputs, outputs)`) or by
    subclassing (define `call`; use adaptive blocks such as `keras_awn.layers.AdaptiveMLP`
    there, since keras_awn cannot see which layers read a bare adaptive layer inside `call`).

    Example:

    ```python
    inputs = keras.Input((2,))
    hidden = keras_awn.layers.AdaptiveDense(16, activation="relu")(inputs)
    outputs = keras.layers.Dense(2)(hidden)
    model = keras_awn.Model(inputs, outputs)
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=20)
    keras_awn.widths(model)
    ```
    """

    def __new__(cls, *args, **kwargs):
        if cls is Model and keras_internals.functional_init_arguments(args, kwargs):
            # keras.Model would turn *this class* into a Functional subclass for good; a separate
            # class keeps keras_awn.Model usable for subclassed models in the same process.
            return super().__new__(FunctionalModel, *args, **kwargs)
        return super().__new__(cls, *args, **kwargs)

    def __init__(self, *args, **kwargs):
        if keras_internals.functional_init_arguments(args, kwargs):
            raise TypeError(
                f"{type(self).__name__} subclasses keras_awn.Model and was given functional "
                "arguments (inputs, outputs). Subclass keras_awn.models.FunctionalModel to build "
                "a functional model in a subclass's __init__."
            )
        super().__init__(*args, **kwargs)


@keras.saving.register_keras_serializable(package="keras_awn")
class FunctionalModel(Model, keras_internals.Functional):
    """The functional form of `keras_awn.Model`, what `keras_awn.Model(inputs, outputs)` returns."""

    def __init__(self, inputs, outputs, name=None, **kwargs):
        # What keras.Model.__init__ does for functional arguments, without rewriting class bases:
        # the backend's trainer first, then the topology.
        keras_internals.Trainer.__init__(self)
        keras_internals.Functional.__init__(self, inputs, outputs, name=name, **kwargs)
        for producer, links in topology.link(self).items():
            for reader in links.direct_readers:
                topology.compensate(producer, reader)


@keras.saving.register_keras_serializable(package="keras_awn")
class Sequential(_AdaptiveTrainingMixin, keras.Sequential):
    """A `keras.Sequential` whose adaptive layers learn their width during `fit`.

    Example:

    ```python
    model = keras_awn.Sequential([
        keras.Input((2,)),
        keras_awn.layers.AdaptiveDense(initial_units=16, activation="relu", name="hidden"),
        keras_awn.layers.AdaptiveDense(initial_units=16, activation="relu"),
        keras.layers.Dense(2),
    ])
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = model.fit(x, y, epochs=50)
    history.history["hidden_width"]  # the first layer's width after each epoch
    ```
    """

    def build(self, input_shape=None):
        # Readers built below start with the paper's compensating initialisation.
        for producer, reader in topology.sequence_pairs(self._layers):
            topology.compensate(producer, reader)
        super().build(input_shape)
        if getattr(self, "_functional", None) is None:
            return
        try:
            topology.link(self)
        except topology.UnsupportedConsumerError:
            # While layers are still being added the last one may be adaptive: `compile` and
            # `fit` check the finished topology.
            pass

    def compile(self, *args, **kwargs):
        if getattr(self, "_functional", None) is not None:
            topology.link(self)  # refuse unsupported readers before training starts
        super().compile(*args, **kwargs)


def clone_model(model, input_tensors=None, clone_function=None, call_function=None, **kwargs):
    """`keras.models.clone_model`, returning a keras_awn model.

    Keras rebuilds a `Sequential` as a plain `keras.Sequential` (and a functional model whose
    class it cannot call as a plain `keras.Model`), which trains its adaptive layers without the
    `WidthController` and the priors. This clones with Keras, then wraps the clone's layers in
    `keras_awn.Sequential` or `keras_awn.Model`. Like Keras, the clone has new weights. With a
    `clone_function` that returns adaptive layers, it also makes a plain model adaptive.

    Args:
        model: a `Sequential` or functional model (plain Keras or keras_awn).
        input_tensors, clone_function, call_function, **kwargs: as `keras.models.clone_model`
            takes them (`recursive`).

    Returns:
        A `keras_awn.Sequential` or functional `keras_awn.Model`.

    Example:

    ```python
    plain = keras.Sequential([keras.Input((2,)), keras.layers.Dense(64, activation="relu"),
                              keras.layers.Dense(2)])

    def adaptive(layer):
        if isinstance(layer, keras.layers.Dense) and layer is not plain.layers[-1]:
            return keras_awn.layers.AdaptiveDense(activation=layer.activation)
        return layer.__class__.from_config(layer.get_config())

    model = keras_awn.clone_model(plain, clone_function=adaptive)  # a keras_awn.Sequential
    ```
    """
    clone = keras.models.clone_model(
        model,
        input_tensors=input_tensors,
        clone_function=clone_function,
        call_function=call_function,
        **kwargs,
    )
    if isinstance(clone, _AdaptiveTrainingMixin):
        return clone
    if isinstance(clone, keras.Sequential):
        layers = list(clone.layers)
        if clone.built and clone.inputs:
            (inputs,) = clone.inputs
            layers = [keras.Input(batch_shape=inputs.shape, dtype=inputs.dtype)] + layers
        return Sequential(layers, name=clone.name, trainable=clone.trainable)
    if topology.functional_graph(clone) is not None:
        return Model(clone.inputs, clone.outputs, name=clone.name, trainable=clone.trainable)
    raise ValueError(
        "`keras_awn.clone_model` clones Sequential and functional models. Received: "
        f"model={type(model).__name__}"
    )
