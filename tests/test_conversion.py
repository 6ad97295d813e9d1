"""`keras_awn.adapt`: plain Keras models made adaptive with the same function, their units
ordered by saliency (checked against numpy), trained, saved, loaded and stripped; refusals."""

import os

import keras
import numpy as np
import pytest
from keras import ops

import keras_awn
from keras_awn.callbacks import WidthAnnealing
from keras_awn.layers import AdaptiveConv2D
from keras_awn.layers import AdaptiveDense
from keras_awn.layers import AdaptiveMultiHeadAttention


def compile_model(model):
    model.compile(
        keras.optimizers.Adam(0.003),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


def tabular(num_examples=256, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(num_examples, 12)).astype("float32")
    y = (x[:, 0] + x[:, 1] * x[:, 2] > 0).astype("int32") + (x[:, 3] > 1).astype("int32")
    return x, y


def trained_mlp():
    """A trained Sequential MLP."""
    model = keras.Sequential(
        [
            keras.Input((12,)),
            keras.layers.Dense(24, activation="relu", name="hidden_1"),
            keras.layers.Dropout(0.1),
            keras.layers.Dense(16, activation="relu", name="hidden_2"),
            keras.layers.Dense(3, name="logits"),
        ],
        name="mlp",
    )
    x, y = tabular()
    compile_model(model).fit(x, y, epochs=3, batch_size=32, verbose=0)
    return model, x, y


def images(num_examples=96, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(size=(num_examples, 8, 8, 1)).astype("float32")
    y = (x[:, :4].mean(axis=(1, 2, 3)) > x[:, 4:].mean(axis=(1, 2, 3))).astype("int32")
    return x, y


def trained_cnn():
    """A trained functional CNN with BatchNormalization and global pooling."""
    inputs = keras.Input((8, 8, 1))
    hidden = keras.layers.Conv2D(12, 3, padding="same", use_bias=False, name="conv_1")(inputs)
    hidden = keras.layers.BatchNormalization(name="batch_norm")(hidden)
    hidden = keras.layers.ReLU()(hidden)
    hidden = keras.layers.MaxPooling2D()(hidden)
    hidden = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="conv_2")(hidden)
    hidden = keras.layers.GlobalAveragePooling2D()(hidden)
    hidden = keras.layers.Dense(10, activation="relu", name="dense")(hidden)
    model = keras.Model(inputs, keras.layers.Dense(2, name="logits")(hidden), name="cnn")
    x, y = images()
    compile_model(model).fit(x, y, epochs=3, batch_size=32, verbose=0)
    return model, x, y


def transformer():
    inputs = keras.Input((6, 8))
    hidden = keras.layers.Dense(16, name="embed")(inputs)
    attended = keras.layers.MultiHeadAttention(4, key_dim=4, name="attention")(hidden, hidden)
    hidden = keras.layers.LayerNormalization()(hidden + attended)
    forward = keras.layers.Dense(24, activation="relu", name="feed_forward")(hidden)
    hidden = hidden + keras.layers.Dense(16, name="feed_forward_out")(forward)
    return keras.Model(inputs, keras.layers.Dense(5, name="logits")(hidden))


def predictions(model, x):
    return np.asarray(model.predict(x, verbose=0, batch_size=64), dtype="float64")


def assert_same_function(adapted, original, x):
    expected = predictions(original, x)
    scale = np.abs(expected).max()
    np.testing.assert_allclose(predictions(adapted, x), expected, rtol=1e-4, atol=1e-5 * scale)


@pytest.mark.parametrize("saliency", ["magnitude", "contribution", "weight_norm"])
def test_a_trained_sequential_mlp_keeps_its_predictions(saliency):
    model, x, _ = trained_mlp()
    before = [w.copy() for w in model.get_weights()]
    sample = x[:64] if saliency == "contribution" else None
    adapted = keras_awn.adapt(model, saliency=saliency, x=sample, verbose=False)
    assert isinstance(adapted, keras_awn.Sequential)
    assert keras_awn.widths(adapted) == {"hidden_1": 24, "hidden_2": 16}
    assert isinstance(adapted.get_layer("hidden_1"), AdaptiveDense)
    assert type(adapted.get_layer("logits")) is keras.layers.Dense
    assert_same_function(adapted, model, x)
    # The model it came from is untouched.
    for old, new in zip(before, model.get_weights()):
        np.testing.assert_array_equal(old, new)


def test_units_are_ordered_by_their_measured_contribution():
    model, x, _ = trained_mlp()
    sample = x[:64]
    # numpy oracle: unit i of hidden_1 contributes rms(relu(x W1 + b1))_i * ||row i of W2||.
    kernel_1, bias_1, kernel_2, _ = (np.asarray(w, "float64") for w in model.get_weights()[:4])
    activations = np.maximum(sample.astype("float64") @ kernel_1 + bias_1, 0.0)
    expected = np.sqrt((activations**2).mean(axis=0)) * np.linalg.norm(kernel_2, axis=1)
    scores = keras_awn.conversion.unit_saliency(model, "contribution", x=sample)
    np.testing.assert_allclose(scores["hidden_1"], expected, rtol=1e-4, atol=1e-6)
    adapted = keras_awn.adapt(model, saliency="contribution", x=sample, verbose=False)
    # The adapted layer's units are the original ones, most salient first.
    order = np.argsort(-expected, kind="stable")
    np.testing.assert_allclose(
        ops.convert_to_numpy(adapted.get_layer("hidden_1").kernel), kernel_1[:, order], rtol=1e-6
    )
    # Truncating keeps the most salient units, unchanged.
    stripped = keras_awn.strip(keras_awn.truncate(adapted, units={"hidden_1": 12}))
    np.testing.assert_allclose(
        ops.convert_to_numpy(stripped.get_layer("hidden_1").kernel),
        kernel_1[:, order[:12]],
        rtol=1e-6,
    )


def test_magnitude_saliency_is_the_l1_norm_of_incoming_weights():
    model, _, _ = trained_mlp()
    scores = keras_awn.conversion.unit_saliency(model)
    kernel = np.abs(ops.convert_to_numpy(model.get_layer("hidden_2").kernel).astype("float64"))
    np.testing.assert_allclose(scores["hidden_2"], kernel.sum(axis=0), rtol=1e-6)
    # The default order: the adapted layer's units by decreasing L1 norm (the first layer's
    # inputs are the model's, not rescaled by an importance).
    adapted = keras_awn.adapt(model, verbose=False)
    norms = np.abs(ops.convert_to_numpy(adapted.get_layer("hidden_1").kernel)).sum(axis=0)
    assert np.all(np.diff(norms) <= 1e-6)
    np.testing.assert_allclose(np.sort(norms), np.sort(scores["hidden_1"]), rtol=1e-6)


def test_a_functional_cnn_with_batch_normalization_converts_trains_saves_loads_and_strips(
    tmp_path,
):
    model, x, y = trained_cnn()
    adapted = keras_awn.adapt(model, saliency="contribution", x=x[:48], verbose=False)
    assert isinstance(adapted, keras_awn.Model)
    assert {type(adapted.get_layer(n)) for n in ("conv_1", "conv_2")} == {AdaptiveConv2D}
    assert isinstance(adapted.get_layer("dense"), AdaptiveDense)
    assert_same_function(adapted, model, x)

    compile_model(adapted)
    path = os.path.join(tmp_path, "converted.keras")
    saved = {}

    class SaveMidway(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 0:
                self.model.save(path)
                saved["predictions"] = predictions(self.model, x)
                saved["widths"] = keras_awn.widths(self.model)

    adapted.fit(
        x,
        y,
        epochs=3,
        batch_size=32,
        verbose=0,
        callbacks=[WidthAnnealing(0, 2, target_fraction=0.5), SaveMidway()],
    )
    assert keras_awn.widths(adapted) == {"conv_1": 6, "conv_2": 8, "dense": 5}
    loaded = keras.saving.load_model(path)
    assert keras_awn.widths(loaded) == saved["widths"]
    np.testing.assert_allclose(predictions(loaded, x), saved["predictions"], rtol=1e-4, atol=1e-5)
    compile_model(loaded).fit(x, y, epochs=1, batch_size=32, verbose=0)  # and it resumes

    plain = keras_awn.strip(adapted)
    assert plain.get_layer("conv_1").filters == 6
    assert plain.count_params() < model.count_params()
    np.testing.assert_allclose(predictions(plain, x), predictions(adapted, x), rtol=1e-4, atol=1e-5)


def test_attention_heads_and_the_feed_forward_width_convert():
    model = transformer()
    x = np.random.default_rng(0).normal(size=(32, 6, 8)).astype("float32")
    adapted = keras_awn.adapt(model, verbose=False)
    assert isinstance(adapted.get_layer("attention"), AdaptiveMultiHeadAttention)
    assert keras_awn.widths(adapted) == {"attention": 4, "feed_forward": 24}
    # Heads learn their number by gradient whatever the other layers are given.
    adapted = keras_awn.adapt(model, verbose=False, width_learning="search")
    assert adapted.get_layer("attention").width_learning == "gradient"
    assert adapted.get_layer("feed_forward").width_learning == "search"
    assert_same_function(adapted, model, x)
    plan = keras_awn.conversion_plan(model)
    assert plan["attention"] is None and plan["feed_forward"] is None
    assert "Add" in plan["feed_forward_out"] and "model output" in plan["logits"]
    assert_same_function(keras_awn.strip(adapted), model, x)


def test_layers_can_be_chosen_by_name_and_type():
    model, x, _ = trained_cnn()
    only_convolutions = keras_awn.adapt(model, layers=[keras.layers.Conv2D], verbose=False)
    assert set(keras_awn.widths(only_convolutions)) == {"conv_1", "conv_2"}
    assert_same_function(only_convolutions, model, x)
    without_first = keras_awn.adapt(model, exclude=["conv_1"], verbose=False)
    assert set(keras_awn.widths(without_first)) == {"conv_2", "dense"}
    assert keras_awn.conversion_plan(model, exclude=["conv_1"])["conv_1"] == "excluded by `exclude`"
    named = keras_awn.adapt(model, layers=["dense"], verbose=False, quantile=0.8)
    assert set(keras_awn.widths(named)) == {"dense"}
    assert named.get_layer("dense").quantile == pytest.approx(0.8)
    assert_same_function(named, model, x)


def test_layers_that_cannot_follow_a_width_are_kept_with_their_reason():
    inputs = keras.Input((4,))
    hidden = keras.layers.Dense(8, name="squashed")(inputs)
    hidden = keras.layers.Activation("tanh")(hidden)
    hidden = keras.layers.Dense(8, activation="relu", name="regularized", kernel_regularizer="l2")(
        hidden
    )
    hidden = keras.layers.Dense(8, activation="relu", name="convertible")(hidden)
    flat = keras.layers.Dense(6, name="before_norm")(hidden)
    flat = keras.layers.LayerNormalization()(flat)
    model = keras.Model(inputs, keras.layers.Dense(2, name="out")(flat))
    plan = keras_awn.conversion_plan(model)
    assert "does not commute" in plan["squashed"]
    assert "kernel_regularizer" in plan["regularized"]
    assert plan["convertible"] is None
    assert "LayerNormalization" in plan["before_norm"]
    x = np.random.default_rng(0).normal(size=(16, 4)).astype("float32")
    adapted = keras_awn.adapt(model, verbose=False)
    assert set(keras_awn.widths(adapted)) == {"convertible"}
    assert_same_function(adapted, model, x)


def test_clear_refusals():
    model, x, _ = trained_mlp()
    with pytest.raises(ValueError, match="'logits': its output is a model output"):
        keras_awn.adapt(model, layers=["logits"], verbose=False)
    with pytest.raises(ValueError, match="Received: layers=\\['nope'\\]"):
        keras_awn.adapt(model, layers=["nope"], verbose=False)
    with pytest.raises(ValueError, match="Received: exclude="):
        keras_awn.adapt(model, exclude=[keras.layers.LSTM], verbose=False)
    with pytest.raises(ValueError, match="Received: layers=\\[\\]"):
        keras_awn.adapt(model, layers=[], verbose=False)
    with pytest.raises(ValueError, match="Received: x=None"):
        keras_awn.adapt(model, saliency="contribution", verbose=False)
    with pytest.raises(ValueError, match="with an `x`"):
        keras_awn.adapt(model, x=x[:8], verbose=False)
    with pytest.raises(ValueError, match="Received: saliency='largest'"):
        keras_awn.adapt(model, saliency="largest", verbose=False)
    with pytest.raises(ValueError, match="Received: capacity=4"):
        keras_awn.adapt(model, capacity=4, verbose=False)
    with pytest.raises(ValueError, match="'hidden_1' has 24 units.*Received: max_units=8"):
        keras_awn.adapt(model, max_units=8, verbose=False)
    with pytest.raises(ValueError, match="No layer"):
        keras_awn.adapt(model, exclude=["hidden_1", "hidden_2"], verbose=False)
    with pytest.raises(ValueError, match="not built"):
        keras_awn.adapt(keras.Sequential([keras.layers.Dense(2)]), verbose=False)

    class Subclassed(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(2)

        def call(self, inputs):
            return self.dense(inputs)

    with pytest.raises(ValueError, match="subclassed model"):
        keras_awn.adapt(Subclassed(), verbose=False)


def test_verbose_lists_the_kept_layers(capsys):
    model, _, _ = trained_mlp()
    keras_awn.adapt(model)
    printed = capsys.readouterr().out
    assert "'hidden_1', 'hidden_2'" in printed
    assert "kept 'logits': its output is a model output" in printed


def test_shared_layers_and_private_regularizers_keep_a_layer_plain():
    inputs = keras.Input((4,))
    shared_activation = keras.layers.ReLU(name="shared_relu")
    left = keras.layers.Dense(6, name="left")(inputs)
    right = keras.layers.Dense(5, name="right")(inputs)
    left = keras.layers.Dense(3, name="left_out")(shared_activation(left))
    right = keras.layers.Dense(3, name="right_out")(shared_activation(right))
    tokens = keras.layers.Reshape((2, 3))(keras.layers.Concatenate()([left, right]))
    attended = keras.layers.MultiHeadAttention(
        2, key_dim=2, kernel_regularizer="l2", name="regularized_attention"
    )(tokens, tokens)
    model = keras.Model(inputs, keras.layers.Flatten()(attended))
    plan = keras_awn.conversion_plan(model)
    # The shared ReLU's other call would be taken for a reader of each Dense.
    assert "'shared_relu' between it and its readers is a shared layer" in plan["left"]
    assert "shared layer" in plan["right"]
    assert "kernel_regularizer" in plan["regularized_attention"]


def test_attention_called_with_keywords_and_activations_past_a_normalization_convert():
    inputs = keras.Input((6, 8))
    attended = keras.layers.MultiHeadAttention(2, key_dim=4, name="attention")(
        query=inputs, value=inputs
    )
    images = keras.layers.Reshape((6, 8, 1))(attended)
    hidden = keras.layers.Conv2D(5, 3, padding="same", name="conv")(images)
    hidden = keras.layers.BatchNormalization()(hidden)
    # gelu does not commute with a scaling, but the normalization has removed it.
    hidden = keras.layers.Activation("gelu")(hidden)
    hidden = keras.layers.Conv2D(4, 3, name="reader")(hidden)
    model = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(hidden))
    plan = keras_awn.conversion_plan(model)
    assert plan["attention"] is None and plan["conv"] is None
    x = np.random.default_rng(0).normal(size=(8, 6, 8)).astype("float32")
    assert_same_function(keras_awn.adapt(model, verbose=False), model, x)
