"""Data-parallel training while widths change (docs/distributed.md).

JAX (`keras.distribution.DataParallel`, 8 host devices) and TensorFlow (`MirroredStrategy`, 4
logical CPUs): the same model trained on one device and data-parallel, from the same weights on
the same global batches, with a reallocation under the distribution, gives the same per-batch
losses (1e-4), widths and weights, and every variable (model and optimizer, old and new) keeps
the distribution's layout. PyTorch: `fit` in a process group of several processes is refused.
"""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from tests import helpers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BACKEND = keras.backend.backend()


@pytest.mark.skipif(BACKEND == "torch", reason="torch refuses data parallelism (test below)")
def test_data_parallel_training_matches_one_device_through_a_reallocation():
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "tests", "distributed_run.py")],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
        env={**os.environ, "KERAS_BACKEND": BACKEND},
    )
    assert result.returncode == 0, result.stderr[-4000:]
    run = json.loads(result.stdout.strip().splitlines()[-1])
    assert run["replicas"] == (8 if BACKEND == "jax" else 4)
    # The controller reallocated under the distribution (the first layer started full).
    assert run["reallocations"] and run["capacities"][next(iter(run["capacities"]))] > 6
    np.testing.assert_allclose(run["losses"], run["single_losses"], atol=1e-4)
    assert [list(w.values()) for w in run["widths"]] == [list(w.values()) for w in run["single_widths"]]
    assert run["weights_difference"] < 1e-4
    # Every variable, including those created by the reallocation and the rebuilt optimizer's.
    assert run["layouts"] and all(run["layouts"].values()), run["layouts"]


WORKER = r"""
import os, sys, json
import torch.distributed as dist
dist.init_process_group("gloo", init_method=sys.argv[1], rank=int(sys.argv[2]), world_size=2)
import keras, keras_awn
from tests import helpers
model = helpers.sequential_model((4, 4))
helpers.compile_classifier(model)
x, y = helpers.spiral_data(64)
try:
    model.fit(x, y, epochs=1, verbose=0)
    print(json.dumps({"error": None}))
except RuntimeError as error:
    print(json.dumps({"error": str(error)}))
dist.destroy_process_group()
"""


@pytest.mark.skipif(BACKEND != "torch", reason="the torch backend's refusal")
def test_torch_process_group_is_refused_clearly():
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    address = f"tcp://127.0.0.1:{port}"
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, address, str(rank)], cwd=ROOT, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env={**os.environ, "KERAS_BACKEND": "torch"},
        )
        for rank in range(2)
    ]
    for worker in workers:
        out, err = worker.communicate(timeout=300)
        assert worker.returncode == 0, err[-3000:]
        error = json.loads(out.strip().splitlines()[-1])["error"]
        assert error and "torch.distributed" in error and "world size 2" in error


@pytest.mark.skipif(BACKEND != "jax", reason="keras.distribution layouts exist on JAX only")
def test_jax_distributions_other_than_data_parallel_are_refused():
    import jax

    mesh = keras.distribution.DeviceMesh((1,), ["model"], jax.devices()[:1])
    layout_map = keras.distribution.LayoutMap(mesh)
    layout_map[".*kernel"] = keras.distribution.TensorLayout([None, "model"])
    model = helpers.compile_classifier(helpers.sequential_model((4, 4)))
    x, y = helpers.spiral_data(64)
    keras.distribution.set_distribution(keras.distribution.ModelParallel(layout_map=layout_map))
    try:
        with pytest.raises(ValueError, match="Received: distribution=ModelParallel"):
            model.fit(x, y, epochs=1, verbose=0)
    finally:
        keras.distribution.set_distribution(None)
