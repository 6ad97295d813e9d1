"""Everyday Keras idioms on adaptive models, each on every backend (docs/index.md, "Keras
idioms"): callbacks that read the logs or keep weights, and the utilities users reach for."""

import pathlib
import re
import warnings

import keras
import numpy as np
import pytest
from keras import ops

import keras_awn
from keras_awn._engine import topology
from tests import helpers
from tests.test_reliability import widened_model


def values(variables):
    return [ops.convert_to_numpy(v).copy() for v in variables]


def test_the_users_callbacks_see_each_epochs_widths(tmp_path):
    """keras_awn models run the controller first: CSVLogger writes width columns, EarlyStopping
    can monitor a width."""
    x, y = helpers.spiral_data(128)
    model = helpers.compile_classifier(helpers.sequential_model())
    path = str(tmp_path / "log.csv")
    name = topology.adaptive_layers(model)[0].name
    stopping = keras.callbacks.EarlyStopping(monitor=f"{name}_width", mode="min", patience=100)
    model.fit(x, y, epochs=2, verbose=0, callbacks=[keras.callbacks.CSVLogger(path), stopping])
    with open(path) as f:
        header, *rows = [line.strip().split(",") for line in f]
    assert f"{name}_width" in header and len(rows) == 2
    assert int(float(rows[-1][header.index(f"{name}_width")])) == keras_awn.widths(model)[name]
    assert stopping.best is not None  # it found the width in the logs


class ChangeCapacitiesAfterEpoch(keras.callbacks.Callback):
    """Widens every adaptive layer's width at the end of `epoch`, so that the controller
    reallocates after the epoch EarlyStopping keeps as the best."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            for layer in topology.adaptive_layers(self.model):
                layer.width_parameter.assign(layer.distribution.raw_for_width(40, layer.quantile))


def test_early_stopping_restores_the_best_weights_across_a_reallocation():
    x, y = helpers.spiral_data(128)
    model = widened_model(width=8)
    kept = {}

    class Keep(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 0:
                kept["capacities"] = [layer.capacity for layer in topology.adaptive_layers(self.model)]
                kept["weights"] = self.model.get_weights()

    class Score(keras.callbacks.Callback):
        # The score monitored never improves after epoch 0: the best weights are epoch 0's.
        def on_epoch_end(self, epoch, logs=None):
            logs["score"] = 1.0 if epoch == 0 else 0.0

    stopping = keras.callbacks.EarlyStopping(
        monitor="score", mode="max", patience=1, restore_best_weights=True)
    history = model.fit(x, y, epochs=4, verbose=0, callbacks=[
        keras_awn.callbacks.WidthController(check_every=2, search_every=None),
        ChangeCapacitiesAfterEpoch(0), Keep(), Score(), stopping])
    assert len(history.history["loss"]) == 2 and stopping.best_epoch == 0
    assert kept["capacities"] == [12, 12]
    assert [layer.capacity for layer in topology.adaptive_layers(model)] == kept["capacities"]
    for restored, best in zip(model.get_weights(), kept["weights"]):
        np.testing.assert_array_equal(restored, best)
    assert np.isfinite(model.fit(x, y, epochs=1, verbose=0).history["loss"][-1])


def test_weights_that_fit_no_capacity_are_refused_before_anything_changes():
    model = widened_model(width=8)
    weights = model.get_weights()
    weights[-2] = np.zeros((5, 3), "float32")  # the output kernel: no capacity gives 3 outputs
    weights[0] = np.zeros((2, 40), "float32")  # the first layer at another capacity
    before = values(model.weights)
    with pytest.raises(ValueError, match="do not fit"):
        model.set_weights(weights)
    assert [layer.capacity for layer in topology.adaptive_layers(model)] == [12, 12]
    for a, b in zip(values(model.weights), before):
        np.testing.assert_array_equal(a, b)


def test_a_sequential_model_without_input_builds_from_its_arrays():
    x, y = helpers.spiral_data(128)
    model = keras_awn.Sequential([
        keras_awn.layers.AdaptiveDense(8, activation="relu", name="hidden"),
        keras.layers.Dense(2),
    ])
    helpers.compile_classifier(model)
    history = model.fit(x, y, epochs=1, verbose=0)
    assert "hidden_width" in history.history
    assert model.get_layer("hidden").kernel.shape[0] == 2


def test_an_unbuilt_sequential_model_on_a_dataset_is_refused_naming_the_cause():
    x, y = helpers.spiral_data(128)
    model = keras.Sequential([
        keras_awn.layers.AdaptiveDense(8, activation="relu"),
        keras.layers.Dense(2),
    ])
    helpers.compile_classifier(model)

    class Batches(keras.utils.PyDataset):
        def __len__(self):
            return 4

        def __getitem__(self, index):
            return x[32 * index : 32 * (index + 1)], y[32 * index : 32 * (index + 1)]

    controller = keras_awn.callbacks.WidthController(num_examples=128, search_every=None)
    if keras.backend.backend() == "tensorflow":
        # Keras builds it inside the first step there, after the controller needs its graph.
        with pytest.raises(ValueError, match="is not built when `fit` starts"):
            model.fit(Batches(), epochs=1, verbose=0, callbacks=[controller])
    else:
        model.fit(Batches(), epochs=1, verbose=0, callbacks=[controller])
        assert model.built


def spiral_classifier(functional):
    layers = [
        keras_awn.layers.AdaptiveDense(8, activation="relu", name="hidden"),
        keras.layers.Dense(2, name="logits"),
    ]
    if not functional:
        return keras_awn.Sequential([keras.Input((2,))] + layers)
    inputs = keras.Input((2,))
    return keras_awn.Model(inputs, layers[1](layers[0](inputs)))


@pytest.mark.parametrize("functional", [False, True], ids=["sequential", "functional"])
def test_clone_model_gives_a_keras_awn_model_that_trains_with_its_controller(functional):
    x, y = helpers.spiral_data(128)
    model = spiral_classifier(functional)
    clone = keras_awn.clone_model(model)
    assert isinstance(clone, keras_awn.Model if functional else keras_awn.Sequential)
    assert clone.get_layer("hidden") is not model.get_layer("hidden")
    helpers.compile_classifier(clone)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # no "training without a controller"
        history = clone.fit(x, y, epochs=1, verbose=0)
    assert "hidden_width" in history.history


def test_keras_clone_model_of_a_sequential_warns_naming_keras_awn_clone_model():
    x, y = helpers.spiral_data(64)
    clone = keras.models.clone_model(spiral_classifier(functional=False))
    assert not isinstance(clone, keras_awn.Sequential)  # Keras' own class
    helpers.compile_classifier(clone)
    with pytest.warns(UserWarning, match="keras_awn.clone_model"):
        clone.fit(x, y, epochs=1, verbose=0)


def test_clone_model_makes_a_plain_model_adaptive():
    x, y = helpers.spiral_data(128)
    plain = keras.Sequential([
        keras.Input((2,)), keras.layers.Dense(32, activation="relu", name="hidden"),
        keras.layers.Dense(2, name="logits")])

    def adaptive(layer):
        if layer.name == "hidden":
            return keras_awn.layers.AdaptiveDense(activation="relu", name="hidden")
        return layer.__class__.from_config(layer.get_config())

    model = keras_awn.clone_model(plain, clone_function=adaptive)
    assert isinstance(model, keras_awn.Sequential)
    helpers.compile_classifier(model)
    history = model.fit(x, y, epochs=2, verbose=0)
    assert "hidden_width" in history.history
    assert keras_awn.strip(model).get_layer("hidden").units == keras_awn.widths(model)["hidden"]


def custom_loop_code():
    """This backend's loop of docs/custom-loops.md, with capacities that follow the widths
    closely (and rebuilds counted as free), so that the loop reallocates while it runs."""
    page = (pathlib.Path(__file__).resolve().parent.parent / "docs" / "custom-loops.md").read_text()
    backend = keras.backend.backend()
    (code,) = [c for c in re.findall(r"```python\n(.*?)```", page, re.S)
               if c.startswith(f"# backend: {backend}")]
    original = "WidthController(num_examples=len(x), probe_data=(x, y))"
    assert original in code
    changed = original[:-1] + ", min_capacity=1, check_every=2, rebuild_cost=0)"
    return code.replace(original, changed)


def test_a_custom_training_loop_reallocates_while_it_trains():
    x, y = keras_awn.datasets.spirals(512, seed=0)
    namespace = {"x": x, "y": y}
    exec(compile(custom_loop_code(), "<custom loop>", "exec"), namespace)
    model, controller = namespace["model"], namespace["controller"]
    assert any(event["step"] > 0 for event in controller.reallocations), controller.reallocations
    for layer in keras_awn.adaptive_layers(model):
        assert layer.kernel.shape[-1] == layer.capacity
    assert all(np.all(np.isfinite(v)) for v in values(model.weights))
    accuracy = np.mean(np.argmax(ops.convert_to_numpy(model(x)), axis=-1) == y)
    assert accuracy > 0.7  # above chance (0.5): it trained through the reallocations


def test_a_custom_loop_without_an_optimizer_on_the_model_is_warned():
    model = helpers.sequential_model()
    controller = keras_awn.callbacks.WidthController(num_examples=10, search_every=None)
    callbacks = keras.callbacks.CallbackList([controller], model=model)
    with pytest.warns(UserWarning, match="has no optimizer: in a custom training loop"):
        callbacks.on_train_begin()


def test_truncate_and_strip_rebuild_unregistered_custom_layers():
    class Doubling(keras.layers.Layer):  # defined here, registered nowhere
        def call(self, inputs):
            return 2.0 * inputs

    x, y = helpers.spiral_data(64)
    model = keras_awn.Sequential([
        keras.Input((2,)), Doubling(),
        keras_awn.layers.AdaptiveDense(8, activation="relu"), keras.layers.Dense(2)])
    helpers.compile_classifier(model).fit(x, y, epochs=1, verbose=0)
    reference = ops.convert_to_numpy(model(x))
    for copy in (keras_awn.truncate(model, fraction=0.0), keras_awn.strip(model)):
        assert isinstance(copy.layers[0], Doubling)
        np.testing.assert_allclose(ops.convert_to_numpy(copy(x)), reference, atol=1e-5)


def test_an_explicit_jit_compile_false_survives_a_reload(tmp_path):
    model = helpers.sequential_model()
    model.compile("adam", "mse", jit_compile=False)
    model.build((None, 2))
    model.save(str(tmp_path / "model.keras"))
    assert keras.saving.load_model(str(tmp_path / "model.keras")).jit_compile is False


def test_widths_tell_the_directions_of_a_bidirectional_layer_apart():
    model = keras_awn.Sequential([
        keras.Input((5, 3)),
        keras.layers.Bidirectional(keras.layers.RNN(keras_awn.layers.AdaptiveRNNCell(4))),
        keras.layers.Dense(2)])
    widths = keras_awn.widths(model)
    assert len(widths) == len(keras_awn.adaptive_layers(model)) == 4
    assert sum("forward" in name for name in widths) == sum("backward" in name for name in widths) == 2


@pytest.mark.parametrize("units", [1, 2])
def test_a_start_below_the_narrowest_width_is_warned(units):
    with pytest.warns(UserWarning, match=f"starts at 3 units, not initial_units={units}"):
        layer = keras_awn.layers.AdaptiveDense(units)
    layer.build((None, 2))
    assert layer.active_units == 3
    capped = keras_awn.layers.AdaptiveDense(units, max_units=units)
    capped.build((None, 2))
    assert capped.active_units == units


def test_the_package_exposes_its_modules():
    for name in ("datasets", "layers", "callbacks", "distributions", "graph_data", "plotting"):
        assert hasattr(keras_awn, name), name


def test_summary_shows_the_active_widths_and_what_strip_keeps():
    x, y = helpers.spiral_data(128)
    model = helpers.compile_classifier(helpers.sequential_model(initial_units=(9, 5)))
    model.fit(x, y, epochs=1, verbose=0)
    lines = []
    model.summary(print_fn=lambda line, **kwargs: lines.append(line))
    text = "\n".join(lines)
    for layer in keras_awn.adaptive_layers(model):
        assert re.search(rf"{layer.name}\s+{layer.active_units}\s+{layer.capacity}\b", text)
    stripped = keras_awn.strip(model).count_params()
    assert f"Parameters at the active widths: {stripped:,} (allocated: {model.count_params():,})" in text


def test_reading_values_raises_no_numpy_deprecation_warning():
    from keras_awn._engine import running_state

    variable = keras.Variable(np.arange(6.0, dtype="float32").reshape(2, 3))
    tensor = ops.convert_to_tensor(np.arange(3.0, dtype="float32"))
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        read = running_state.host_value(variable), running_state.host_value(tensor)
    np.testing.assert_array_equal(read[0], np.arange(6.0).reshape(2, 3))
    np.testing.assert_array_equal(read[1], np.arange(3.0))
    read[0][0, 0] = 99.0  # a copy: the variable is untouched
    assert float(ops.convert_to_numpy(variable.value)[0, 0]) == 0.0


def deprecation_warnings_of_a_fit(model, x, y):
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(x, y, epochs=3, verbose=0)
    return sum(issubclass(w.category, DeprecationWarning) for w in caught)


def test_a_fit_warns_about_as_much_as_plain_keras():
    """keras_awn's reads once added hundreds of numpy-2 `__array__` warnings per fit."""
    x, y = helpers.spiral_data(512)
    adaptive = deprecation_warnings_of_a_fit(keras_awn.Sequential([
        keras.Input((2,)), keras_awn.layers.AdaptiveDense(activation="relu"),
        keras_awn.layers.AdaptiveDense(activation="relu"), keras.layers.Dense(2)]), x, y)
    plain = deprecation_warnings_of_a_fit(keras.Sequential([
        keras.Input((2,)), keras.layers.Dense(16, activation="relu"),
        keras.layers.Dense(16, activation="relu"), keras.layers.Dense(2)]), x, y)
    assert adaptive <= plain + 10, (adaptive, plain)


def test_a_plain_keras_model_without_n_is_told_who_infers_it():
    x, y = helpers.spiral_data(64)
    inputs = keras.Input((2,))
    hidden = keras_awn.layers.AdaptiveDense(8, activation="relu")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2)(hidden))
    helpers.compile_classifier(model)
    with pytest.raises(ValueError, match="infers it only in `keras_awn.Model` and `keras_awn.Sequential`"):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[keras_awn.callbacks.WidthController()])


def test_reading_bfloat16_values():
    from keras_awn._engine import running_state

    tensor = ops.cast(ops.convert_to_tensor(np.array([1.5, -2.0], "float32")), "bfloat16")
    np.testing.assert_array_equal(running_state.host_value(tensor).astype("float32"), [1.5, -2.0])


def test_the_width_logs_tell_the_directions_of_a_bidirectional_layer_apart():
    sequences = np.random.default_rng(0).normal(size=(64, 5, 3)).astype("float32")
    labels = (sequences[:, 0, 0] > 0).astype("int32")
    model = keras_awn.Sequential([
        keras.Input((5, 3)),
        keras.layers.Bidirectional(keras.layers.RNN(keras_awn.layers.AdaptiveRNNCell(4))),
        keras.layers.Dense(2)])
    helpers.compile_classifier(model)
    history = model.fit(sequences, labels, epochs=1, verbose=0)
    logged = [key for key in history.history if key.endswith("_width")]
    assert len(logged) == 4
    assert {key[: -len("_width")] for key in logged} == set(keras_awn.widths(model))


def test_an_unbuilt_sequential_model_builds_from_a_dataset_with_only_num_batches():
    x, y = helpers.spiral_data(128)

    class Batches(keras.utils.PyDataset):
        @property
        def num_batches(self):
            return 4

        def __getitem__(self, index):
            return x[32 * index : 32 * (index + 1)], y[32 * index : 32 * (index + 1)]

    model = keras_awn.Sequential([
        keras_awn.layers.AdaptiveDense(8, activation="relu", name="hidden"), keras.layers.Dense(2)])
    helpers.compile_classifier(model)
    controller = keras_awn.callbacks.WidthController(num_examples=128)
    history = model.fit(Batches(), epochs=1, verbose=0, callbacks=[controller])
    assert "hidden_width" in history.history


def test_saving_a_subclassed_model_without_get_config_warns_naming_the_cause(tmp_path):
    class NoConfig(keras_awn.Model):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.mlp = keras_awn.layers.AdaptiveMLP(output_units=2)

        def call(self, inputs):
            return self.mlp(inputs)

    x, y = helpers.spiral_data(64)
    model = helpers.compile_classifier(NoConfig())
    model.fit(x, y, epochs=1, verbose=0)
    with pytest.warns(UserWarning, match="without a `get_config` of its own"):
        model.save(str(tmp_path / "no_config.keras"))
    functional = spiral_classifier(functional=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        functional.save(str(tmp_path / "functional.keras"))  # its config is its graph: no warning
