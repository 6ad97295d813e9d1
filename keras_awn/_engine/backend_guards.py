"""Data-parallel training: setups in which a reallocation would lose or desynchronise state
(refused before training), and where a replica's examples sit in the global batch."""

import contextlib

import keras


def check_distribution(model) -> None:
    """Refuses data-parallel setups in which reallocation would lose or desynchronise state.

    Supported: a `tf.distribute` strategy holding the model (new variables are created in its
    scope, so they are mirrored) and JAX's `keras.distribution.DataParallel` (new variables take
    their layout from it). Refused: other `keras.distribution` layouts (a sharded axis could be
    the one that changes size), and `torch.distributed`, whose DistributedDataParallel registers
    each parameter once, when it wraps the model, while a reallocation replaces parameters.
    """
    backend = keras.backend.backend()
    if backend == "jax":
        distribution = keras.distribution.distribution()
        if distribution is not None and not isinstance(
            distribution, keras.distribution.DataParallel
        ):
            raise ValueError(
                "keras_awn reallocates adaptive layers under keras.distribution.DataParallel only "
                "(a sharded weight could be cut along the axis that changes size). Received: "
                f"distribution={type(distribution).__name__}"
            )
    elif backend == "torch":
        import torch.distributed

        if (
            torch.distributed.is_available()
            and torch.distributed.is_initialized()
            and torch.distributed.get_world_size() > 1
        ):
            raise RuntimeError(
                "keras_awn cannot train adaptive layers under torch.distributed (process group "
                f"of world size {torch.distributed.get_world_size()}): DistributedDataParallel "
                "registers each parameter once, when it wraps the model, and a reallocation "
                "replaces parameters, so replicas would stop synchronising. Train in one process "
                "on torch, or use the JAX (keras.distribution.DataParallel) or TensorFlow "
                "(tf.distribute.MirroredStrategy) backend for data-parallel training; see "
                "docs/distributed.md."
            )


def variable_creation_scope(model):
    """The scope new variables of `model` must be created in."""
    if keras.backend.backend() == "tensorflow":
        strategy = getattr(model, "distribute_strategy", None)
        if strategy is not None:
            return strategy.scope()
    return contextlib.nullcontext()


def replica_batch_offset(local_batch):
    """Position of this replica's first example in the global batch: 0 but under a
    `tf.distribute` strategy, whose replicas each see an equal share of the batch.

    Per-example patterns that follow the batch position (the width search's stochastic prefixes)
    then match one-device training. JAX's `DataParallel` steps see the global batch already.
    """
    if keras.backend.backend() != "tensorflow":
        return 0.0
    import tensorflow as tf

    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return 0.0
    replica = tf.cast(context.replica_id_in_sync_group, "float32")
    return replica * tf.cast(local_batch, "float32")
