"""Reading the values a running `fit` holds, without syncing or waiting for the whole state.

On JAX, `fit` keeps the training state outside the Keras variables between syncs (they are
purged), and dispatches steps asynchronously. The width checks need a handful of scalars every
few steps; reading them through `callback.model` would copy every variable back.
"""

import functools

import keras
import numpy as np
from keras import ops


def _running_arrays(model, variables):
    """On JAX inside a running `fit`, the entries of the running state that hold `variables`
    (between syncs Keras purges the variables and the state lives outside them); else None."""
    if keras.backend.backend() != "jax":
        return None
    state = getattr(model, "_jax_state", None)
    if not state or getattr(model, "_jax_state_synced", True):
        return None
    # Frozen layers (`trainable = False`) keep their width parameter with the non-trainable state.
    arrays = {}
    for key, model_variables in (
        ("trainable_variables", model.trainable_variables),
        ("non_trainable_variables", model.non_trainable_variables),
    ):
        for variable, array in zip(model_variables, state.get(key) or ()):
            arrays[id(variable)] = array
    if not all(id(v) in arrays for v in variables):
        return None
    return [arrays[id(v)] for v in variables]


def host_value(variable) -> np.ndarray:
    """A numpy copy of `variable`'s value (a Keras variable or a backend tensor).

    `ops.convert_to_numpy` hands Keras variables (and TensorFlow and torch tensors) to
    `np.array`, whose `copy=` keyword their `__array__` does not take: numpy 2 warns at every
    read, hundreds of times per `fit` with warnings on. The backends' own conversions do not.
    """
    value = variable.value if isinstance(variable, keras.Variable) else variable
    if "bfloat16" in str(getattr(value, "dtype", "")):
        # numpy has no bfloat16: Keras' conversion goes through ml_dtypes.
        return np.array(ops.convert_to_numpy(value), copy=True)
    if hasattr(value, "detach"):  # torch
        value = value.detach().cpu()
    if hasattr(value, "numpy"):  # torch, TensorFlow
        value = value.numpy()
    return np.array(value, copy=True)


def current_values(model, variables) -> list:
    """The values of `variables` as the running `fit` sees them, as numpy arrays.

    On JAX, reading `callback.model` would copy every variable back from the running state and
    purge them again at the next step; this reads only the requested entries.
    """
    arrays = _running_arrays(model, variables)
    if arrays is not None:
        return [np.asarray(array) for array in arrays]
    return [host_value(v) for v in variables]


def request_values(model, variables):
    """Starts reading `variables` as the running `fit` sees them; returns a function that gives
    `current_values` at the time of the request, to call later.

    On JAX the steps of a fit are dispatched asynchronously: reading a value of the running state
    at once waits for the step that computes it, and no new step is dispatched meanwhile. Here the
    copy to the host starts now and is taken when asked for, by then long finished. The other
    backends finish each step before the next is dispatched: they read now.
    """
    arrays = _running_arrays(model, variables)
    if arrays is None:
        values = current_values(model, variables)
        return lambda: values
    # The next step donates (deletes) the running state's buffers: copy them first, on the
    # device, in one compiled program queued after the step that computes them (dispatching it
    # does not wait; an eager copy per array would cost a quarter of a millisecond each).
    flat = _jax_concatenated_copy()(arrays)
    flat.copy_to_host_async()

    def read():
        values = np.asarray(flat)
        ends = np.cumsum([int(np.prod(array.shape)) for array in arrays])
        return [
            part.reshape(array.shape) for part, array in zip(np.split(values, ends[:-1]), arrays)
        ]

    return read


@functools.cache
def _jax_concatenated_copy():
    import jax
    import jax.numpy as jnp

    return jax.jit(lambda arrays: jnp.concatenate([jnp.ravel(a) for a in arrays]))
