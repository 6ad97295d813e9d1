"""Faults a hostile user can cause, each on every backend (docs/reliability.md, "Faults tried"):
frozen layers, interrupted reallocations, killed saves, non-finite and extreme widths.

Each test was checked to fail with the fix it guards taken out (the docs' table says how)."""

import contextlib
import os
import signal
import subprocess
import sys
import warnings

import keras
import numpy as np
import pytest
from keras import ops

import keras_awn
from keras_awn._engine import resize
from keras_awn._engine import topology
from keras_awn._engine import training_state
from tests import helpers
from tests.families import FAMILIES
from tests.test_layer_families import compiled
from tests.test_layer_families import frozen_controller
from tests.test_layer_families import predictions
from tests.test_reliability import state_of
from tests.test_reliability import widened_model


def steps_taken(model):
    return int(ops.convert_to_numpy(model.optimizer.iterations))


def values(variables):
    return [ops.convert_to_numpy(v).copy() for v in variables]


# -- Frozen layers ------------------------------------------------------------------------------


def test_a_frozen_layer_is_reallocated_without_skipping_batches(tmp_path):
    """The default controller settles a frozen layer's capacity mid-epoch: every batch trains."""
    x, y = helpers.spiral_data(1024)
    model = keras_awn.Sequential([
        keras.Input((2,)),
        keras_awn.layers.AdaptiveDense(100, activation="relu", name="frozen"),
        keras_awn.layers.AdaptiveDense(8, activation="relu"),
        keras.layers.Dense(2),
    ])
    model.get_layer("frozen").trainable = False
    helpers.compile_classifier(model)
    controller = keras_awn.callbacks.WidthController(check_every=2, settle_after=2, rebuild_cost=0)
    model.fit(x, y, batch_size=32, epochs=2, verbose=0, callbacks=[controller])
    assert steps_taken(model) == 2 * 1024 // 32  # no batch skipped
    assert any(event["layer"] == "frozen" for event in controller.reallocations)
    frozen = model.get_layer("frozen")
    assert frozen.capacity == frozen.kernel.shape[1] == model.layers[1].kernel.shape[0]
    assert keras_awn.widths(model)["frozen"] == 100
    path = str(tmp_path / "frozen.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(predictions(loaded, x[:64]), predictions(model, x[:64]), atol=1e-6)


def frozen_layers(model, which):
    """The adaptive layers, or the other layers with weights (their readers), of `model`."""
    adaptive = topology.adaptive_layers(model)
    if which == "adaptive":
        return adaptive
    nested = {id(sub) for layer in adaptive for sub in topology.walk(layer)}
    return [
        layer
        for layer in topology.walk(model)[1:]
        if id(layer) not in nested and layer.weights and not topology.walk(layer)[1:]
    ]


@pytest.mark.parametrize("which", ["adaptive", "readers"])
@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_reallocations_touching_frozen_layers_keep_them_frozen(name, which, tmp_path):
    family = FAMILIES[name]
    model = family.build()
    compiled(model).fit(**family.fit_arguments(epochs=1, verbose=0, callbacks=[frozen_controller()]))
    frozen = frozen_layers(model, which)
    assert frozen, "the family has layers to freeze"
    for layer in frozen:
        layer.trainable = False
    compiled(model)  # Keras requires a compile after changing `trainable`
    widths = keras_awn.widths(model)
    # Every adaptive layer grows: a frozen one as producer and as reader, and the frozen readers.
    adaptive = topology.adaptive_layers(model)
    resize.resize(model, {layer: layer.capacity + 3 for layer in adaptive})
    before = {id(v): ops.convert_to_numpy(v).copy() for layer in frozen for v in layer.weights}
    history = model.fit(**family.fit_arguments(epochs=1, verbose=0, callbacks=[frozen_controller()]))
    assert np.isfinite(history.history["loss"][-1])
    for layer in frozen:
        for variable in layer.weights:
            assert not variable.trainable, variable.path
            if variable.path.endswith(("moving_mean", "moving_variance")):
                continue  # statistics follow the data, as in Keras
            np.testing.assert_array_equal(ops.convert_to_numpy(variable), before[id(variable)])
    if which == "adaptive":
        assert keras_awn.widths(model) == widths
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    probe = family.probe()
    np.testing.assert_allclose(predictions(loaded, probe), predictions(model, probe), atol=1e-5)


def test_unfreezing_without_compile_is_refused_naming_the_cause():
    model = widened_model(width=30)
    x, y = helpers.spiral_data(64)
    model.fit(x, y, epochs=1, verbose=0, callbacks=[frozen_controller()])
    topology.adaptive_layers(model)[0].trainable = False  # no compile afterwards
    before = state_of(model)
    with pytest.raises(RuntimeError, match="compile"):
        resize.resize(model, {topology.adaptive_layers(model)[1]: 40})
    after = state_of(model)
    assert after["capacities"] == before["capacities"]


# -- Interrupted reallocations -------------------------------------------------------------------


def interrupting(monkeypatch, action, calls=2):
    """Makes the `calls`-th metadata update of the next resize (inside the swap) run `action`."""
    original = resize._update_input_metadata
    seen = []

    def update(layer, capacity):
        seen.append(layer)
        if len(seen) == calls:
            action()
        return original(layer, capacity)

    monkeypatch.setattr(resize, "_update_input_metadata", update)
    return seen


def raise_keyboard_interrupt():
    raise KeyboardInterrupt


def test_an_exception_inside_the_swap_leaves_the_model_as_it_was(monkeypatch, tmp_path):
    x, y = helpers.spiral_data(128)
    model = widened_model(width=8)
    model.fit(x, y, epochs=1, verbose=0, callbacks=[frozen_controller()])
    before = state_of(model)
    variables = [id(v) for v in model.weights]
    probe = predictions(model, x[:32])
    first, second = topology.adaptive_layers(model)
    interrupting(monkeypatch, raise_keyboard_interrupt)
    with pytest.raises(KeyboardInterrupt):
        resize.resize(model, {first: 40, second: 48})
    monkeypatch.undo()
    after = state_of(model)
    assert after["capacities"] == before["capacities"]
    assert [id(v) for v in model.weights] == variables
    for a, b in zip(after["weights"] + after["optimizer"], before["weights"] + before["optimizer"]):
        np.testing.assert_array_equal(a, b)
    assert model.layers[1].input_spec.axes[-1] == first.capacity
    np.testing.assert_array_equal(predictions(model, x[:32]), probe)
    # Trains (the step functions are the old variables'), and saves a file that loads.
    history = model.fit(x, y, epochs=1, verbose=0, callbacks=[frozen_controller()])
    assert np.isfinite(history.history["loss"][-1])
    path = str(tmp_path / "after.keras")
    model.save(path)
    assert keras_awn.widths(keras.saving.load_model(path)) == keras_awn.widths(model)


@contextlib.contextmanager
def sigint_handler(handler):
    """`handler` for SIGINT inside the block, the previous one after it."""
    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def test_ctrl_c_inside_the_swap_is_delivered_once_the_model_is_consistent(monkeypatch):
    # Python's own Ctrl-C handler, as in a terminal (a process started in the background by a
    # non-interactive shell, as `make test` starts the suite, inherits SIGINT ignored).
    with sigint_handler(signal.default_int_handler):
        ctrl_c_inside_the_swap(monkeypatch)


def ctrl_c_inside_the_swap(monkeypatch):
    x, y = helpers.spiral_data(128)
    model = widened_model(width=8)
    model.fit(x, y, epochs=1, verbose=0, callbacks=[frozen_controller()])
    first, second = topology.adaptive_layers(model)
    interrupting(monkeypatch, lambda: os.kill(os.getpid(), signal.SIGINT))
    with pytest.raises(KeyboardInterrupt):
        resize.resize(model, {first: 40, second: 48})
    monkeypatch.undo()
    # The swap finished before the interrupt was raised.
    assert (first.capacity, second.capacity) == (40, 48)
    assert tuple(first.kernel.shape) == (2, 40) and tuple(second.kernel.shape) == (40, 48)
    assert tuple(model.layers[-1].kernel.shape) == (48, 2)
    history = model.fit(x, y, epochs=1, verbose=0, callbacks=[frozen_controller()])
    assert np.isfinite(history.history["loss"][-1])


class InterruptFirstStepAfterReallocation(keras.callbacks.Callback):
    """Makes the first train step after the next reallocation raise KeyboardInterrupt, as a
    Ctrl-C during its recompilation would (on JAX the step recompiles inside that call)."""

    def __init__(self, model):
        super().__init__()
        self.armed = False
        self.changes = training_state.step_changes(model)

    def on_train_batch_begin(self, batch, logs=None):
        model = self._model  # no JAX state sync: the interrupt comes from inside the step
        if not self.armed or training_state.step_changes(model) == self.changes:
            return
        self.armed = False
        compiled_step = model.train_function

        def interrupted(*args, **kwargs):
            model.train_function = compiled_step
            raise KeyboardInterrupt

        model.train_function = interrupted


def test_ctrl_c_during_the_recompilation_after_a_reallocation_keeps_the_model(tmp_path):
    x, y = helpers.spiral_data(128)
    model = widened_model(width=8)
    model.fit(x, y, epochs=1, verbose=0, callbacks=[frozen_controller()])
    interrupt = InterruptFirstStepAfterReallocation(model)
    for layer in topology.adaptive_layers(model):
        layer.width_parameter.assign(layer.distribution.raw_for_width(40, layer.quantile))
    interrupt.armed = True
    with pytest.raises(KeyboardInterrupt):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[interrupt])
    assert not interrupt.armed, "the interrupt was delivered"
    for layer in topology.adaptive_layers(model):
        assert layer.capacity > 16 and layer.kernel.shape[-1] == layer.capacity
    assert all(np.all(np.isfinite(v)) for v in values(model.weights))
    probe = predictions(model, x[:32])
    path = str(tmp_path / "interrupted.keras")
    model.save(path)
    np.testing.assert_allclose(predictions(keras.saving.load_model(path), x[:32]), probe, atol=1e-6)
    history = model.fit(x, y, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][-1])


# -- Non-finite and extreme widths ---------------------------------------------------------------


def test_an_infinite_width_is_held_at_max_capacity_with_a_warning():
    """A width parameter below about -87.9 makes the width infinite (exp overflows)."""
    x, y = helpers.spiral_data(128)
    model = widened_model(width=8)
    for layer in topology.adaptive_layers(model):
        layer.width_parameter.assign(-100.0)
    assert not np.isfinite(layer.desired_units_on_host(-100.0))
    controller = keras_awn.callbacks.WidthController(check_every=2, max_capacity=48, search_every=None)
    with pytest.warns(UserWarning, match="max_capacity=48"):
        model.fit(x, y, batch_size=32, epochs=1, verbose=0, callbacks=[controller])
    assert [layer.capacity for layer in topology.adaptive_layers(model)] == [48, 48]
    assert keras_awn.widths(model) == {layer.name: 48 for layer in topology.adaptive_layers(model)}


def test_a_layer_built_above_max_capacity_is_cut_to_it_before_the_first_step():
    x, y = helpers.spiral_data(64)
    model = keras_awn.Sequential([
        keras.Input((2,)),
        keras_awn.layers.AdaptiveDense(10**5, activation="relu", name="huge"),
        keras_awn.layers.AdaptiveDense(8, activation="relu"),
        keras.layers.Dense(2),
    ])
    helpers.compile_classifier(model)
    assert model.get_layer("huge").capacity == 2 * 10**5
    seen = []

    class Capacity(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            seen.append(model.get_layer("huge").kernel.shape[1])

    controller = keras_awn.callbacks.WidthController(max_capacity=256)
    with pytest.warns(UserWarning, match="'huge'.*max_capacity=256"):
        model.fit(x, y, batch_size=32, epochs=1, verbose=0, callbacks=[controller, Capacity()])
    assert seen and max(seen) <= 256
    assert model.get_layer("huge").capacity <= 256


def nan_width_model():
    model = widened_model(width=8)
    model.fit(*helpers.spiral_data(64), epochs=1, verbose=0, callbacks=[frozen_controller()])
    topology.adaptive_layers(model)[0].width_parameter.assign(float("nan"))
    return model


class DivergeAtTheLastBatch(keras.callbacks.Callback):
    """Makes a width parameter NaN at the epoch's last step, as a diverging step would."""

    def __init__(self, steps):
        super().__init__()
        self.steps = steps

    def on_train_batch_end(self, batch, logs=None):
        if batch == self.steps - 1:
            topology.adaptive_layers(self.model)[0].width_parameter.assign(float("nan"))


def test_a_diverged_width_is_restored_before_the_users_checkpoint_saves(tmp_path):
    x, y = helpers.spiral_data(64)
    model = widened_model(width=8)
    path = str(tmp_path / "epoch.keras")
    callbacks = [DivergeAtTheLastBatch(steps=2), keras.callbacks.ModelCheckpoint(path)]
    with pytest.warns(UserWarning, match="restored to its last finite value"):
        model.fit(x, y, batch_size=32, epochs=1, verbose=0, callbacks=callbacks)
    loaded = keras.saving.load_model(path)
    for layer in topology.adaptive_layers(loaded):
        assert np.isfinite(float(ops.convert_to_numpy(layer.width_parameter)))
    assert keras_awn.widths(loaded) == keras_awn.widths(model)


USES = {
    "widths": keras_awn.widths,
    "truncate": lambda model: keras_awn.truncate(model, fraction=0.0),
    "strip": keras_awn.strip,
}


@pytest.mark.parametrize("use", sorted(USES))
def test_a_non_finite_width_parameter_is_reported_naming_the_layer(use):
    model = nan_width_model()
    name = topology.adaptive_layers(model)[0].name
    with pytest.raises(ValueError, match=f"adaptive layer '{name}' is nan"):
        USES[use](model)


# -- Killed and failed saves ---------------------------------------------------------------------

KILLED_SAVE = """
import os, signal, sys
import h5py, keras, numpy as np
from tests import helpers
from tests.test_reliability import widened_model

path, kind, fault = sys.argv[1], sys.argv[2], sys.argv[3]
x, y = helpers.spiral_data(64)
model = widened_model(width=8)
model.fit(x, y, epochs=1, verbose=0)
save = model.save if kind == "keras" else model.save_weights
save(path)  # a complete file
np.savez(path + ".npz", *[keras.ops.convert_to_numpy(v) for v in model.weights])
model.fit(x, y, epochs=1, verbose=0)  # new weights for the next save
written = []
create_dataset = h5py.Group.create_dataset

def failing(self, *args, **kwargs):
    written.append(args)
    if len(written) == 3:  # in the middle of the weights
        if fault == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        raise OSError(28, "No space left on device")
    return create_dataset(self, *args, **kwargs)

h5py.Group.create_dataset = failing
try:
    save(path)
except OSError as error:
    print("raised", error.errno)
"""


def saved_weights_loaded(path, kind):
    if kind == "keras":
        return values(keras.saving.load_model(path).weights)
    model = widened_model(width=8)
    model.optimizer.build(model.trainable_variables)
    model.load_weights(path)
    return values(model.weights)


@pytest.mark.parametrize("fault", ["kill", "disk_full"])
@pytest.mark.parametrize("kind", ["keras", "weights"])
def test_a_killed_or_failed_save_keeps_the_previous_file(kind, fault, tmp_path):
    path = str(tmp_path / ("model.keras" if kind == "keras" else "model.weights.h5"))
    result = subprocess.run(
        [sys.executable, "-c", KILLED_SAVE, path, kind, fault],
        capture_output=True, text=True, timeout=300, env=dict(os.environ),
    )
    if fault == "kill":
        assert result.returncode == -signal.SIGKILL, result.stderr[-3000:]
    else:
        assert result.returncode == 0 and "raised 28" in result.stdout, result.stderr[-3000:]
        # Nothing but the file and the test's own record is left in the folder.
        assert sorted(os.listdir(tmp_path)) == sorted([os.path.basename(path), os.path.basename(path) + ".npz"])
    first = np.load(path + ".npz")
    for loaded, saved in zip(saved_weights_loaded(path, kind), [first[k] for k in first.files]):
        np.testing.assert_array_equal(loaded, saved)


def test_a_backup_with_unreadable_metadata_resumes_with_a_warning(tmp_path):
    x, y = helpers.spiral_data(64)
    backup = str(tmp_path / "backup")
    model = widened_model(width=8)

    class Stop(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                raise RuntimeError("stopped")

    with pytest.raises(RuntimeError, match="stopped"):
        model.fit(x, y, epochs=4, verbose=0, callbacks=[
            keras.callbacks.BackupAndRestore(backup), Stop()])
    saved = values(model.weights)
    with open(os.path.join(backup, "training_metadata.json"), "w") as f:
        f.write('{"epoch": ')  # killed while Keras wrote it
    resumed = widened_model(width=8)
    restored = []

    class Restored(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            restored.extend(values(self.model.weights))

    with pytest.warns(UserWarning, match="BackupAndRestore metadata .* is incomplete"):
        history = resumed.fit(x, y, epochs=1, verbose=0, callbacks=[
            keras.callbacks.BackupAndRestore(backup, delete_checkpoint=False), Restored()])
    assert np.isfinite(history.history["loss"][-1])
    assert len(restored) == len(saved)
    for a, b in zip(restored, saved):
        np.testing.assert_array_equal(a, b)


# -- Arguments -----------------------------------------------------------------------------------

BAD_ARGUMENTS = [
    (lambda: keras_awn.layers.AdaptiveDense(16, capacity=8), "capacity=8, initial_units=16"),
    (lambda: keras_awn.layers.AdaptiveDense(4, capacity=8, min_units=10), "capacity=8, min_units=10"),
    (lambda: keras_awn.layers.AdaptiveDense(40, max_units=20), "initial_units=40, max_units=20"),
    (lambda: keras_awn.layers.AdaptiveDense(8, quantile=float("nan")), "quantile=nan"),
    (lambda: keras_awn.layers.AdaptiveDense(8, weight_prior_scale=float("inf")), "weight_prior_scale=inf"),
    (lambda: keras_awn.callbacks.WidthController(growth_factor=float("inf")), "growth_factor=inf"),
    (lambda: keras_awn.callbacks.WidthController(min_capacity=100, max_capacity=50),
     "min_capacity=100, max_capacity=50"),
    (lambda: keras_awn.layers.AdaptiveGINConv(4, epsilon=float("nan")), "epsilon=nan"),
    (lambda: keras_awn.layers.AdaptiveRNNCell(8, input_map=keras.layers.Dense(8)), "input_map=<Dense"),
    (lambda: keras_awn.layers.AdaptiveRNNCell(8, input_map=42), "input_map=42"),
    (lambda: keras_awn.layers.AdaptiveRNNCell(
        8, input_map=keras.layers.Dense(8), state_map=keras.layers.Dense(8)), "input_map=<Dense"),
]


@pytest.mark.parametrize("index", range(len(BAD_ARGUMENTS)))
def test_bad_arguments_are_refused_naming_them(index):
    construct, received = BAD_ARGUMENTS[index]
    with pytest.raises(ValueError, match="Received: " + received.replace("(", r"\(")):
        construct()


def test_numpy_scalars_are_accepted_as_keras_accepts_them(tmp_path):
    x, y = helpers.spiral_data(64)
    model = keras_awn.Sequential([
        keras.Input((2,)),
        keras_awn.layers.AdaptiveDense(np.int64(8), activation="relu", max_units=np.int32(200),
                                       quantile=np.float32(0.9)),
        keras.layers.Dense(2),
    ])
    helpers.compile_classifier(model)
    controller = keras_awn.callbacks.WidthController(check_every=np.int64(4), growth_factor=np.float64(2))
    model.fit(x, y, epochs=1, verbose=0, callbacks=[controller])
    path = str(tmp_path / "numpy.keras")
    model.save(path)  # the config holds Python numbers: it serializes
    assert keras_awn.widths(keras.saving.load_model(path)) == keras_awn.widths(model)


def test_loaded_layers_may_hold_fewer_units_than_they_started_with(tmp_path):
    """Truncation and shrinking leave capacities below `initial_units`: such files load."""
    x, y = helpers.spiral_data(64)
    model = widened_model(units=(16, 16), width=16)
    model.fit(x, y, epochs=1, verbose=0, callbacks=[frozen_controller()])
    truncated = keras_awn.truncate(model, units={layer.name: 3 for layer in topology.adaptive_layers(model)})
    path = str(tmp_path / "truncated.keras")
    truncated.save(path)
    loaded = keras.saving.load_model(path)
    assert [layer.capacity for layer in topology.adaptive_layers(loaded)] == [3, 3]
    np.testing.assert_allclose(predictions(loaded, x[:16]), predictions(truncated, x[:16]), atol=1e-6)


@pytest.mark.parametrize("callback", [
    keras_awn.callbacks.WidthController(
        num_examples=100, check_every=4, growth_factor=3.0, grow_threshold=0.9,
        shrink_threshold=0.2, width_warmup_epochs=1, settle_after=None, settled_headroom=0.1,
        max_capacity=512, min_capacity=16, max_parameters=10**6, search_every=None,
        search_tolerance=0.05, final_share=0.0, search_budget=0.25, rebuild_cost=2.5,
        verbose=1),
    keras_awn.callbacks.WidthAnnealing(start_epoch=2, end_epoch=5, final_fraction=0.5),
    keras_awn.callbacks.WidthAnnealing(start_epoch=2, end_epoch=5, target_units={"a": 3}),
], ids=["WidthController", "WidthAnnealing-prior", "WidthAnnealing-size"])
def test_callback_configs_round_trip(callback):
    config = callback.get_config()
    defaults = type(callback)(**{k: v for k, v in config.items() if k in ("start_epoch", "end_epoch")})
    # Every argument given differs from its default, so a dropped one would show (WidthAnnealing's
    # alternative targets left unset are None).
    assert all(
        config[k] != v
        for k, v in defaults.get_config().items()
        if k not in ("start_epoch", "end_epoch") and config[k] is not None
    )
    assert type(callback)(**config).get_config() == config


def test_fit_on_no_examples_is_refused_clearly():
    model = widened_model(width=8)
    with pytest.raises(ValueError, match="no training examples"):
        model.fit(np.zeros((0, 2), "float32"), np.zeros((0,), "int32"), verbose=0)


def test_max_capacity_below_min_units_keeps_a_loadable_model(tmp_path):
    x, y = helpers.spiral_data(64)
    model = keras_awn.Sequential([
        keras.Input((2,)),
        keras_awn.layers.AdaptiveDense(16, min_units=16, activation="relu", name="floor"),
        keras.layers.Dense(2)])
    helpers.compile_classifier(model)
    model.fit(x, y, epochs=1, verbose=0,
              callbacks=[keras_awn.callbacks.WidthController(max_capacity=8, search_every=None)])
    assert model.get_layer("floor").capacity >= 16  # the width never goes below min_units
    path = str(tmp_path / "floor.keras")
    model.save(path)
    assert keras_awn.widths(keras.saving.load_model(path)) == keras_awn.widths(model)


def test_an_ignored_ctrl_c_stays_ignored_inside_a_reallocation(monkeypatch):
    from keras_awn._engine import interrupts

    with sigint_handler(signal.SIG_IGN):
        with interrupts.deferred():
            os.kill(os.getpid(), signal.SIGINT)
        assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN


def test_an_atomic_save_keeps_symbolic_links_and_the_usual_file_mode(tmp_path):
    model = widened_model(width=8)
    target = tmp_path / "models" / "model.keras"
    target.parent.mkdir()
    link = tmp_path / "latest.keras"
    link.symlink_to(target)
    model.save(str(link))
    assert link.is_symlink() and target.exists()
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask  # as `open` creates files
    assert keras_awn.widths(keras.saving.load_model(str(link))) == keras_awn.widths(model)
