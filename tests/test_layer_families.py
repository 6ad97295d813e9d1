"""The contract every adaptive layer family keeps (issue: layers beyond the MLP).

For a small model of each family (adaptive convolution filters, Transformer heads and
feed-forward width, recurrent cell, GIN convolution): (a) importances are ordered and masked
units are inert, (b) a reallocation mid-training is invisible, (c) `.keras` files round-trip on
this backend and load on the other two, (d) `truncate(fraction=0)` and `strip` predict the same,
and the widths move while `fit` runs.
"""

import json
import warnings

import keras
import numpy as np
import pytest
from keras import ops

import keras_awn
from keras_awn._engine import topology
from keras_awn._engine import resize
from keras_awn.layers import AdaptiveWidthLayer
from tests import helpers
from tests.families import FAMILIES

NAMES = sorted(FAMILIES)


def compiled(model, learning_rate=0.01, **optimizer_arguments):
    model.compile(
        keras.optimizers.Adam(learning_rate, **optimizer_arguments),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


def predictions(model, probe):
    return ops.convert_to_numpy(model(probe, training=False))


def trained(name, epochs=1, **fit_overrides):
    family = FAMILIES[name]
    model = compiled(family.build())
    model.fit(**family.fit_arguments(epochs=epochs, verbose=0, **fit_overrides))
    return family, model


def frozen_controller():
    # Never reallocates or searches on its own: the tests decide when capacities change.
    return keras_awn.callbacks.WidthController(
        check_every=10**9, grow_threshold=1.0, shrink_threshold=0.01, search_every=None
    )


# -- (a) importance ordering and masking ---------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_importance_is_ordered_and_masked_units_are_inert(name):
    family, model = trained(name)
    probe = family.probe()
    reference = predictions(model, probe)
    layers = topology.adaptive_layers(model)
    assert layers, "the family has adaptive layers"
    rng = np.random.default_rng(0)
    for layer in layers:
        importance = ops.convert_to_numpy(layer.importance())
        active = layer.active_units
        assert active < layer.capacity, "the check needs masked units"
        assert np.all(importance[:active] > 0)
        assert np.all(np.diff(importance[:active]) < 0)  # unit 0 matters most
        assert np.all(importance[active:] == 0)
        # Whatever the weights of masked units hold, the model computes the same function.
        saved = [ops.convert_to_numpy(v).copy() for v, _ in layer.output_unit_variables()]
        for variable, axis in layer.output_unit_variables():
            value = ops.convert_to_numpy(variable).copy()
            tail = [slice(None)] * value.ndim
            tail[axis] = slice(active, None)
            value[tuple(tail)] = rng.normal(0, 5, value[tuple(tail)].shape)
            variable.assign(value)
        np.testing.assert_allclose(predictions(model, probe), reference, rtol=0, atol=1e-6)
        # While the same change to the active units does change it (the check can fail).
        for variable, axis in layer.output_unit_variables():
            value = ops.convert_to_numpy(variable).copy()
            head = [slice(None)] * value.ndim
            head[axis] = slice(0, active)
            value[tuple(head)] += rng.normal(0, 5, value[tuple(head)].shape)
            variable.assign(value)
        assert np.abs(predictions(model, probe) - reference).max() > 1e-3
        for (variable, _), value in zip(layer.output_unit_variables(), saved):
            variable.assign(value)


def test_normalization_keeps_masked_channels_at_zero_in_training_and_inference():
    family = FAMILIES["conv"]
    model = compiled(family.build(), learning_rate=0.05)
    model.fit(**family.fit_arguments(epochs=3, verbose=0))
    adaptive = topology.adaptive_layers(model)[1]
    normalization = next(
        layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)
    )
    upto = keras.Model(model.inputs[0], normalization.output)
    probe = family.probe()
    active = adaptive.active_units
    assert active < adaptive.capacity
    for training in (True, False):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # `upto` is a plain model without a controller
            output = ops.convert_to_numpy(upto(probe, training=training))
        assert np.all(output[..., active:] == 0.0), training
        assert np.abs(output[..., :active]).max() > 0


# -- (b) invisible reallocation -------------------------------------------------------------------


class GrowThenShrink(keras.callbacks.Callback):
    """Doubles every adaptive layer's capacity at one step, restores it at a later one, and
    records the model's predictions around each swap."""

    def __init__(self, probe, grow_at=1, shrink_at=3):
        super().__init__()
        self.probe, self.grow_at, self.shrink_at = probe, grow_at, shrink_at
        self.seen = 0
        self.swaps = []
        self.widest = 0

    def on_train_batch_begin(self, batch, logs=None):
        if self.seen in (self.grow_at, self.shrink_at):
            model = self.model  # syncs the JAX state
            layers = topology.adaptive_layers(model)
            if self.seen == self.grow_at:
                self.original = {layer: layer.capacity for layer in layers}
                target = {layer: 2 * layer.capacity for layer in layers}
            else:
                target = self.original
            before = predictions(model, self.probe)
            resize.resize(model, target)
            self.swaps.append((before, predictions(model, self.probe)))
        self.seen += 1

    def on_train_batch_end(self, batch, logs=None):
        for layer in topology.adaptive_layers(self.model):
            self.widest = max(self.widest, layer.desired_units - layer.capacity)


# The features users combine with fit: their extra state (moving averages, gradient
# accumulators, the schedule's step, the loss scale) must be carried through reallocation. Adam's
# own moments are part of both setups.
SETUPS = {
    "ema_clipping_accumulation_schedule": (
        {
            "use_ema": True,
            "clipnorm": 0.5,
            "gradient_accumulation_steps": 2,
            "learning_rate": keras.optimizers.schedules.ExponentialDecay(0.01, 3, 0.7),
        },
        None,
    ),
    "mixed_float16": ({}, "mixed_float16"),
}


@pytest.mark.parametrize("setup", sorted(SETUPS))
@pytest.mark.parametrize("name", NAMES)
def test_reallocation_mid_training_is_invisible(name, setup, dtype_policy):
    family = FAMILIES[name]
    optimizer_arguments, policy = SETUPS[setup]
    if policy:
        keras.config.set_dtype_policy(policy)
    arguments = {"learning_rate": 0.01, **optimizer_arguments}
    resized = compiled(family.build(), **arguments)
    reference = compiled(resized.__class__.from_config(resized.get_config()), **arguments)
    reference.set_weights(resized.get_weights())
    probe = family.probe()
    swaps = GrowThenShrink(probe)
    losses = helpers.BatchLossRecorder(), helpers.BatchLossRecorder()
    resized.fit(**family.fit_arguments(epochs=1, verbose=0, callbacks=[frozen_controller(), swaps, losses[0]]))
    reference.fit(**family.fit_arguments(epochs=1, verbose=0, callbacks=[frozen_controller(), losses[1]]))
    assert len(swaps.swaps) == 2
    swap_tolerance = 1e-2 if policy else 1e-6
    for before, after in swaps.swaps:
        np.testing.assert_allclose(after, before, rtol=swap_tolerance, atol=swap_tolerance)
    # The comparison holds while no width outgrew the original capacity.
    assert swaps.widest <= 0
    tolerance = 2e-2 if policy else 1e-4
    np.testing.assert_allclose(losses[0].losses, losses[1].losses, rtol=tolerance, atol=1e-6)
    # Under float16, logits near zero drift by about 1e-2 between the two runs (TensorFlow).
    logits_atol = 5e-2 if policy else 1e-5
    np.testing.assert_allclose(predictions(resized, probe), predictions(reference, probe), rtol=tolerance, atol=logits_atol)
    assert type(resized.optimizer) is type(reference.optimizer)


# -- (c) saving, on this backend and across backends --------------------------------------------


def grown_and_saved(name, path):
    """Trains, grows every adaptive layer (capacities then differ from any config default),
    trains on and saves; returns the model."""
    family, model = trained(name)
    layers = topology.adaptive_layers(model)
    resize.resize(model, {layer: layer.capacity + 3 for layer in layers})
    # A controller that keeps these capacities (the default one may shrink a narrow width back
    # to its layer's default capacity).
    model.fit(**family.fit_arguments(epochs=1, verbose=0, callbacks=[frozen_controller()]))
    model.save(path)
    return family, model


@pytest.mark.parametrize("name", NAMES)
def test_keras_file_and_weights_checkpoint_restore_and_resume(name, tmp_path):
    path = str(tmp_path / f"{name}.keras")
    family, model = grown_and_saved(name, path)
    loaded = keras.saving.load_model(path)
    capacities = {layer.name: layer.capacity for layer in topology.adaptive_layers(model)}
    assert {layer.name: layer.capacity for layer in topology.adaptive_layers(loaded)} == capacities
    assert keras_awn.widths(loaded) == keras_awn.widths(model)
    for saved, restored in zip(model.weights, loaded.weights):
        np.testing.assert_array_equal(ops.convert_to_numpy(saved), ops.convert_to_numpy(restored))
    for saved, restored in zip(model.optimizer.variables, loaded.optimizer.variables):
        np.testing.assert_array_equal(ops.convert_to_numpy(saved), ops.convert_to_numpy(restored))
    np.testing.assert_allclose(predictions(loaded, family.probe()), predictions(model, family.probe()), atol=1e-6)
    history = loaded.fit(**family.fit_arguments(epochs=1, verbose=0))
    assert np.isfinite(history.history["loss"][-1])

    # What BackupAndRestore and ModelCheckpoint(save_weights_only=True) write and read back: a
    # fresh model (default capacities) takes the file's capacities, weights and optimizer state.
    path = str(tmp_path / f"{name}.weights.h5")
    model.save_weights(path)
    fresh = compiled(family.build())
    fresh.optimizer.build(fresh.trainable_variables)
    assert [l.capacity for l in topology.adaptive_layers(fresh)] != [l.capacity for l in topology.adaptive_layers(model)]
    fresh.load_weights(path)
    assert [l.capacity for l in topology.adaptive_layers(fresh)] == [l.capacity for l in topology.adaptive_layers(model)]
    for saved, restored in zip(model.weights + model.optimizer.variables, fresh.weights + fresh.optimizer.variables):
        np.testing.assert_array_equal(ops.convert_to_numpy(saved), ops.convert_to_numpy(restored))
    history = fresh.fit(**family.fit_arguments(epochs=1, verbose=0))
    assert np.isfinite(history.history["loss"][-1])


CROSS_BACKEND_LOAD = """
import json, sys
import keras, numpy as np
from keras import ops
from tests.families import FAMILIES
results = {}
for name, path in json.loads(sys.argv[1]).items():
    family = FAMILIES[name]
    model = keras.saving.load_model(path)
    results[name] = {"predictions": ops.convert_to_numpy(model(family.probe(), training=False)).tolist()}
    history = model.fit(**family.fit_arguments(epochs=1, verbose=0))
    results[name]["loss"] = history.history["loss"][-1]
print(json.dumps(results))
"""


def test_every_family_loads_on_the_other_backends(tmp_path):
    paths, expected = {}, {}
    for name in NAMES:
        paths[name] = str(tmp_path / f"{name}.keras")
        family, model = grown_and_saved(name, paths[name])
        expected[name] = predictions(model, family.probe())
    for backend in helpers.BACKENDS:
        if backend == keras.backend.backend():
            continue
        code = CROSS_BACKEND_LOAD.replace("sys.argv[1]", repr(json.dumps(paths)))
        results = helpers.run_python(code, backend, timeout=600)
        for name in NAMES:
            np.testing.assert_allclose(
                results[name]["predictions"], expected[name], rtol=1e-5, atol=1e-5, err_msg=f"{name} on {backend}"
            )
            assert np.isfinite(results[name]["loss"])


# -- (d) truncation and strip ---------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_truncate_zero_and_strip_predict_the_same(name):
    family, model = trained(name, epochs=2)
    probe = family.probe()
    reference = predictions(model, probe)
    # float32 round-off of the same sums in another order (logits reach about 100 here).
    tolerance = dict(atol=1e-5, rtol=1e-6)
    np.testing.assert_allclose(predictions(keras_awn.truncate(model, fraction=0.0), probe), reference, **tolerance)
    plain = keras_awn.strip(model)
    assert not [layer for layer in topology.walk(plain) if isinstance(layer, AdaptiveWidthLayer)]
    np.testing.assert_allclose(predictions(plain, probe), reference, **tolerance)
    # Truncating does drop units: a smaller model computes a (slightly) different function.
    smaller = keras_awn.truncate(model, fraction=0.5)
    assert sum(keras_awn.widths(smaller).values()) < sum(keras_awn.widths(model).values())


STRIPPED_LOAD = """
import json, sys
import keras, numpy as np
results = {}
for name, (path, probe) in json.loads(sys.argv[1]).items():
    model = keras.saving.load_model(path)
    probe = np.asarray(probe, "float32")
    results[name] = {
        "predictions": keras.ops.convert_to_numpy(model(probe, training=False)).tolist(),
        "classes": sorted({type(layer).__name__ for layer in model._flatten_layers()}),
    }
results["keras_awn_imported"] = "keras_awn" in sys.modules
print(json.dumps(results))
"""


def test_stripped_models_load_as_plain_keras(tmp_path):
    """Convolution and Transformer families strip to Keras layers only: they load in a process
    that never imports keras_awn. The recurrent and graph families keep keras_awn's fixed-width
    `MLPRNNCell`/`GINConv` (Keras has no such layers) and load with no adaptive layer."""
    files, expected = {}, {}
    for name in NAMES:
        family, model = trained(name)
        plain = keras_awn.strip(model)
        path = str(tmp_path / f"{name}_plain.keras")
        plain.save(path)
        probe = family.probe()
        files[name] = (path, None if name == "graph" else np.asarray(probe).tolist())
        expected[name] = predictions(model, probe)
    backend = keras.backend.backend()
    without = {n: files[n] for n in ("conv", "transformer")}
    results = helpers.run_python(STRIPPED_LOAD.replace("sys.argv[1]", repr(json.dumps(without))), backend)
    assert results["keras_awn_imported"] is False
    for name in without:
        np.testing.assert_allclose(results[name]["predictions"], expected[name], atol=1e-5)
        assert not any(c.startswith("Adaptive") for c in results[name]["classes"])
    for name in ("recurrent", "graph"):
        loaded = keras.saving.load_model(files[name][0])
        assert not [layer for layer in topology.walk(loaded) if isinstance(layer, AdaptiveWidthLayer)]
        probe = FAMILIES[name].probe()
        np.testing.assert_allclose(predictions(loaded, probe), expected[name], rtol=1e-5, atol=1e-5)


# -- widths move during fit -------------------------------------------------------------------------


class WidthHistory(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.history = []

    def on_train_batch_end(self, batch, logs=None):
        self.history.append(keras_awn.widths(self.model))


@pytest.mark.parametrize("name", NAMES)
def test_widths_move_while_fit_runs(name):
    family = FAMILIES[name]
    model = compiled(family.build(), learning_rate=0.05)
    for layer in topology.adaptive_layers(model):
        if layer.width_learning == "search":
            # Below the narrowest width the search judges: its first search must move it.
            layer.width_parameter.assign(layer.distribution.raw_for_width(4, layer.quantile))
    start = keras_awn.widths(model)
    recorder = WidthHistory()
    # A width search every 8 steps: 5 searches in these 48 steps.
    controller = keras_awn.callbacks.WidthController(search_every=8)
    model.fit(**family.fit_arguments(epochs=6, verbose=0, callbacks=[recorder, controller]))
    moved = {
        layer: sorted({widths[layer] for widths in recorder.history}) for layer in start
    }
    assert any(len(values) > 1 for values in moved.values()), moved
