"""The private Keras names keras_awn relies on, in one place.

Each has no public equivalent in Keras 3; a Keras upgrade that moves one breaks only this module
(and `resize`, `running_state`, `topology`, `saved_capacities`, which read Keras' layer trackers,
training state and functional graphs directly).
"""

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
