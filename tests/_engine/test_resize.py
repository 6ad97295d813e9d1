"""Reallocation: invisible mid-training, moments of surviving units kept, all-or-nothing."""


import keras
import numpy as np
import pytest
from keras import ops

from keras_awn._engine import resize
from keras_awn.callbacks import WidthController
from keras_awn._engine import topology
from tests import helpers


def twin_models(builder=helpers.sequential_model, **kwargs):
    """Two models with identical weights, compiled identically."""
    first = builder(**kwargs)
    second = first.__class__.from_config(first.get_config())
    second.set_weights(first.get_weights())
    return helpers.compile_classifier(first), helpers.compile_classifier(second)


class ResizeAt(keras.callbacks.Callback):
    """Forces capacities at the beginning of a given batch and records what it saw."""

    def __init__(self, step, capacities):
        super().__init__()
        self.step = step
        self.capacities = capacities
        self.seen = 0
        self.before = self.after = None

    def on_train_batch_begin(self, batch, logs=None):
        if self.seen == self.step:
            model = self.model  # syncs JAX state
            probe = np.linspace(-1, 1, 16, dtype="float32").reshape(8, 2)
            self.before = ops.convert_to_numpy(model(probe))
            self.moments_before = [ops.convert_to_numpy(v) for v in model.optimizer.variables]
            self.iterations_before = int(ops.convert_to_numpy(model.optimizer.iterations))
            layers = topology.adaptive_layers(model)
            resize.resize(model, {layers[i]: c for i, c in self.capacities.items()})
            self.after = ops.convert_to_numpy(model(probe))
            self.moments_after = [ops.convert_to_numpy(v) for v in model.optimizer.variables]
            self.iterations_after = int(ops.convert_to_numpy(model.optimizer.iterations))
        self.seen += 1


def frozen_controller(**kwargs):
    # Checks so rarely, and never searches, that the controller never changes a width or a
    # capacity on its own in these tests.
    return WidthController(
        check_every=10**9, grow_threshold=1.0, shrink_threshold=0.01, search_every=None, **kwargs
    )


class WidestWidth(keras.callbacks.Callback):
    """Records the widest width each adaptive layer asked for during training."""

    def __init__(self):
        super().__init__()
        self.widest = {}

    def on_train_batch_end(self, batch, logs=None):
        for layer in topology.adaptive_layers(self.model):
            self.widest[layer.name] = max(self.widest.get(layer.name, 0), layer.desired_units)


@pytest.mark.parametrize(
    "capacities", [{0: 40, 1: 30}, {0: 13, 1: 13}, {1: 64}], ids=["grow", "shrink", "grow_last"]
)
@pytest.mark.parametrize("builder", [helpers.sequential_model, helpers.functional_model])
def test_reallocation_mid_training_is_invisible(capacities, builder):
    x, y = helpers.spiral_data(256)
    resized, reference = twin_models(builder, initial_units=(8, 8))
    resize = ResizeAt(step=5, capacities=capacities)
    losses_resized, losses_reference = helpers.BatchLossRecorder(), helpers.BatchLossRecorder()
    widest = WidestWidth()
    resized.fit(
        x, y, batch_size=32, epochs=2, shuffle=False, verbose=0,
        callbacks=[frozen_controller(), resize, losses_resized, widest],
    )
    reference.fit(
        x, y, batch_size=32, epochs=2, shuffle=False, verbose=0,
        callbacks=[frozen_controller(), losses_reference],
    )
    layers = topology.adaptive_layers(resized)
    for index, capacity in capacities.items():
        assert layers[index].capacity == capacity
    # The comparison below holds while no width exceeds the smaller capacity.
    for layer in layers:
        assert widest.widest[layer.name] <= min(layer.capacity, 16), widest.widest
    # Same function before and after the swap.
    np.testing.assert_allclose(resize.after, resize.before, rtol=1e-6, atol=1e-6)
    # Same trajectory as the model that was never reallocated (widths stayed inside capacity).
    # Matmuls over a different inner size may sum in a different order (oneDNN picks its blocking
    # by shape and load), so allow float32 rounding to accumulate over the 16 steps; a broken
    # procedure (stale variables, lost moments) differs by orders of magnitude more.
    np.testing.assert_allclose(losses_resized.losses, losses_reference.losses, rtol=1e-4, atol=1e-6)
    probe = x[:32]
    np.testing.assert_allclose(
        resized.predict(probe, verbose=0), reference.predict(probe, verbose=0), rtol=1e-4, atol=1e-5
    )
    assert resize.iterations_after == resize.iterations_before == 5


def test_optimizer_moments_of_surviving_units_are_kept():
    x, y = helpers.spiral_data(128)
    model = helpers.compile_classifier(helpers.sequential_model(initial_units=(6, 6)))
    resize = ResizeAt(step=3, capacities={0: 24})
    model.fit(x, y, batch_size=32, epochs=1, verbose=0, callbacks=[frozen_controller(), resize])
    checked = 0
    for old, new in zip(resize.moments_before, resize.moments_after):
        if old.shape == new.shape:
            np.testing.assert_array_equal(old, new)
            continue
        overlap = tuple(slice(0, s) for s in old.shape)
        np.testing.assert_array_equal(new[overlap], old)
        padding = np.ones(new.shape, bool)
        padding[overlap] = False
        assert np.all(new[padding] == 0.0)  # new units start with zero moments
        checked += 1
    # First layer kernel/bias and second layer kernel, each with Adam's two moments.
    assert checked == 6
    # The moments compared above are not all zero: the optimizer had real state to carry.
    assert any(np.any(moment != 0.0) for moment in resize.moments_before)


def test_masked_units_receive_no_update():
    x, y = helpers.spiral_data(128)
    model = helpers.compile_classifier(helpers.sequential_model(initial_units=(6, 6)))
    model.build((None, 2))
    first = model.layers[0]
    kernel_before = ops.convert_to_numpy(first.kernel).copy()
    model.fit(x, y, batch_size=32, epochs=2, verbose=0, callbacks=[frozen_controller()])
    width = first.active_units
    kernel_after = ops.convert_to_numpy(first.kernel)
    np.testing.assert_array_equal(kernel_after[:, width + 2 :], kernel_before[:, width + 2 :])
    assert not np.allclose(kernel_after[:, :width], kernel_before[:, :width])


def test_failed_resize_leaves_the_model_untouched():
    model = helpers.compile_classifier(helpers.sequential_model(initial_units=(6, 6)))
    x, y = helpers.spiral_data(64)
    model.fit(x, y, epochs=1, verbose=0)
    weights = model.get_weights()
    layer = model.layers[0]
    with pytest.raises(ValueError, match="capacity=0"):
        resize.resize(model, {layer: 0})
    assert layer.capacity == 12
    for before, after in zip(weights, model.get_weights()):
        np.testing.assert_array_equal(before, after)


def test_dense_reader_follows_the_new_width():
    model = helpers.sequential_model(initial_units=(6,))
    layer, dense = model.layers[0], model.layers[1]
    resize.resize(model, {layer: 30})
    assert tuple(dense.kernel.shape) == (30, 2)
    assert dense.input_spec.axes[-1] == 30
    # The reader also works when called on its own at the new width.
    assert tuple(dense(np.ones((1, 30), "float32")).shape) == (1, 2)


def test_capacities_seen_before_reuse_their_compiled_step(monkeypatch):
    """A reallocation back to capacities trained before: on JAX no new trace (`jax.jit` keeps
    the step it compiled for those shapes); on every backend the step trains the new variables
    and predicts with them."""
    x, y = helpers.spiral_data(256)
    model = helpers.compile_classifier(helpers.sequential_model(initial_units=(8, 8)))
    traces = []
    train_step = type(model).train_step

    def counted(self, *args, **kwargs):
        traces.append(tuple(layer.capacity for layer in topology.adaptive_layers(self)))
        return train_step(self, *args, **kwargs)

    # On the class, as Keras' own: each `model.train_step` is a new bound method.
    monkeypatch.setattr(type(model), "train_step", counted)
    first, second = topology.adaptive_layers(model)
    for capacities in ((16, 16), (24, 16), (16, 16), (24, 16)):
        resize.resize(model, {first: capacities[0], second: capacities[1]})
        before = [ops.convert_to_numpy(v).copy() for v in first.trainable_weights]
        model.fit(x, y, batch_size=32, epochs=1, verbose=0, callbacks=[frozen_controller()])
        after = [ops.convert_to_numpy(v) for v in first.trainable_weights]
        assert after[0].shape[-1] == capacities[0]
        assert not np.allclose(before[0], after[0]), "the new kernel trained"
        twin = model.__class__.from_config(model.get_config())
        twin.set_weights(model.get_weights())
        np.testing.assert_allclose(
            model.predict(x[:32], verbose=0), twin.predict(x[:32], verbose=0), atol=1e-6
        )
    if keras.backend.backend() == "jax":
        assert sorted(set(traces)) == [(16, 16), (24, 16)] and len(traces) == 2, traces
    else:
        assert len(traces) >= 2
