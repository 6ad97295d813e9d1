"""The private Keras names keras_awn relies on, in one place.

Each has no public equivalent in Keras 3; a Keras upgrade that moves one breaks only this module
(and `resize`, `running_state`, `topology`, `saving`, which read Keras' layer trackers,
training state, functional graphs and `BackupAndRestore`'s file paths directly).
"""

import keras
from keras.src.models import model as keras_model_module
from keras.src.models.functional import Functional
from keras.src.models.model import functional_init_arguments

# The backend's trainer class (`keras.Model`'s first base on every backend).
Trainer = keras_model_module.Trainer

__all__ = [
    "Functional",
    "Trainer",
    "forget_loss_ids",
    "functional_init_arguments",
    "multi_head_attention_projections",
    "own_variables",
    "reset_running_state",
    "retraces_on_new_shapes",
]


def forget_loss_ids(layer) -> None:
    """Forgets the ids of the losses `layer` added at its previous call.

    Inside a stateless step (`stateless_call`, how Keras trains on JAX) each layer a model calls
    starts a call of its own, and Keras then removes from the step's losses every loss whose `id`
    the layer recorded at its previous call. Those tensors are freed by then, and an id can be
    reused by the loss another layer added earlier in this step, which would be dropped: a
    layer's prior silently missing from the loss and gradient of a whole compiled step (seen in
    about 1 run in 10). A new step's losses hold none of this layer's anyway.
    """
    layer._loss_ids.clear()


def own_variables(layer) -> list:
    """The variables `layer` itself owns, in the order `save_own_variables` stores them."""
    return list(layer._trainable_variables) + list(layer._non_trainable_variables)


def multi_head_attention_projections(attention):
    """The query, key, value and output `EinsumDense` sublayers of a built
    `keras.layers.MultiHeadAttention`."""
    return (
        attention._query_dense,
        attention._key_dense,
        attention._value_dense,
        attention._output_dense,
    )


def reset_running_state(model, start=False) -> None:
    """On JAX, makes the state a running `fit` falls back on the model's current variables.

    Keras' JAX trainer takes the variables' values out of them (purges them) at a step, keeps
    the state of the last finished step in `model._jax_state`, and writes that back into the
    variables when `fit` ends, for any reason. When the step after a reallocation is
    interrupted (a Ctrl-C during its recompilation), that state is the old variables' (a shape
    mismatch), or none at all in the first step of a `fit` (Keras clears it after each `fit`):
    the purged variables stay empty and the model is lost. From here on it holds the current
    values. Called with the variables in sync only (their values are there).

    Args:
        model: the model.
        start: set the state even when there is none (before the first step of a `fit`);
            otherwise only a state that exists is refreshed (after a reallocation).
    """
    if keras.backend.backend() != "jax" or not getattr(model, "_jax_state_synced", True):
        return
    if not start and getattr(model, "_jax_state", None) is None:
        return
    optimizer = getattr(model, "optimizer", None)
    model._jax_state = {
        "trainable_variables": [v.value for v in model.trainable_variables],
        "non_trainable_variables": [v.value for v in model.non_trainable_variables],
        "optimizer_variables": (
            [v.value for v in optimizer.variables] if optimizer is not None else []
        ),
        "metrics_variables": [v.value for v in model.metrics_variables],
    }


def retraces_on_new_shapes(model) -> bool:
    """Whether `model`'s compiled steps trace themselves again when its variables change shape,
    keeping what they compiled for shapes seen before: JAX's `jit` (Keras' JAX trainer jits its
    step functions once, in `make_*_function`), without a distribution (whose steps carry the
    variables' layouts) and not run eagerly. TensorFlow's `tf.function` captures variables by
    reference and would keep training the old ones; torch compiles nothing."""
    from keras.src.distribution import distribution_lib

    return (
        keras.backend.backend() == "jax"
        and distribution_lib.distribution() is None
        and not getattr(model, "run_eagerly", False)
        and bool(getattr(model, "jit_compile", False))
    )
