"""Trains one adaptive model on one device and data-parallel on several; prints a JSON comparison.

Run by tests/test_distributed.py in a fresh process, because the devices must be configured
before the backend starts: JAX gets 8 host devices (XLA_FLAGS) and `keras.distribution.DataParallel`,
TensorFlow 4 logical CPUs and `tf.distribute.MirroredStrategy`. Both runs start from the same
weights and see the same global batches; the first layer's capacity equals its width, so the
controller must reallocate at its first check, under the distribution.
"""

import contextlib
import json
import os
import sys

BACKEND = os.environ["KERAS_BACKEND"]
REPLICAS = {"jax": 8, "tensorflow": 4}[BACKEND]
if BACKEND == "jax":
    os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={REPLICAS}"
else:
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * REPLICAS)

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_awn  # noqa: E402
from keras_awn import datasets  # noqa: E402

EPOCHS, BATCH_SIZE = 3, 64


class BatchLosses(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.losses, self.widths = [], []

    def on_train_batch_end(self, batch, logs=None):
        self.losses.append(float(logs["loss"]))

    def on_epoch_end(self, epoch, logs=None):
        self.widths.append(keras_awn.widths(self.model))


def build():
    return keras_awn.Sequential(
        [
            keras.Input((2,)),
            # capacity == width: the first check must grow this layer.
            keras_awn.layers.AdaptiveDense(6, capacity=6, activation="relu"),
            keras_awn.layers.AdaptiveDense(8, activation="relu"),
            keras.layers.Dense(2),
        ]
    )


def train(model, x, y, scope=None):
    with scope or contextlib.nullcontext():
        model.compile(keras.optimizers.Adam(0.02), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    # The same seed for both runs: reallocation draws the new units' weights.
    keras.utils.set_random_seed(1)
    record = BatchLosses()
    controller = keras_awn.callbacks.WidthController(check_every=4)
    model.fit(x, y, batch_size=BATCH_SIZE, epochs=EPOCHS, shuffle=False, verbose=0,
              callbacks=[controller, record])
    return record, controller


def layouts(model):
    """Per variable (model and optimizer): is it laid out over every replica?"""
    variables = list(model.variables) + list(model.optimizer.variables)
    if BACKEND == "jax":
        result = {}
        for variable in variables:
            sharding = variable.value.sharding
            result[variable.path] = bool(
                len(sharding.device_set) == REPLICAS and sharding.is_fully_replicated
            )
        return result
    from tensorflow.python.distribute import values as distribute_values

    return {
        variable.path: isinstance(variable.value, distribute_values.MirroredVariable)
        for variable in variables
    }


def main():
    keras.utils.set_random_seed(0)
    x, y = datasets.spirals(1024, turns=1.0, noise=0.05, seed=0)
    single = build()
    initial = single.get_weights()
    single_record, _ = train(single, x, y)

    if BACKEND == "jax":
        import jax

        keras.distribution.set_distribution(keras.distribution.DataParallel(devices=jax.devices()))
        distributed = build()
        distributed.set_weights(initial)
        record, controller = train(distributed, x, y)
    else:
        strategy = tf.distribute.MirroredStrategy([d.name for d in tf.config.list_logical_devices("CPU")])
        with strategy.scope():
            distributed = build()
            distributed.set_weights(initial)
        record, controller = train(distributed, x, y, strategy.scope())
        assert strategy.num_replicas_in_sync == REPLICAS

    weights_difference = max(
        float(np.abs(a - b).max()) for a, b in zip(single.get_weights(), distributed.get_weights())
    )
    print(json.dumps({
        "replicas": REPLICAS,
        "single_losses": single_record.losses,
        "losses": record.losses,
        "single_widths": single_record.widths,
        "widths": record.widths,
        "reallocations": controller.reallocations,
        "capacities": {layer.name: layer.capacity for layer in distributed.layers[:2]},
        "layouts": layouts(distributed),
        "weights_difference": weights_difference,
    }))


if __name__ == "__main__":
    sys.exit(main())
