"""keras_awn.Sequential / keras_awn.Model / AdaptiveMLP inside fit: graph checks, metrics, reporting."""

import warnings

import keras
import numpy as np
import pytest
from keras import ops

import keras_awn
from keras_awn import datasets
from keras_awn._engine import resize
from keras_awn._engine import topology
from keras_awn.layers import AdaptiveDense
from keras_awn.layers import AdaptiveMLP
from tests import helpers


@keras.saving.register_keras_serializable(package="keras_awn_tests")
class MLPClassifier(keras_awn.Model):
    """A subclassed model whose adaptive part is an AdaptiveMLP block.

    As for any Keras layer whose state shapes change after construction, the block is
    serialized in `get_config` (it carries its current capacities) and restored in `from_config`.
    """

    def __init__(self, classes=2, mlp=None, **kwargs):
        super().__init__(**kwargs)
        self.classes = classes
        self.mlp = mlp or AdaptiveMLP(output_units=classes, hidden_layers=2, initial_units=8)

    def call(self, inputs):
        return self.mlp(inputs)

    def get_config(self):
        return {
            **super().get_config(),
            "classes": self.classes,
            "mlp": keras.saving.serialize_keras_object(self.mlp),
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["mlp"] = keras.saving.deserialize_keras_object(config["mlp"])
        return cls(**config)


BUILDERS = {
    "sequential": lambda: helpers.sequential_model(initial_units=(8, 8)),
    "functional": lambda: helpers.functional_model(initial_units=(8, 8)),
    "subclassed_mlp": lambda: MLPClassifier(),
}


@pytest.mark.parametrize("kind", sorted(BUILDERS))
def test_fit_reports_widths_in_history_and_widths(kind):
    x, y = helpers.spiral_data(256)
    model = helpers.compile_classifier(BUILDERS[kind]())
    history = model.fit(x, y, batch_size=32, epochs=3, verbose=0)
    layers = topology.adaptive_layers(model)
    assert len(layers) == 2
    reported = keras_awn.widths(model)
    assert set(reported) == {layer.name for layer in layers}
    for layer in layers:
        key = f"{layer.name}_width"
        assert len(history.history[key]) == 3
        assert all(1 <= w <= layer.capacity for w in history.history[key])
        assert reported[layer.name] == layer.active_units
        # The last epoch's entry is the width the model ends with.
        assert history.history[key][-1] == layer.active_units
    assert all(np.isfinite(history.history["loss"]))


def test_progress_bar_shows_the_widths(capsys):
    x, y = helpers.spiral_data(64)
    model = helpers.compile_classifier(helpers.sequential_model(initial_units=(8,)))
    model.fit(x, y, batch_size=32, epochs=1, verbose=1)
    assert "adaptive_dense" in capsys.readouterr().out.replace("\r", "\n")


def test_plain_keras_model_with_controller():
    x, y = helpers.spiral_data(128)
    inputs = keras.Input((2,))
    outputs = keras.layers.Dense(2)(AdaptiveDense(8, activation="relu")(inputs))
    model = helpers.compile_classifier(keras.Model(inputs, outputs))
    # A plain keras.Model gives the controller neither N nor the width search's probe.
    controller = keras_awn.callbacks.WidthController(num_examples=len(x), probe_data=(x, y))
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # no "no controller" or "no probe" warning
        history = model.fit(x, y, epochs=2, verbose=0, callbacks=[controller])
    (layer,) = topology.adaptive_layers(model)
    assert history.history[f"{layer.name}_width"][-1] == layer.active_units
    assert layer.training_state.num_examples == len(x)


def test_plain_keras_model_without_controller_warns_once():
    x, y = helpers.spiral_data(64)
    inputs = keras.Input((2,))
    outputs = keras.layers.Dense(2)(AdaptiveDense(8, activation="relu")(inputs))
    model = helpers.compile_classifier(keras.Model(inputs, outputs))
    with pytest.warns(UserWarning, match="WidthController") as record:
        model.fit(x, y, epochs=2, verbose=0)
    assert sum("WidthController" in str(w.message) for w in record) == 1


def test_keras_awn_model_attaches_one_controller_and_infers_n():
    x, y = helpers.spiral_data(200)
    model = helpers.compile_classifier(helpers.sequential_model(initial_units=(8,)))
    model.fit(x, y, epochs=1, verbose=0, validation_split=0.25)
    (layer,) = topology.adaptive_layers(model)
    assert layer.training_state.num_examples == 150  # validation examples are not training examples


def test_explicit_num_examples_wins():
    x, y = helpers.spiral_data(100)
    model = helpers.compile_classifier(helpers.sequential_model(initial_units=(8,)))
    controller = keras_awn.callbacks.WidthController(num_examples=5000)
    model.fit(x, y, epochs=1, verbose=0, callbacks=[controller])
    assert topology.adaptive_layers(model)[0].training_state.num_examples == 5000


class TinyBatches(keras.utils.PyDataset):
    def __init__(self, x, y):
        super().__init__()
        self.x, self.y = x, y

    def __len__(self):
        return len(self.x) // 32

    def __getitem__(self, index):
        part = slice(32 * index, 32 * (index + 1))
        return self.x[part], self.y[part]


def test_unknown_number_of_examples_is_a_clear_error():
    x, y = helpers.spiral_data(128)
    model = helpers.compile_classifier(helpers.sequential_model(initial_units=(8,)))
    with pytest.raises(ValueError, match="num_examples"):
        model.fit(TinyBatches(x, y), epochs=1, verbose=0)
    # ... and it is solved as the message says.
    controller = keras_awn.callbacks.WidthController(num_examples=len(x))
    model.fit(TinyBatches(x, y), epochs=1, verbose=0, callbacks=[controller])
    assert topology.adaptive_layers(model)[0].training_state.num_examples == len(x)


def test_no_number_of_examples_needed_without_priors():
    x, y = helpers.spiral_data(128)
    model = helpers.compile_classifier(
        helpers.sequential_model(initial_units=(8,), weight_prior_scale=None)
    )
    history = model.fit(TinyBatches(x, y), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])


def test_evaluate_loss_is_the_elbo_per_example():
    """evaluate() == mean cross-entropy + sum of priors / N, all recomputed in numpy."""
    x, y = helpers.spiral_data(128)
    model = helpers.compile_classifier(
        helpers.sequential_model(
            initial_units=(6, 5),
            weight_prior_scale=0.7,
            width_prior={"mean_units": 9, "scale": 3.0},
            width_learning="gradient",
        )
    )
    model.fit(x, y, epochs=1, verbose=0)
    first, second, dense = model.layers
    n = len(x)
    hidden = helpers.numpy_adaptive_dense(first, x.astype("float64"))
    hidden = helpers.numpy_adaptive_dense(second, hidden)
    logits = hidden @ ops.convert_to_numpy(dense.kernel).astype("float64") + ops.convert_to_numpy(
        dense.bias
    )
    log_softmax = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    cross_entropy = -log_softmax[np.arange(n), y].mean()

    def prior(layer, input_width):
        kernel = ops.convert_to_numpy(layer.kernel).astype("float64")
        bias = ops.convert_to_numpy(layer.bias).astype("float64")
        width = layer.active_units
        squares = (kernel[:input_width, :width] ** 2).sum() + (bias[:width] ** 2).sum()
        raw = float(ops.convert_to_numpy(layer.width_parameter))
        mean = layer.distribution.raw_for_width(9, 0.9)
        return squares / (2 * 0.7**2) + (raw - mean) ** 2 / (2 * 3.0**2)

    expected = cross_entropy + (prior(first, 2) + prior(second, first.active_units)) / n
    loss = model.evaluate(x, y, batch_size=n, verbose=0, return_dict=True)["loss"]
    np.testing.assert_allclose(loss, expected, rtol=1e-4)


def _stateless_losses(model, x):
    """The losses one stateless step collects (how Keras trains on JAX, on every backend)."""
    trainable = [v.value for v in model.trainable_variables]
    non_trainable = [v.value for v in model.non_trainable_variables]
    return model.stateless_call(trainable, non_trainable, x, training=True, return_losses=True)[2]


def _stale_loss_id_model(model_class, second_layer):
    """A model whose first adaptive layer adds `marker` as its prior, while the layer after it
    holds the id of `marker` among the ids of the losses it added at its previous call: what
    happens when that old loss was freed and `marker` took its address."""
    model = model_class([keras.Input((2,)), AdaptiveDense(4, capacity=8), second_layer,
                         keras.layers.Dense(2)])
    model.build((None, 2))
    first = model.layers[0]
    for layer in topology.adaptive_layers(model):
        layer.training_state.num_examples = 100
    marker = ops.convert_to_tensor(np.float32(0.5))
    first._prior = lambda unit_mask, factor: marker
    model.layers[1]._loss_ids.add(id(marker))
    return model, marker


def test_a_stale_loss_id_of_an_adaptive_layer_drops_no_other_loss():
    # A plain keras.Sequential: the adaptive layer itself must forget its old ids.
    model, marker = _stale_loss_id_model(keras.Sequential, AdaptiveDense(4, capacity=8))
    losses = _stateless_losses(model, np.ones((3, 2), "float32"))
    assert len(losses) == 2
    assert any(loss is marker for loss in losses)


def test_keras_awn_models_keep_the_prior_against_other_layers_stale_loss_ids():
    # A plain Dense with an activity regularizer (a loss of its own) after the adaptive layer.
    reader = keras.layers.Dense(3, activity_regularizer="l2")
    model, marker = _stale_loss_id_model(keras_awn.Sequential, reader)
    losses = _stateless_losses(model, np.ones((3, 2), "float32"))
    assert len(losses) == 2
    assert any(loss is marker for loss in losses)


# -- Readers that cannot follow the width are refused -----------------------------------------


def functional_with(reader_factory):
    inputs = keras.Input((2,))
    hidden = AdaptiveDense(8, activation="relu")(inputs)
    outputs = keras.layers.Dense(2)(reader_factory()(hidden))
    return inputs, outputs


@pytest.mark.parametrize(
    "reader,name",
    [
        (lambda: keras.layers.LayerNormalization(name="norm_reader"), "norm_reader"),
        (lambda: keras.layers.Activation("sigmoid", name="sigmoid_reader"), "sigmoid_reader"),
        # Without `gamma` the masked channels' statistics cannot be kept from leaking.
        (
            lambda: keras.layers.BatchNormalization(scale=False, name="unscaled_norm"),
            "unscaled_norm",
        ),
    ],
)
def test_unsupported_readers_are_refused_naming_them(reader, name):
    inputs, outputs = functional_with(reader)
    with pytest.raises(ValueError, match=name):
        keras_awn.Model(inputs, outputs)
    # A plain keras.Model is checked when fit starts.
    x, y = helpers.spiral_data(32)
    plain = helpers.compile_classifier(keras.Model(inputs, outputs))
    with pytest.raises(ValueError, match=name):
        plain.fit(x, y, epochs=1, verbose=0, callbacks=[keras_awn.callbacks.WidthController(32)])


@pytest.mark.parametrize(
    "reader",
    [lambda: keras.layers.Dropout(0.1), lambda: keras.layers.Activation("relu"), keras.layers.ReLU],
)
def test_zero_preserving_layers_may_sit_between(reader):
    inputs, outputs = functional_with(reader)
    model = helpers.compile_classifier(keras_awn.Model(inputs, outputs))
    x, y = helpers.spiral_data(64)
    model.fit(x, y, epochs=1, verbose=0)
    layer = topology.adaptive_layers(model)[0]
    resize.resize(model, {layer: 40})
    assert tuple(model.layers[-1].kernel.shape) == (40, 2)
    assert model.predict(x, verbose=0).shape == (64, 2)


def test_sequential_refuses_unsupported_reader_at_compile():
    model = keras_awn.Sequential(
        [keras.Input((2,)), AdaptiveDense(8), keras.layers.LayerNormalization(name="ln"), keras.layers.Dense(2)]
    )
    with pytest.raises(ValueError, match="'ln'"):
        helpers.compile_classifier(model)


def test_adaptive_output_as_model_output_is_refused():
    inputs = keras.Input((2,))
    with pytest.raises(ValueError, match="output shape"):
        keras_awn.Model(inputs, AdaptiveDense(8, name="last")(inputs))


def test_merging_an_adaptive_output_is_refused():
    inputs = keras.Input((2,))
    hidden = AdaptiveDense(8, name="adaptive")(inputs)
    merged = keras.layers.Concatenate(name="concat")([hidden, inputs])
    with pytest.raises(ValueError, match="concat"):
        keras_awn.Model(inputs, keras.layers.Dense(2)(merged))


class BareAdaptive(keras_awn.Model):
    def __init__(self):
        super().__init__()
        self.hidden = AdaptiveDense(8, name="bare_hidden")
        self.head = keras.layers.Dense(2)

    def call(self, inputs):
        return self.head(self.hidden(inputs))


def test_bare_adaptive_layer_in_subclassed_model_is_refused_naming_it():
    x, y = helpers.spiral_data(32)
    model = helpers.compile_classifier(BareAdaptive())
    with pytest.raises(ValueError, match="bare_hidden"):
        model.fit(x, y, epochs=1, verbose=0)


def test_functional_arguments_to_a_subclass_are_refused():
    class Sub(keras_awn.Model):
        pass

    inputs = keras.Input((2,))
    with pytest.raises(TypeError, match="FunctionalModel"):
        Sub(inputs, keras.layers.Dense(2)(inputs))


def test_functional_and_subclassed_models_coexist():
    # keras.Model would rewrite a subclass's bases on first functional use; ours must not.
    functional = helpers.functional_model()
    assert isinstance(functional, keras_awn.Model)
    subclassed = MLPClassifier()
    assert not isinstance(subclassed, keras_awn.models.FunctionalModel)
    assert keras_awn.Model.__bases__[-1] is keras.Model


# -- Initialisation ---------------------------------------------------------------------------


def test_readers_get_the_compensating_initialisation():
    model = keras_awn.Sequential(
        [keras.Input((2,)), AdaptiveDense(200, capacity=400), keras.layers.Dense(300)]
    )
    producer, reader = model.layers
    importance = ops.convert_to_numpy(producer.importance()).astype("float64")
    expected_std = np.sqrt(2.0 / (importance**2).sum())
    kernel = ops.convert_to_numpy(reader.kernel)
    # 120,000 draws: the sample std is within 1% of the target with overwhelming probability.
    np.testing.assert_allclose(kernel.std(), expected_std, rtol=0.01)
    np.testing.assert_allclose(kernel.mean(), 0.0, atol=0.05 * expected_std)


def test_first_layer_uses_he_initialisation():
    layer = AdaptiveDense(500)
    layer.build((None, 400))
    kernel = ops.convert_to_numpy(layer.kernel)
    # keras' he_normal: truncated normal with std sqrt(2 / fan_in).
    np.testing.assert_allclose(kernel.std(), np.sqrt(2.0 / 400), rtol=0.05)


# -- AdaptiveMLP ------------------------------------------------------------------------------


def test_width_follows_the_data():
    """Same model, same start, same settings: the harder task ends up with more units.

    With the default normalization ("mean"); docs/results.md shows the ordering over three tasks,
    three seeds and the paper's normalization beside it.
    """
    totals, accuracy = {}, {}
    for task, (x, y) in {
        "moons": datasets.moons(3000, noise=0.1, seed=0),
        "hard_spiral": datasets.spirals(3000, turns=2.0, noise=0.02, seed=0),
    }.items():
        keras.utils.set_random_seed(0)
        model = helpers.compile_classifier(
            helpers.sequential_model(initial_units=(16, 16))
        )
        history = model.fit(x, y, batch_size=128, epochs=30, verbose=0)
        totals[task] = sum(keras_awn.widths(model).values())
        accuracy[task] = history.history["accuracy"][-1]
    assert totals["hard_spiral"] > totals["moons"], totals
    # Both tasks are learned (chance is 0.5): the widths are not those of a failed run.
    assert min(accuracy.values()) > 0.9, accuracy


def test_the_width_search_probe_comes_from_the_training_data():
    from keras_awn.models import probe_sample

    x = np.arange(10000, dtype="float32").reshape(5000, 2)
    y = np.arange(5000) % 2
    sample_x, sample_y = probe_sample(x, y)
    assert sample_x.shape == (2048, 2) and sample_y.shape == (2048,)
    np.testing.assert_array_equal(sample_y, (sample_x[:, 0] / 2).astype(int) % 2)  # pairs kept
    assert len(np.unique(sample_x[:, 0])) == 2048
    # Keras takes the validation split from the end: the probe never sees it.
    split_x, _ = probe_sample(x, y, validation_split=0.5)
    assert split_x[:, 0].max() < 5000
    assert probe_sample(x[:100], y[:100])[0].shape == (100, 2)
    assert probe_sample(x, None) is None
    assert probe_sample(iter([x]), None) is None
    batches = TinyBatches(x, y)
    sample = probe_sample(batches, None)  # a PyDataset: its first batch
    np.testing.assert_array_equal(sample[0], x[:32])
    np.testing.assert_array_equal(sample[1], y[:32])
