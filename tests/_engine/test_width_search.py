"""The width search: its decisions as plain arithmetic over a score curve, width changes that
keep what the model computes, the probe's score, and the stochastic prefixes."""

import keras
import numpy as np
import pytest
from keras import ops

import keras_awn
from keras_awn._engine import topology
from keras_awn._engine import width_search
from keras_awn._engine.width_search import MIN_SEARCH_WIDTH
from keras_awn._engine.width_search import WidthSearch
from keras_awn.layers import adaptive_width
from tests import helpers


def needs(units_needed, chance=0.5):
    """A score curve (an error rate) of a layer that needs `units_needed` units: chance with
    none, falling linearly to 0 at `units_needed`, flat beyond."""

    def score(units):
        return chance * max(0.0, 1.0 - units / units_needed)

    return score


@pytest.mark.parametrize(
    "width,needed,expected",
    [
        (64, 40, 60),  # needs 40 of 64 (the prefix of 5/8): 1.5 x 40, within the layer
        (64, 64, 128),  # needs all: doubles
        (64, 60, 128),  # needs more than 3/4: doubles
        (256, 20, 48),  # the first prefix within tolerance is 1/8 (32): 1.5 x 32
        (256, 100, 192),  # 3/8 (96) is 4 units short: 1/2 (128) -> 1.5 x 128
        (16, 3, 8),  # never below the narrowest width the search judges
        (4, 100, MIN_SEARCH_WIDTH),  # narrower than that: moved up to it, whatever it needs
    ],
)
def test_target_width_follows_the_needed_units(width, needed, expected):
    assert WidthSearch().target_width(width, needs(needed)) == expected


def test_the_tolerance_is_a_share_of_what_the_layer_adds():
    # Cut to 32 units, the layer loses 0.004 of its value 0.5: within 1% (0.005), not 0.5%.
    def score(units):
        return {0: 0.5, 32: 0.004}.get(units, 0.0 if units > 32 else 0.5)

    assert WidthSearch(tolerance=0.01).target_width(256, score) == 48
    assert WidthSearch(tolerance=0.005).target_width(256, score) == 96  # 1/4 of 256 is enough


def test_a_layer_that_adds_nothing_yet_keeps_its_width():
    assert WidthSearch().target_width(64, lambda units: 0.5) == 64


def test_the_final_width_keeps_a_margin_over_the_needed_units():
    search = WidthSearch(final_margin=1.25)
    assert search.final_width(64, needs(40)) == 50  # 5/8 of 64 = 40 needed
    assert search.final_width(64, needs(200)) == 64  # never more than the layer has
    assert search.final_width(64, needs(2)) == 10  # 1/8 of 64 is the finest prefix probed
    assert search.final_width(6, needs(2)) == 6  # narrower than the search judges: kept


def model_and_probe():
    model = helpers.sequential_model(initial_units=(12, 12))
    model.build((None, 2))
    probe = np.random.default_rng(0).normal(size=(64, 2)).astype("float32")
    return model, probe


@pytest.mark.parametrize("units", [16, 24])  # within the capacity (24) the helper allocates
def test_growing_keeps_what_the_model_computes(units):
    model, probe = model_and_probe()
    links = topology.link(model)
    before = ops.convert_to_numpy(model(probe))
    first = model.layers[0]
    width_search.set_width(first, units, links[first])
    assert first.active_units == units
    # The kept units' importance changed; their readers' rows were rescaled, and the new units'
    # rows are zero.
    np.testing.assert_allclose(ops.convert_to_numpy(model(probe)), before, rtol=1e-4, atol=1e-5)


def test_shrinking_computes_what_the_cut_model_computed():
    model, probe = model_and_probe()
    links = topology.link(model)
    first = model.layers[0]
    first.training_state.probe_cut = 8
    cut = ops.convert_to_numpy(model(probe))
    first.training_state.probe_cut = None
    width_search.set_width(first, 8, links[first])
    assert first.active_units == 8
    np.testing.assert_allclose(ops.convert_to_numpy(model(probe)), cut, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("units", [3, 6, 12])  # shrink, and grow within the capacity
def test_width_changes_keep_a_batch_normalization_readers_inference_output(units):
    model = keras_awn.Sequential(
        [
            keras.Input((6, 6, 1)),
            keras_awn.layers.AdaptiveConv2D(8, 3, padding="same", activation="relu", capacity=16),
            keras.layers.BatchNormalization(),
            keras.layers.Conv2D(4, 3, padding="same"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(3),
        ]
    )
    rng = np.random.default_rng(0)
    normalization = model.layers[1]
    # Statistics of a trained layer, some variances small enough for the epsilon to matter.
    normalization.moving_mean.assign(rng.uniform(0.0, 1.0, 16).astype("float32"))
    normalization.moving_variance.assign(rng.uniform(1e-4, 2.0, 16).astype("float32"))
    # Masked channels keep a zero gamma and beta (`topology.UnitMaskConstraint`, after every
    # optimizer step).
    mask = _active_mask(model, 16)
    normalization.gamma.assign(rng.uniform(0.5, 2.0, 16).astype("float32") * mask)
    normalization.beta.assign(rng.normal(size=16).astype("float32") * mask)
    probe = rng.uniform(size=(16, 6, 6, 1)).astype("float32")
    links = topology.link(model)
    first = model.layers[0]
    first.training_state.probe_cut = min(units, 8)
    expected = ops.convert_to_numpy(model(probe, training=False))
    first.training_state.probe_cut = None
    width_search.set_width(first, units, links[first])
    assert first.active_units == units
    # Inference reads the moving statistics: they follow the kept channels' new scale.
    np.testing.assert_allclose(
        ops.convert_to_numpy(model(probe, training=False)), expected, rtol=1e-4, atol=1e-5
    )


def _active_mask(model, capacity):
    """1 for the first adaptive layer's active channels, 0 beyond (masked BatchNormalization
    channels keep a zero beta)."""
    return (np.arange(capacity) < model.layers[0].active_units).astype("float32")


def test_probe_scores_errors_for_class_outputs_and_the_loss_otherwise():
    model, probe = model_and_probe()
    helpers.compile_classifier(model)
    labels = np.arange(64) % 2
    logits = ops.convert_to_numpy(model(probe))
    expected = np.mean(np.argmax(logits, axis=-1) != labels)
    assert width_search.Probe(probe, labels).score(model) == pytest.approx(expected)
    assert width_search.Probe(probe, labels[:, None]).score(model) == pytest.approx(expected)
    one_hot = np.eye(2)[labels]
    assert width_search.Probe(probe, one_hot).score(model) == pytest.approx(expected)
    # Real-valued targets: the compiled loss (here mean squared error against the logits).
    regression = keras_awn.Sequential([keras.Input((2,)), *model.layers])
    regression.compile("adam", "mse")
    targets = np.random.default_rng(1).normal(size=(64, 2)).astype("float32")
    outputs = ops.convert_to_numpy(regression(probe))
    mse = np.mean((outputs - targets) ** 2)
    assert width_search.Probe(probe, targets).score(regression) == pytest.approx(mse, rel=1e-3)


def test_stochastic_prefixes_cut_half_the_examples_to_a_prefix_in_training_only():
    layer = keras_awn.layers.AdaptiveDense(64, kernel_initializer="ones", capacity=80)
    inputs = np.ones((512, 3), "float32")
    layer.build(inputs.shape)
    width = layer.active_units
    kept = ops.convert_to_numpy(layer(inputs, training=True)) > 0
    counts = kept.sum(axis=1)
    cut = counts < width
    # Half the batch positions, each cut to between an eighth of the width and the width.
    assert abs(cut.mean() - adaptive_width.PREFIX_SHARE) < 0.02
    assert counts[cut].min() >= int(adaptive_width.PREFIX_LOW * width)
    # A prefix: the first units, never a gap.
    for row, count in zip(kept, counts):
        assert row[:count].all() and not row[count:].any()
    # Prefixes are log-uniform: about half the cut rows keep less than 1/sqrt(8) of the width.
    assert 0.35 < np.mean(counts[cut] < width / np.sqrt(8)) < 0.65
    assert (ops.convert_to_numpy(layer(inputs, training=False)) > 0).sum(axis=1).min() == width
    # The paper's gradient-learned width trains on all units.
    paper = keras_awn.layers.AdaptiveDense(
        64, kernel_initializer="ones", capacity=80, width_learning="gradient"
    )
    paper.build(inputs.shape)
    assert (ops.convert_to_numpy(paper(inputs, training=True)) > 0).sum(axis=1).min() == width


@pytest.mark.parametrize("learning", ["search", "gradient"])
def test_only_the_papers_width_learning_trains_the_width_parameter(learning):
    x, y = helpers.spiral_data(128)
    model = helpers.sequential_model(initial_units=(8, 8), width_learning=learning)
    model = helpers.compile_classifier(model)
    model.build((None, 2))
    before = [float(ops.convert_to_numpy(layer.width_parameter)) for layer in model.layers[:2]]
    controller = keras_awn.callbacks.WidthController(search_every=None)
    model.fit(x, y, batch_size=32, epochs=2, verbose=0, callbacks=[controller])
    after = [float(ops.convert_to_numpy(layer.width_parameter)) for layer in model.layers[:2]]
    assert (after != before) == (learning == "gradient")


@pytest.mark.parametrize("learning", ["search", "gradient"])
def test_a_layer_whose_bounds_fix_its_width_learns_no_width(learning):
    """`min_units == max_units` (how `WidthAnnealing` holds a compressed layer): no width
    gradient, no stochastic prefixes, no width search: its importance stays as it is."""
    x, y = helpers.spiral_data(128)
    model = helpers.sequential_model(
        initial_units=(8, 8), width_learning=learning, min_units=8, max_units=8, capacity=8
    )
    model = helpers.compile_classifier(model)
    model.build((None, 2))
    first = model.layers[0]
    assert first.width_is_fixed
    inputs = np.ones((64, 2), "float32")
    assert (ops.convert_to_numpy(first(inputs, training=True)) != 0).sum(axis=1).min() > 0
    first.kernel.assign(np.ones(first.kernel.shape, "float32"))
    counts = (ops.convert_to_numpy(first(inputs, training=True)) > 0).sum(axis=1)
    assert counts.min() == first.active_units  # no example cut to a prefix
    before = [float(ops.convert_to_numpy(layer.width_parameter)) for layer in model.layers[:2]]
    controller = keras_awn.callbacks.WidthController(search_every=1)
    model.fit(x, y, batch_size=32, epochs=2, verbose=0, callbacks=[controller])
    after = [float(ops.convert_to_numpy(layer.width_parameter)) for layer in model.layers[:2]]
    assert after == before
    assert controller.searches == []
