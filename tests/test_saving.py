"""Saving: `.keras` files written mid-training reload with widths, capacities, weights and optimizer
state, predict identically, resume training, and load on the other two backends."""

import json

import keras
import numpy as np
import pytest
from keras import ops

import keras_awn
from keras_awn._engine import resize
from keras_awn._engine import topology
from keras_awn.layers import AdaptiveMLP
from tests import helpers
from tests.test_models import MLPClassifier


def mlp_functional():
    inputs = keras.Input((2,))
    hidden = AdaptiveMLP(output_units=8, hidden_layers=2, initial_units=6)(inputs)
    outputs = keras.layers.Dense(2)(keras.layers.Activation("relu")(hidden))
    return keras_awn.Model(inputs, outputs)


BUILDERS = {
    "sequential": lambda: helpers.sequential_model(initial_units=(6, 6)),
    "functional": lambda: helpers.functional_model(initial_units=(6, 6)),
    "mlp_block": mlp_functional,
}


def widen(model, units=60):
    """Makes every adaptive layer ask for more units than it has, so fit must reallocate."""
    for layer in topology.adaptive_layers(model):
        layer.width_parameter.assign(layer.distribution.raw_for_width(units, layer.quantile))


class SaveMidEpoch(keras.callbacks.Callback):
    """Saves the model in the middle of an epoch, after some reallocations happened."""

    def __init__(self, path, at_step):
        super().__init__()
        self.path, self.at_step, self.seen = path, at_step, 0
        self.snapshot = None

    def on_train_batch_begin(self, batch, logs=None):
        if self.seen == self.at_step:
            model = self.model
            model.save(self.path)
            self.snapshot = {
                "weights": [ops.convert_to_numpy(v) for v in model.weights],
                "optimizer": [ops.convert_to_numpy(v) for v in model.optimizer.variables],
                "capacities": {l.name: l.capacity for l in topology.adaptive_layers(model)},
                "widths": keras_awn.widths(model),
            }
        self.seen += 1


def train_and_save_mid_training(builder, path):
    x, y = helpers.spiral_data(256)
    model = helpers.compile_classifier(builder())
    model.build((None, 2))
    widen(model)
    controller = keras_awn.callbacks.WidthController(check_every=2)
    saver = SaveMidEpoch(path, at_step=13)  # epoch 2 of 8 steps, mid-epoch
    model.fit(x, y, batch_size=32, epochs=2, verbose=0, callbacks=[controller, saver])
    assert controller.reallocations and saver.snapshot is not None
    return saver.snapshot


@pytest.mark.parametrize("kind", sorted(BUILDERS))
def test_mid_training_save_restores_everything_and_resumes(kind, tmp_path):
    path = str(tmp_path / f"{kind}.keras")
    snapshot = train_and_save_mid_training(BUILDERS[kind], path)
    loaded = keras.saving.load_model(path)
    assert {l.name: l.capacity for l in topology.adaptive_layers(loaded)} == snapshot["capacities"]
    assert keras_awn.widths(loaded) == snapshot["widths"]
    for saved, restored in zip(snapshot["weights"], loaded.weights):
        np.testing.assert_array_equal(saved, ops.convert_to_numpy(restored))
    for saved, restored in zip(snapshot["optimizer"], loaded.optimizer.variables):
        np.testing.assert_array_equal(saved, ops.convert_to_numpy(restored))
    iterations = int(ops.convert_to_numpy(loaded.optimizer.iterations))
    assert iterations == 13
    # Training resumes from the restored state.
    x, y = helpers.spiral_data(256)
    history = loaded.fit(x, y, batch_size=32, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert int(ops.convert_to_numpy(loaded.optimizer.iterations)) == iterations + 8


def test_reload_predicts_identically_and_subclassed_round_trip(tmp_path):
    x, y = helpers.spiral_data(128)
    model = helpers.compile_classifier(MLPClassifier())
    model.fit(x, y, batch_size=32, epochs=2, verbose=0)
    resize.resize(model, {model.mlp.hidden[0]: 21})
    path = str(tmp_path / "subclassed.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    assert loaded.mlp.hidden[0].capacity == 21
    loaded.fit(x, y, epochs=1, verbose=0)


LOAD_ELSEWHERE = r"""
import json, sys
import numpy as np
import keras
paths = json.loads(open("{spec}").read())
out = {{}}
# The stripped model first, before keras_awn is ever imported.
plain = keras.saving.load_model(paths["stripped"])
out["stripped_prediction"] = plain.predict(np.load(paths["x"]), verbose=0).tolist()
out["keras_awn_imported"] = "keras_awn" in sys.modules
import keras_awn
x, y = np.load(paths["x"]), np.load(paths["y"])
for kind, path in paths["models"].items():
    model = keras.saving.load_model(path)
    prediction = model.predict(x, verbose=0)
    widths = keras_awn.widths(model)
    history = model.fit(x, y, batch_size=32, epochs=1, verbose=0)
    out[kind] = {{
        "prediction": prediction.tolist(),
        "widths": widths,
        "iterations": int(keras.ops.convert_to_numpy(model.optimizer.iterations)),
        "resumed_loss": float(history.history["loss"][0]),
    }}
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def saved_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cross_backend")
    x, y = helpers.spiral_data(128)
    paths = {"x": str(folder / "x.npy"), "y": str(folder / "y.npy"), "models": {}}
    np.save(paths["x"], x)
    np.save(paths["y"], y)
    expected = {}
    for kind, builder in BUILDERS.items():
        model = helpers.compile_classifier(builder())
        model.build((None, 2))
        widen(model, 24)
        model.fit(x, y, batch_size=32, epochs=2, verbose=0)
        path = str(folder / f"{kind}.keras")
        model.save(path)
        paths["models"][kind] = path
        expected[kind] = {
            "prediction": model.predict(x, verbose=0),
            "widths": keras_awn.widths(model),
            "iterations": int(ops.convert_to_numpy(model.optimizer.iterations)),
        }
        if kind == "functional":
            stripped = keras_awn.strip(model)
            paths["stripped"] = str(folder / "stripped.keras")
            stripped.save(paths["stripped"])
            expected["stripped"] = model.predict(x, verbose=0)
    spec = folder / "spec.json"
    spec.write_text(json.dumps(paths))
    return spec, expected


OTHER_BACKENDS = [b for b in helpers.BACKENDS if b != keras.backend.backend()]


@pytest.mark.parametrize("target", OTHER_BACKENDS)
def test_files_load_on_the_other_backends(saved_files, target):
    spec, expected = saved_files
    result = helpers.run_python(LOAD_ELSEWHERE.format(spec=spec), target)
    assert result["keras_awn_imported"] is False
    np.testing.assert_allclose(result["stripped_prediction"], expected["stripped"], atol=1e-5)
    for kind in BUILDERS:
        np.testing.assert_allclose(
            result[kind]["prediction"], expected[kind]["prediction"], atol=1e-5, rtol=1e-5
        )
        assert result[kind]["widths"] == expected[kind]["widths"]
        assert result[kind]["iterations"] == expected[kind]["iterations"] + 4
        assert np.isfinite(result[kind]["resumed_loss"])


def test_stripped_file_loads_without_keras_awn_on_this_backend(saved_files):
    spec, expected = saved_files
    result = helpers.run_python(LOAD_ELSEWHERE.format(spec=spec), keras.backend.backend())
    assert result["keras_awn_imported"] is False
    np.testing.assert_allclose(result["stripped_prediction"], expected["stripped"], atol=1e-5)


def test_build_config_follows_the_input_width():
    model = helpers.sequential_model(initial_units=(6, 6))
    first, second, dense = model.layers
    resize.resize(model, {first: 30})
    assert second.get_build_config()["input_shape"][-1] == 30
    assert dense.get_build_config()["input_shape"][-1] == 12
    config = model.get_config()
    restored = keras_awn.Sequential.from_config(config)
    restored.set_weights(model.get_weights())  # raises if any shape differs
    assert restored.layers[0].capacity == 30
