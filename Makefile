# Two entry points that work on a fresh machine (they install what they need into .venv):
#   make demo   - train an adaptive MLP on two spirals and show its learned widths
#   make test   - run the whole test suite once per backend (tensorflow, jax, torch)

PYTHON ?= python3
VENV ?= .venv
BACKEND ?= jax
BIN := $(VENV)/bin
# Where the CPU build of torch comes from: the PyTorch project's CPU wheel index (the default
# index would pull a multi-GB CUDA build on Linux). Empty: the configured index, which on the
# project's CI machine holds the CPU wheel (.ci/run passes TORCH_INDEX=).
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu

.PHONY: demo test install clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# The CPU build of torch first: a bare `torch` requirement would pull a multi-GB CUDA build.
	$(BIN)/python -m pip install -q "torch==2.13.0" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(BIN)/python -m pip install -q -e ".[all,test]"
	touch $@

demo: install
	KERAS_BACKEND=$(BACKEND) $(BIN)/python examples/demo.py

# Each backend in its own process (the backend is fixed when keras is imported). The three run
# side by side, each with its own pytest temporary directory, to keep CI short; their outputs are
# printed one after the other. Fails if any fails. One compute thread per process: three
# processes on CI's two cores otherwise oversubscribe them (two test files took 7-11% longer).
TEST_THREADS := OMP_NUM_THREADS=1 TF_NUM_INTRAOP_THREADS=1 \
	XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
test: install
	@rm -rf .test-logs && mkdir -p .test-logs; \
	for backend in tensorflow jax torch; do \
		($(TEST_THREADS) KERAS_BACKEND=$$backend $(BIN)/python -m pytest -q -p no:cacheprovider --durations=15 \
			--basetemp=.test-logs/tmp-$$backend tests > .test-logs/$$backend.log 2>&1; \
		 echo $$? > .test-logs/$$backend.status) & \
	done; \
	wait; \
	status=0; \
	for backend in tensorflow jax torch; do \
		echo "=== KERAS_BACKEND=$$backend"; \
		cat .test-logs/$$backend.log; \
		if [ "$$(cat .test-logs/$$backend.status)" != "0" ]; then status=1; fi; \
	done; \
	exit $$status

clean:
	rm -rf $(VENV) *.egg-info
