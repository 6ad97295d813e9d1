"""Reliability: crashes and resumption, bad inputs, determinism, and the training features users
combine with `fit`, each across reallocations (docs/reliability.md lists the guarantees)."""

import json
import os
import subprocess
import sys
import warnings
import zipfile

import keras
import numpy as np
import pytest
from hypothesis import HealthCheck
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
from keras import ops

import keras_awn
from keras_awn._engine import topology
from keras_awn._engine import resize
from tests import helpers


def widened_model(units=(6, 6), width=30, optimizer=None, layer_kwargs=None, **compile_kwargs):
    """A compiled model whose layers ask for `width` units, so that `fit` must reallocate."""
    model = helpers.sequential_model(initial_units=units, **(layer_kwargs or {}))
    model.compile(
        optimizer or keras.optimizers.Adam(0.01),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        **compile_kwargs,
    )
    model.build((None, 2))
    for layer in topology.adaptive_layers(model):
        layer.width_parameter.assign(layer.distribution.raw_for_width(width, layer.quantile))
    return model


def state_of(model):
    return {
        "capacities": [layer.capacity for layer in topology.adaptive_layers(model)],
        "weights": [ops.convert_to_numpy(v) for v in model.weights],
        "optimizer": [ops.convert_to_numpy(v) for v in model.optimizer.variables],
    }


# -- 1. Crash and resume ----------------------------------------------------------------------

CRASHING_RUN = """
import json, os, signal, sys
import keras, numpy as np
from keras import ops
import keras_awn
from tests import helpers
from tests.test_reliability import widened_model, state_of

backup, snapshot_path, phase = sys.argv[1], sys.argv[2], sys.argv[3]
keras.utils.set_random_seed(3)
x, y = helpers.spiral_data(256)
model = widened_model()

class Snapshot(keras.callbacks.Callback):
    # Placed after BackupAndRestore: records what its latest backup holds.
    def __init__(self):
        super().__init__()
        self.seen = 0
    def on_train_begin(self, logs=None):
        if phase == "resume":
            state = state_of(self.model)
            np.savez(snapshot_path + ".restored.npz", *state["weights"], *state["optimizer"])
            with open(snapshot_path + ".restored.json", "w") as f:
                json.dump([state["capacities"], len(state["weights"])], f)
    def on_train_batch_end(self, batch, logs=None):
        self.seen += 1
        if phase == "crash" and self.seen % 4 == 0:
            state = state_of(self.model)
            np.savez(snapshot_path + ".backup.npz", *state["weights"], *state["optimizer"])
            with open(snapshot_path + ".backup.json", "w") as f:
                json.dump([state["capacities"], len(state["weights"])], f)
    def on_train_batch_begin(self, batch, logs=None):
        if phase == "crash" and self.seen == 10:
            os.kill(os.getpid(), signal.SIGKILL)  # mid-epoch, two steps after a backup

callbacks = [
    keras.callbacks.BackupAndRestore(backup, save_freq=4),
    Snapshot(),
    keras_awn.callbacks.WidthController(check_every=2),
]
history = model.fit(x, y, batch_size=32, epochs=3, verbose=0, callbacks=callbacks)
print(history.history["loss"][-1])
"""


def run_phase(tmp_path, phase):
    env = dict(os.environ)
    arguments = [str(tmp_path / "backup"), str(tmp_path / "state"), phase]
    return subprocess.run(
        [sys.executable, "-c", CRASHING_RUN, *arguments],
        capture_output=True, text=True, env=env, timeout=300,
    )


def load_state(prefix):
    with open(prefix + ".json") as f:
        capacities, num_weights = json.load(f)
    arrays = np.load(prefix + ".npz")
    values = [arrays[f"arr_{i}"] for i in range(len(arrays.files))]
    return capacities, values[:num_weights], values[num_weights:]


def test_sigkill_mid_epoch_resumes_from_the_last_backup(tmp_path):
    crashed = run_phase(tmp_path, "crash")
    assert crashed.returncode == -9, crashed.stderr[-3000:]  # killed, not finished
    backup_capacities, backup_weights, backup_optimizer = load_state(str(tmp_path / "state.backup"))
    assert backup_capacities != [12, 12], "the backup holds reallocated layers"
    resumed = run_phase(tmp_path, "resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    capacities, weights, optimizer = load_state(str(tmp_path / "state.restored"))
    assert capacities == backup_capacities
    assert len(weights) == len(backup_weights) and len(optimizer) == len(backup_optimizer)
    for restored, saved in zip(weights + optimizer, backup_weights + backup_optimizer):
        np.testing.assert_array_equal(restored, saved)
    assert np.isfinite(float(resumed.stdout.strip().splitlines()[-1]))


class SaveWeightsAt(keras.callbacks.Callback):
    def __init__(self, path, step):
        super().__init__()
        self.path, self.step, self.seen, self.state = path, step, 0, None

    def on_train_batch_begin(self, batch, logs=None):
        if self.seen == self.step:
            self.model.save_weights(self.path)
            self.state = state_of(self.model)
        self.seen += 1


def test_weights_checkpoints_written_after_reallocations_load_and_resume(tmp_path):
    x, y = helpers.spiral_data(256)
    model = widened_model()
    path = str(tmp_path / "checkpoint.weights.h5")
    saver = SaveWeightsAt(path, step=11)
    model.fit(x, y, batch_size=32, epochs=2, verbose=0,
              callbacks=[keras_awn.callbacks.WidthController(check_every=2), saver])
    fresh = widened_model()  # the capacities of a new model: 12 and 12
    fresh.optimizer.build(fresh.trainable_variables)
    fresh.load_weights(path)
    assert [layer.capacity for layer in topology.adaptive_layers(fresh)] == saver.state["capacities"]
    for restored, saved in zip(state_of(fresh)["weights"] + state_of(fresh)["optimizer"],
                               saver.state["weights"] + saver.state["optimizer"]):
        np.testing.assert_array_equal(restored, saved)
    history = fresh.fit(x, y, batch_size=32, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][-1])
    # A plain Keras model cannot know how to resize: a clear error names the layer.
    inputs = keras.Input((2,))
    hidden = keras_awn.layers.AdaptiveDense(6, activation="relu", capacity=12, name="plain_hidden")(inputs)
    plain = keras.Model(inputs, keras.layers.Dense(2)(
        keras_awn.layers.AdaptiveDense(6, activation="relu", capacity=12)(hidden)))
    with pytest.raises(ValueError, match="plain_hidden"):
        plain.load_weights(path)


# -- 2. Bad input ---------------------------------------------------------------------------------


def test_nan_batch_stops_training_and_leaves_finite_widths_and_a_loadable_model(tmp_path):
    x, y = helpers.spiral_data(256)
    x = x.copy()
    x[100] = np.nan  # batch 3 of 8
    # The paper's gradient-learned width: a NaN batch reaches the width parameters.
    model = widened_model(width=8, layer_kwargs={"width_learning": "gradient"})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = model.fit(x, y, batch_size=32, epochs=3, verbose=0, callbacks=[
            keras.callbacks.TerminateOnNaN(), keras_awn.callbacks.WidthController(check_every=2)])
    assert len(history.history["loss"]) == 1  # stopped in the first epoch
    assert not np.isfinite(history.history["loss"][-1])
    # Whether the width parameters went NaN depends on the backend's gradient of the NaN batch
    # (jax and torch: yes, tensorflow: no); where they did, the controller restored them.
    restored = [w for w in caught if "restored to its last finite value" in str(w.message)]
    assert restored or keras.backend.backend() == "tensorflow"
    for layer in topology.adaptive_layers(model):
        assert np.isfinite(float(ops.convert_to_numpy(layer.width_parameter)))
    widths = keras_awn.widths(model)
    path = str(tmp_path / "after_nan.keras")
    model.save(path)
    assert keras_awn.widths(keras.saving.load_model(path)) == widths


def test_a_diverging_width_is_held_at_max_capacity():
    x, y = helpers.spiral_data(128)
    model = widened_model(width=10**6)
    controller = keras_awn.callbacks.WidthController(check_every=2, max_capacity=48)
    with pytest.warns(UserWarning, match="max_capacity=48"):
        model.fit(x, y, batch_size=32, epochs=1, verbose=0, callbacks=[controller])
    assert [layer.capacity for layer in topology.adaptive_layers(model)] == [48, 48]
    assert all(width == 48 for width in keras_awn.widths(model).values())
    with pytest.raises(ValueError, match="Received: max_capacity=0"):
        keras_awn.callbacks.WidthController(max_capacity=0)


def test_a_memory_budget_holds_the_capacity_and_the_parameter_count():
    x, y = helpers.spiral_data(128)
    model = widened_model(width=10**6)
    budget = 2000
    start = model.count_params()
    assert start <= budget
    controller = keras_awn.callbacks.WidthController(check_every=2, max_parameters=budget)
    with pytest.warns(UserWarning, match=f"over max_parameters={budget}"):
        model.fit(x, y, batch_size=32, epochs=1, verbose=0, callbacks=[controller])
    # Never over the budget; the widths run at the held capacities.
    assert model.count_params() <= budget
    capacities = {layer.name: layer.capacity for layer in topology.adaptive_layers(model)}
    assert keras_awn.widths(model) == capacities
    # Without the budget the same model grows past it (so the budget is what held it).
    free = widened_model(width=10**6)
    free.fit(x, y, batch_size=32, epochs=1, verbose=0,
             callbacks=[keras_awn.callbacks.WidthController(check_every=2, max_capacity=256)])
    assert free.count_params() > budget
    with pytest.raises(ValueError, match="Received: max_parameters=0"):
        keras_awn.callbacks.WidthController(max_parameters=0)


def rewrite_config(path, edit):
    """Rewrites the config.json inside a `.keras` file with `edit(config)`."""
    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    config = json.loads(members["config.json"])
    edit(config)
    members["config.json"] = json.dumps(config).encode()
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)


def first_adaptive_config(config):
    return next(l for l in config["config"]["layers"] if l["class_name"] == "AdaptiveDense")


def shrink_capacity_in_config_only(config):
    """Capacity 5 in the config (and the reader's build shape to match), 12 in the weights."""
    layers = config["config"]["layers"]
    adaptive = first_adaptive_config(config)
    adaptive["config"]["capacity"] = 5
    reader = layers[layers.index(adaptive) + 1]
    reader["build_config"]["input_shape"][-1] = 5


@pytest.mark.parametrize(
    "edit,message",
    [
        (shrink_capacity_in_config_only, "hold 12 units"),
        (lambda c: first_adaptive_config(c)["config"].update(bogus=1), "bogus"),
        (lambda c: first_adaptive_config(c)["config"].update(quantile=2.0), "quantile"),
    ],
    ids=["capacity_differs_from_weights", "unknown_argument", "invalid_argument"],
)
def test_inconsistent_files_are_refused_naming_the_layer(tmp_path, edit, message):
    model = helpers.sequential_model(initial_units=(6,))
    model.build((None, 2))
    path = str(tmp_path / "model.keras")
    model.save(path)
    rewrite_config(path, edit)
    name = topology.adaptive_layers(model)[0].name
    with pytest.raises((ValueError, TypeError)) as raised:
        keras.saving.load_model(path)
    assert name in str(raised.value) and message in str(raised.value)


@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(first=st.integers(1, 12), second=st.integers(1, 12), fraction=st.floats(0.0, 0.95))
def test_truncation_and_strip_properties(first, second, fraction):
    model = helpers.sequential_model(initial_units=(9, 9), capacity=14, max_units=14)
    model.build((None, 2))
    layers = topology.adaptive_layers(model)
    for layer, units in zip(layers, (first, second)):
        layer.width_parameter.assign(layer.distribution.raw_for_width(units, layer.quantile))
    widths = keras_awn.widths(model)
    probe = np.linspace(-1, 1, 32, dtype="float32").reshape(16, 2)
    truncated = keras_awn.truncate(model, fraction=fraction)
    for name, width in keras_awn.widths(truncated).items():
        assert width == max(widths[name] - int(np.floor(fraction * widths[name] + 1e-9)), 1)
    # Stripping a truncated model changes no prediction; truncating further never widens.
    expected = ops.convert_to_numpy(truncated(probe))
    np.testing.assert_allclose(ops.convert_to_numpy(keras_awn.strip(truncated)(probe)), expected, rtol=1e-5, atol=1e-5)
    again = keras_awn.truncate(truncated, fraction=0.0)
    assert keras_awn.widths(again) == keras_awn.widths(truncated)


# -- 4. Determinism ---------------------------------------------------------------------------------


class WidthTrajectory(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.trajectory = []

    def on_train_batch_end(self, batch, logs=None):
        self.trajectory.append(tuple(keras_awn.widths(self.model).values()))


def seeded_run():
    keras.utils.set_random_seed(11)
    x, y = helpers.spiral_data(256)
    model = widened_model(width=20)
    trajectory = WidthTrajectory()
    controller = keras_awn.callbacks.WidthController(check_every=2)
    model.fit(x, y, batch_size=32, epochs=2, verbose=0, callbacks=[controller, trajectory])
    # Layer names differ between the two runs (Keras numbers them): compare by position.
    positions = {layer.name: i for i, layer in enumerate(topology.adaptive_layers(model))}
    events = [{**event, "layer": positions[event["layer"]]} for event in controller.reallocations]
    return trajectory.trajectory, events, [ops.convert_to_numpy(v) for v in model.weights]


def test_seeded_runs_repeat_widths_and_weights():
    first, second = seeded_run(), seeded_run()
    assert first[1], "the runs reallocate (new units are drawn at random)"
    assert first[0] == second[0] and first[1] == second[1]
    for a, b in zip(first[2], second[2]):
        np.testing.assert_array_equal(a, b)


# -- 5. Features combined with fit --------------------------------------------------------------------

FEATURES = {
    "mixed_float16": ({}, {}, "mixed_float16"),
    "mixed_bfloat16": ({}, {}, "mixed_bfloat16"),
    "ema": ({"use_ema": True}, {}, None),
    "gradient_accumulation": ({"gradient_accumulation_steps": 3}, {}, None),
    "gradient_clipping": ({"clipnorm": 0.05}, {}, None),
    "learning_rate_schedule": (
        {"learning_rate": keras.optimizers.schedules.ExponentialDecay(0.02, 4, 0.5)}, {}, None
    ),
    "jit_compile_on": ({}, {"jit_compile": True}, None),
    "jit_compile_off": ({}, {"jit_compile": False}, None),
}


class GrowAndShrinkBack(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.seen = 0
        self.optimizer_classes = []

    def on_train_batch_begin(self, batch, logs=None):
        if self.seen in (2, 5):
            model = self.model
            layers = topology.adaptive_layers(model)
            factor = 2 if self.seen == 2 else 0.5
            resize.resize(model, {layer: int(layer.capacity * factor) for layer in layers})
            self.optimizer_classes.append(type(model.optimizer).__name__)
        self.seen += 1


@pytest.mark.parametrize("feature", sorted(FEATURES))
def test_training_features_survive_reallocation(feature, dtype_policy):
    optimizer_kwargs, compile_kwargs, policy = FEATURES[feature]
    if policy:
        keras.config.set_dtype_policy(policy)
    x, y = helpers.spiral_data(256)

    def build():
        model = helpers.sequential_model(initial_units=(6, 6))
        arguments = {"learning_rate": 0.01, **optimizer_kwargs}
        model.compile(keras.optimizers.Adam(**arguments),
                      keras.losses.SparseCategoricalCrossentropy(from_logits=True), **compile_kwargs)
        model.build((None, 2))
        return model

    resized, reference = build(), build()
    reference.set_weights(resized.get_weights())
    swaps = GrowAndShrinkBack()
    losses = helpers.BatchLossRecorder(), helpers.BatchLossRecorder()
    # The widths are held (width warm-up over the whole run): the two models' parameters differ by
    # float rounding (their matmuls have other shapes), which could flip a width sitting on a
    # boundary in one of them and make the comparison meaningless.
    frozen = {"check_every": 10**9, "grow_threshold": 1.0, "shrink_threshold": 0.01,
              "width_warmup_epochs": 1}
    fit = {"batch_size": 32, "epochs": 1, "shuffle": False, "verbose": 0}
    resized.fit(x, y, callbacks=[keras_awn.callbacks.WidthController(**frozen), swaps, losses[0]], **fit)
    reference.fit(x, y, callbacks=[keras_awn.callbacks.WidthController(**frozen), losses[1]], **fit)
    assert swaps.optimizer_classes and len(set(swaps.optimizer_classes)) == 1
    assert type(resized.optimizer) is type(reference.optimizer)
    # The optimizer's extra state (EMA averages, accumulators, loss scale, schedule step) was
    # carried over: the training trajectory is the one of the never-reallocated twin.
    tolerance = 2e-2 if policy else 1e-4
    np.testing.assert_allclose(losses[0].losses, losses[1].losses, rtol=tolerance, atol=1e-6)
    for a, b in zip(resized.optimizer.variables, reference.optimizer.variables):
        if tuple(a.shape) == tuple(b.shape):
            np.testing.assert_allclose(ops.convert_to_numpy(a), ops.convert_to_numpy(b),
                                       rtol=tolerance, atol=tolerance * 1e-2)


def test_ema_averages_of_new_units_start_at_their_values():
    model = helpers.sequential_model(initial_units=(6, 6))
    model.compile(keras.optimizers.Adam(0.01, use_ema=True),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = helpers.spiral_data(64)
    model.fit(x, y, epochs=1, verbose=0)
    first = topology.adaptive_layers(model)[0]
    resize.resize(model, {first: 40})
    averages = model.optimizer._model_variables_moving_average
    for variable, average in zip(model.trainable_variables, averages):
        if variable is first.kernel:
            np.testing.assert_array_equal(
                ops.convert_to_numpy(average)[:, 12:], ops.convert_to_numpy(variable)[:, 12:]
            )
            break
    else:
        raise AssertionError("the kernel has an EMA slot")
    with warnings.catch_warnings():
        warnings.simplefilter("error", category=RuntimeWarning)
        model.fit(x, y, epochs=1, verbose=0)
