"""Where keras_awn meets Keras saving: capacities in weight files, portable compile configs,
atomic writes."""

import contextlib
import json
import os
import secrets
import warnings

import keras

from keras_awn._engine import keras_internals


def own_classes(model):
    """A custom-object scope with `model`'s own layer classes: rebuilding `model` from its config
    finds them, registered or not (a custom layer defined in a notebook is not)."""
    # Imported here: topology imports the layers, which import this module.
    from keras_awn._engine import topology

    classes = {
        type(layer).__name__: type(layer)
        for layer in topology.walk(model)
        # Keras' and keras_awn's own classes resolve anyway: a user's class named like one
        # of them must not stand in for it.
        if not type(layer).__module__.startswith(("keras.", "keras_awn."))
    }
    return keras.saving.custom_object_scope(classes)


def replace_in_config(entry, layer) -> None:
    """Makes the layer entry `entry` of a model's config describe `layer` instead (its class and
    config; the old build config is dropped, the model's graph builds it). `strip` and
    `keras_awn.adapt` rebuild models from configs edited so."""
    serialized = keras.saving.serialize_keras_object(layer)
    for key in ("module", "class_name", "config", "registered_name"):
        entry[key] = serialized[key]
    entry.pop("build_config", None)


def config_entry_name(entry) -> str:
    """The layer name of an entry of a Sequential or functional model's config."""
    return entry.get("name") or entry["config"].get("name")


def stored_capacity(layer, store):
    """The number of units the weights `store` holds for adaptive `layer`, or None if it cannot
    be read (Keras stores a layer's own variables by their position in its lists)."""
    variable, axis = layer.output_unit_variables()[0]
    position = next(
        (i for i, v in enumerate(keras_internals.own_variables(layer)) if v is variable), None
    )
    try:
        shape = store[f"{position}"].shape
    except (KeyError, TypeError, AttributeError):
        return None
    if len(shape) != len(variable.shape):
        return None
    return int(shape[axis])


@contextlib.contextmanager
def resizing_on_load(layers, resize_layer):
    """While active, an adaptive layer among `layers` whose stored weights hold another
    capacity is first reallocated by `resize_layer(layer, capacity)`, then loaded.

    Outside of it, such a file is refused (`AdaptiveWidthLayer.load_own_variables`).
    """
    for layer in layers:
        layer.training_state.resize_on_load = resize_layer
    try:
        yield
    finally:
        for layer in layers:
            layer.training_state.resize_on_load = None


def portable_compile_config(config):
    """Names optimizers by their public class so that a file loads on every backend.

    On torch, `keras.optimizers.Adam()` is an instance of a torch-only subclass that Keras
    serializes under its private module; loading such a file on JAX or TensorFlow would import
    torch and train with a torch optimizer.
    """
    config = dict(config)
    optimizer = config.get("optimizer")
    if isinstance(optimizer, dict) and str(optimizer.get("module", "")).startswith(
        "keras.src.backend."
    ):
        config["optimizer"] = {**optimizer, "module": "keras.optimizers", "registered_name": None}
    return config


# The endings Keras requires of a `.keras` file and of a single weights file.
ATOMIC_SUFFIXES = (".weights.h5", ".keras")


def atomic_suffix(filepath):
    """The Keras suffix of a local file path keras_awn writes atomically, else None (file
    objects, remote paths, directories, sharded weights: written by Keras as it does)."""
    if not isinstance(filepath, (str, os.PathLike)):
        return None
    path = os.fspath(filepath)
    if "://" in path or os.path.isdir(path):
        return None
    return next((suffix for suffix in ATOMIC_SUFFIXES if path.endswith(suffix)), None)


@contextlib.contextmanager
def atomic_write(filepath, suffix):
    """Yields a temporary path in `filepath`'s folder; once the block has written it, flushes it
    to disk and renames it over `filepath` in one step.

    A process killed while writing, a full disk or an exception leaves the previous file as it
    was (the rename is atomic on POSIX and Windows file systems); only a killed process leaves
    its temporary file (`.<name>.<random><suffix>`) behind.
    """
    # A symbolic link keeps pointing at the file it names: the file is replaced, not the link.
    path = os.path.realpath(os.fspath(filepath))
    directory, name = os.path.split(path)
    temporary = _new_file(directory, f".{name}.", suffix)
    try:
        yield temporary
        with open(temporary, "r+b") as written:
            os.fsync(written.fileno())
        if os.path.exists(path):
            os.chmod(temporary, os.stat(path).st_mode & 0o777)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(temporary)
        raise
    # The rename itself reaches the disk with the folder's entry.
    with contextlib.suppress(OSError, AttributeError):
        folder = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)


def _new_file(directory, prefix, suffix):
    """Creates an empty file with a random name in `directory`; returns its path. Created as
    `open` creates files (mode 0o666 less the umask), unlike `tempfile.mkstemp` (0o600)."""
    while True:
        path = os.path.join(directory, f"{prefix}{secrets.token_hex(6)}{suffix}")
        try:
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
        except FileExistsError:
            continue
        return path


def repair_backup_metadata(backup):
    """Makes a `keras.callbacks.BackupAndRestore`'s metadata readable before it resumes.

    Keras writes the metadata (the epoch to resume at) in place, after the weights: a process
    killed in between leaves a file that does not parse, and `fit` would fail on it. Its
    previous copy (`double_checkpoint=True`) is used if it parses; otherwise the file is removed
    and training resumes from the backed-up weights at epoch 0, with a warning.
    """
    path = getattr(backup, "_training_metadata_path", None)
    if path is None or not os.path.exists(path):
        return
    if _parses(path):
        return
    previous = getattr(backup, "_prev_training_metadata_path", None)
    if previous is not None and os.path.exists(previous) and _parses(previous):
        with atomic_write(path, ".json") as temporary:
            with open(previous, "rb") as source, open(temporary, "wb") as target:
                target.write(source.read())
        how = f"its previous copy '{previous}' is used"
    else:
        os.remove(path)
        how = "training resumes from the backed-up weights at epoch 0"
    warnings.warn(
        f"The BackupAndRestore metadata '{path}' is incomplete (the process was killed while "
        f"writing it): {how}.",
        stacklevel=3,
    )


def _parses(path):
    try:
        with open(path) as f:
            json.load(f)
    except (OSError, ValueError):
        return False
    return True
