"""Test configuration. The suite runs once per backend (KERAS_BACKEND), in separate processes."""

import importlib.util

# As in Keras' own conftest: torch must be imported before tensorflow in a process holding both
# (Keras imports TensorFlow, when installed, to serialize objects on every backend).
if importlib.util.find_spec("torch") is not None:
    import torch  # noqa: F401

import keras
import pytest


def pytest_report_header(config):
    return f"keras {keras.__version__}, backend: {keras.backend.backend()}"


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(1234)
    yield


@pytest.fixture
def dtype_policy():
    """Restores the global dtype policy a test changes (mixed precision tests)."""
    previous = keras.config.dtype_policy()
    yield
    keras.config.set_dtype_policy(previous)
