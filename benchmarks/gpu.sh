#!/usr/bin/env bash
# GPU figures for docs/performance.md, on a lent GPU machine (JAX and PyTorch: its image has no
# TensorFlow, and no keras, which comes as wheels; see DEVELOPERS.md "GPU checks").
#
#   here, once:        bash ../shared/device/fetch-wheels.sh
#   on the machine:    bash benchmarks/gpu.sh            (carry .whl; about 4 minutes)
#   back here:         copy $OUT/*-gpu.json into benchmarks/results/, then
#                      python benchmarks/performance.py --render-only
set -euo pipefail
python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
python3 benchmarks/performance.py --backends jax torch --parts steps spiral --tag gpu \
  --results-dir "${OUT:-benchmarks/results}"
python3 benchmarks/drift.py --backends jax torch --repeats 1 --tag gpu \
  --results-dir "${OUT:-benchmarks/results}"
