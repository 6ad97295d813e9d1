"""Reading width parameters from a running fit: the values a synced model holds, without a sync."""

import keras
import numpy as np
from keras import ops

from keras_awn._engine import running_state
from keras_awn._engine import topology
from tests import helpers


def test_current_values_match_the_synced_model_mid_epoch():
    x, y = helpers.spiral_data(256)
    model = helpers.compile_classifier(helpers.sequential_model(initial_units=(8, 8), width_learning="gradient"))
    seen = []

    class Compare(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            if batch in (3, 5):
                variables = [l.width_parameter for l in topology.adaptive_layers(self._model)]
                if batch == 3:
                    requested.append(running_state.request_values(self._model, variables))
                running = running_state.current_values(self._model, variables)
                self.model  # on JAX, reading `callback.model` syncs the running state
                synced = [ops.convert_to_numpy(v) for v in variables]
                seen.append((running, synced))

    requested = []
    model.fit(x, y, batch_size=32, epochs=1, verbose=0, callbacks=[Compare()])
    assert len(seen) == 2
    for running, synced in seen:
        np.testing.assert_array_equal(np.array(running), np.array(synced))
    # The width parameters moved between the two batches, so the values are not stale.
    assert not np.array_equal(np.array(seen[0][0]), np.array(seen[1][0]))
    # Values requested at batch 3 and read after the fit (on JAX, after later steps donated
    # the buffers they were requested from) are those of batch 3.
    np.testing.assert_array_equal(np.array(requested[0]()), np.array(seen[0][1]))
