"""The cost of adaptivity: adaptive models against plain Keras, backend by backend.

    python benchmarks/performance.py                     # every part, TensorFlow, JAX, PyTorch
    python benchmarks/performance.py --backends jax --parts steps
    python benchmarks/performance.py --render-only       # redraw docs/performance.md

Each backend runs in its own process (the backend is fixed at import), and every ratio compares
two measurements taken in that same process. Parts:

- `steps`: step time of an MLP with two AdaptiveDense layers vs a plain Keras MLP with the same
  active widths (64, 256, 1024) at batch 128 and 1024, with the capacity the controller keeps
  once widths have settled (width + the default settled headroom, at least 2 units) and while
  they move (2 x width). The controller checks the widths every 8 steps as in a normal fit, but
  never reallocates. At capacity = width, the same model with the width gradient, the weight
  prior or the in-epoch checks switched off in turn shows what each part of the per-step
  computation costs; a plain MLP as wide as the settled capacity shows what that size costs.
- `spiral`: one adaptive training run on the hard two-spiral task (5000 points, 2 turns): time
  spent reallocating and recompiling as a share of the run, reallocations per layer, for the
  default capacity policy and variants of it (the trade-off between masked units and rebuilds).
- `settling`: the capacity policy on two 256-unit layers whose widths keep drifting after they
  stop moving fast (down on digits, up when memorising random labels): rebuilds, and the share
  of the weights that belong to masked units over the run, per policy (the settled headroom,
  the regrowth of settled layers, no settling).
- `memory`: peak memory of training the adaptive model vs the plain one (state bytes, exactly,
  and the growth of the process' peak resident memory, each model in fresh processes, median of
  3).
- `accuracy`: time to accuracy, one adaptive run vs the grid of fixed widths {8, 16, 24, 128,
  256} of the paper, on the hard two-spiral task and scikit-learn's digits.

Results go to benchmarks/results/performance_<backend>.json and docs/performance.md.
"""

import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "benchmarks", "results")
PAGE = os.path.join(ROOT, "docs", "performance.md")
BACKENDS = ("tensorflow", "jax", "torch")
PARTS = ("steps", "search", "spiral", "settling", "memory", "accuracy")
STEP_WIDTHS = (64, 256, 1024)
STEP_BATCHES = (128, 1024)
# Timed rounds: each round times one epoch of every case, back to back (in a rotating order, so
# that a drift of the machine's load spreads over all cases); a ratio divides the best epochs of
# the two cases. On the shared 2-core machine an epoch runs either unloaded or about twice as
# slow (most likely a neighbour on the host taking a core), and in loaded stretches most epochs
# are slow: the best epoch needs only one unloaded epoch per case. Eleven rounds rather than
# seven for more chances; every epoch's time is kept in the results.
STEP_REPEATS = 11
GRID = (8, 16, 24, 128, 256)
FEATURES, CLASSES = 32, 10


# -- Worker side: runs inside one backend ---------------------------------------------------------


def _setup():
    sys.path.insert(0, ROOT)
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    import keras

    import keras_awn

    return keras, keras_awn


def _compile(keras, model, learning_rate=1e-3):
    model.compile(
        keras.optimizers.Adam(learning_rate),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def _mlp(
    keras,
    keras_awn,
    width,
    capacity=None,
    inputs=FEATURES,
    classes=CLASSES,
    l2=None,
    weight_prior_scale=1.0,
    width_gradient=True,
    width_learning="gradient",
):
    """Plain Keras MLP (capacity None) or the adaptive one at active width `width`.

    `l2`: a plain MLP whose hidden layers carry an L2 penalty on kernel and bias, the same kind
    of term as the adaptive layers' Gaussian weight prior (what the method's objective costs).
    `weight_prior_scale`, `width_gradient`: the adaptive layers' weight prior (None: none) and
    whether their width parameters train (False: non-trainable, so no step computes their
    gradient), to take the method's per-step computation apart. `width_learning`: the
    paper's gradient-learned width (the per-step computation the `steps` part takes apart) or
    the width search (the `search` part).
    """
    if capacity is None:
        penalty = keras.regularizers.L2(l2) if l2 else None
        hidden = [
            keras.layers.Dense(
                width, activation="relu", kernel_regularizer=penalty, bias_regularizer=penalty
            )
            for _ in range(2)
        ]
        return keras.Sequential([keras.Input((inputs,)), *hidden, keras.layers.Dense(classes)])
    hidden = [
        keras_awn.layers.AdaptiveDense(
            width,
            capacity=capacity,
            activation="relu",
            weight_prior_scale=weight_prior_scale,
            width_learning=width_learning,
        )
        for _ in range(2)
    ]
    model = keras_awn.Sequential([keras.Input((inputs,)), *hidden, keras.layers.Dense(classes)])
    if not width_gradient:
        for layer in hidden:
            layer.width_parameter.trainable = False
    return model


def _frozen_controller(keras_awn, **kwargs):
    """A WidthController that checks as usual but never changes a capacity, and does not
    search (for timing)."""
    controller = keras_awn.callbacks.WidthController(**{"search_every": None, **kwargs})
    controller.policy.decide = lambda layer, record, width, **kwargs: (layer.capacity, None)
    return controller


def settled_capacity(width):
    """The capacity the default WidthController keeps around a settled `width` of an
    AdaptiveDense (the settling rule, and the layer's capacity floor)."""
    from keras_awn.callbacks import WidthController
    from keras_awn.layers import AdaptiveDense

    return max(WidthController().policy.settled_capacity(width), AdaptiveDense.min_capacity)


def moving_capacity(width):
    """The capacity right after the default WidthController grew an AdaptiveDense to `width`."""
    from keras_awn.layers import AdaptiveDense

    return max(2 * width, AdaptiveDense.min_capacity)


def run_steps(quick):
    import numpy as np

    keras, keras_awn = _setup()
    widths = (16,) if quick else STEP_WIDTHS
    batches = (32,) if quick else STEP_BATCHES
    rng = np.random.default_rng(0)
    rows = []
    for width in widths:
        for batch in batches:
            # Enough steps per timed epoch that the per-epoch overhead of fit is small.
            steps = 8 if quick else max(16, min(64, int(4e9 / (batch * width * width * 6))))
            x = rng.normal(size=(batch * steps, FEATURES)).astype("float32")
            y = rng.integers(0, CLASSES, batch * steps).astype("int32")
            cases = {
                "plain": (_mlp(keras, keras_awn, width), []),
                # A plain MLP as wide as the settled capacity: what the capacity's size costs
                # by itself (matrix kernels run some sizes much faster than others).
                "plain_settled": (_mlp(keras, keras_awn, settled_capacity(width)), []),
                # 1 / (2 sigma^2 N): the adaptive prior's scale at sigma 1.
                "plain_l2": (_mlp(keras, keras_awn, width, l2=1.0 / (2 * len(x))), []),
                "settled": (
                    _mlp(keras, keras_awn, width, settled_capacity(width)),
                    [_frozen_controller(keras_awn)],
                ),
                # No masked unit at all: what the method's per-step computation costs alone.
                "exact": (_mlp(keras, keras_awn, width, width), [_frozen_controller(keras_awn)]),
                "moving": (
                    _mlp(keras, keras_awn, width, moving_capacity(width)),
                    [_frozen_controller(keras_awn)],
                ),
                # `exact` with one part of the method's per-step computation switched off.
                "exact_no_width_gradient": (
                    _mlp(keras, keras_awn, width, width, width_gradient=False),
                    [_frozen_controller(keras_awn)],
                ),
                "exact_no_prior": (
                    _mlp(keras, keras_awn, width, width, weight_prior_scale=None),
                    [_frozen_controller(keras_awn)],
                ),
                "exact_no_checks": (
                    _mlp(keras, keras_awn, width, width),
                    [_frozen_controller(keras_awn, check_every=10**9)],
                ),
            }
            samples = {}
            for name, (model, callbacks) in cases.items():
                _compile(keras, model, 1e-4)
                model.fit(x, y, batch_size=batch, epochs=1, verbose=0, callbacks=callbacks)
                samples[name] = []
            names = list(cases)
            for round_index in range(2 if quick else STEP_REPEATS):
                # Rotated so that no case always runs right after another one.
                shift = round_index % len(names)
                for name in names[shift:] + names[:shift]:
                    model, callbacks = cases[name]
                    started = time.perf_counter()
                    model.fit(x, y, batch_size=batch, epochs=1, verbose=0, callbacks=callbacks)
                    samples[name].append(1000 * (time.perf_counter() - started) / steps)
            # The widths drift a little while timing (it is training); the work per step
            # depends on the capacity, which stays put.
            active = {n: list(keras_awn.widths(cases[n][0]).values()) for n in ("settled", "moving")}
            rows.append(
                {
                    "width": width,
                    "batch": batch,
                    # The best epoch of each case (ms per step), and every round's time.
                    **{f"{name}_ms": min(times) for name, times in samples.items()},
                    "samples_ms": samples,
                    "settled_capacity": settled_capacity(width),
                    "settled_headroom": keras_awn.callbacks.WidthController().settled_headroom,
                    "moving_capacity": moving_capacity(width),
                    "active_widths_after": active,
                }
            )
            print(json.dumps(rows[-1]), file=sys.stderr)
    return rows


SEARCH_WIDTHS = (64, 256, 1024)
SEARCH_BATCH = 128


def run_search(quick):
    """What the width search adds: the stochastic prefixes in every step, and one search (the
    probe scored with each layer cut to prefixes) every 128 steps, amortized."""
    import numpy as np

    from keras_awn._engine import width_search

    keras, keras_awn = _setup()
    rng = np.random.default_rng(0)
    rows = []
    for width in (16,) if quick else SEARCH_WIDTHS:
        batch = 32 if quick else SEARCH_BATCH
        steps = 8 if quick else max(16, min(64, int(4e9 / (batch * width * width * 6))))
        x = rng.normal(size=(max(batch * steps, 2048), FEATURES)).astype("float32")
        y = rng.integers(0, CLASSES, len(x)).astype("int32")
        x_epoch, y_epoch = x[: batch * steps], y[: batch * steps]
        cases = {
            "plain": (_mlp(keras, keras_awn, width), []),
            "paper": (_mlp(keras, keras_awn, width, width), [_frozen_controller(keras_awn)]),
            "prefixes": (
                _mlp(keras, keras_awn, width, width, width_learning="search"),
                [_frozen_controller(keras_awn)],
            ),
        }
        samples = {name: [] for name in cases}
        for model, callbacks in cases.values():
            _compile(keras, model, 1e-4)
            model.fit(x_epoch, y_epoch, batch_size=batch, epochs=1, verbose=0, callbacks=callbacks)
        names = list(cases)
        for round_index in range(2 if quick else STEP_REPEATS):
            shift = round_index % len(names)
            for name in names[shift:] + names[:shift]:
                model, callbacks = cases[name]
                started = time.perf_counter()
                model.fit(
                    x_epoch, y_epoch, batch_size=batch, epochs=1, verbose=0, callbacks=callbacks
                )
                samples[name].append(1000 * (time.perf_counter() - started) / steps)
        # One search on the prefixes model: a 2048-example probe, each layer scored at its
        # prefixes; the decision is discarded so that every repeat does the same work.
        model, (controller,) = cases["prefixes"]
        controller._probe = width_search.Probe(x[:2048], y[:2048])
        controller.search.target_width = lambda width, score: (score(width), score(0), width)[-1]
        searches = []
        for _ in range(2 if quick else 5):
            started = time.perf_counter()
            controller._search()
            searches.append(1000 * (time.perf_counter() - started))
        # The decision above scores 2 points; a real search also scores up to 5 prefixes.
        full_search = []
        layer = keras_awn.adaptive_layers(model)[0]
        for _ in range(2 if quick else 5):
            started = time.perf_counter()
            controller._probe.score(model, layer, width // 2)
            full_search.append(1000 * (time.perf_counter() - started))
        search_ms = min(searches) + 5 * len(keras_awn.adaptive_layers(model)) * min(full_search)
        rows.append(
            {
                "width": width,
                "batch": batch,
                **{f"{name}_ms": min(times) for name, times in samples.items()},
                "samples_ms": samples,
                "search_ms": search_ms,
                "search_every": 128,
            }
        )
        print(json.dumps(rows[-1]), file=sys.stderr)
    return rows


# Narrower than the widths the task needs (about 20-40), so that the run reallocates.
SPIRAL_INITIAL_UNITS = 8
# Controller arguments per policy. Without the capacity floor the layers also start at twice
# their initial width (the default capacity without the floor): these rows show what the floor
# saves, and the growth policy's trade-off where it acts (with the floor this task needs no
# rebuild whatever the growth policy).
SPIRAL_POLICIES = {
    "default (floor 64, growth 2, settle after 16 checks)": {},
    "no floor": {"min_capacity": 1},
    "no floor, no settling": {"min_capacity": 1, "settle_after": None},
    "no floor, growth 1.5": {"min_capacity": 1, "growth_factor": 1.5, "shrink_threshold": 0.25},
    "no floor, growth 3": {"min_capacity": 1, "growth_factor": 3.0, "shrink_threshold": 0.2},
}


def _spiral_task(quick):
    from keras_awn import datasets

    x, y = datasets.spirals(600 if quick else 5000, turns=2.0, noise=0.02, seed=0)
    return datasets.split(x, y)


class _StepTimer:
    """Times each step, and marks the steps that follow a rebuild of the step functions."""

    def __new__(cls, keras, controller):
        class StepTimer(keras.callbacks.Callback):
            def __init__(self):
                super().__init__()
                self.durations, self.after_rebuild = [], []
                self._seen = 0

            def on_train_batch_begin(self, batch, logs=None):
                self._started = time.perf_counter()
                self.after_rebuild.append(controller.rebuilds > self._seen)
                self._seen = controller.rebuilds

            def on_train_batch_end(self, batch, logs=None):
                self.durations.append(time.perf_counter() - self._started)

        return StepTimer()


def run_spiral(quick):
    import numpy as np

    keras, keras_awn = _setup()
    (x, y), (x_test, y_test) = _spiral_task(quick)
    epochs = 3 if quick else 60
    rows = []
    # Quick mode (the unit test) checks the machinery on two policies.
    policies = list(SPIRAL_POLICIES.items())
    for name, policy in policies[:2] if quick else policies:
        keras.utils.set_random_seed(0)
        capacity = 2 * SPIRAL_INITIAL_UNITS if policy.get("min_capacity") == 1 else None
        model = keras_awn.Sequential(
            [
                keras.Input((2,)),
                keras_awn.layers.AdaptiveDense(
                    SPIRAL_INITIAL_UNITS, activation="relu", capacity=capacity
                ),
                keras_awn.layers.AdaptiveDense(
                    SPIRAL_INITIAL_UNITS, activation="relu", capacity=capacity
                ),
                keras.layers.Dense(2),
            ]
        )
        _compile(keras, model, 0.01)
        controller = keras_awn.callbacks.WidthController(**policy)
        timer = _StepTimer(keras, controller)
        # The first step compiles for plain models too: start the clock after it.
        started = time.perf_counter()
        model.fit(x, y, batch_size=128, epochs=epochs, verbose=0, callbacks=[controller, timer])
        wall = time.perf_counter() - started
        durations = np.array(timer.durations)
        after = np.array(timer.after_rebuild)
        typical = float(np.median(durations))
        recompile = float(np.sum(np.maximum(durations[after] - typical, 0.0)))
        first_step = float(durations[0])
        per_layer = {}
        for event in controller.reallocations:
            per_layer[event["layer"]] = per_layer.get(event["layer"], 0) + 1
        accuracy = float(model.evaluate(x_test, y_test, verbose=0)[1])
        rows.append(
            {
                "policy": name,
                "wall_s": wall,
                "first_step_s": first_step,
                "reallocation_s": controller.reallocation_seconds,
                "recompile_s": recompile,
                "rebuilds": controller.rebuilds,
                "reallocations_per_layer": per_layer,
                "final_widths": keras_awn.widths(model),
                "final_capacities": {
                    l.name: l.capacity for l in keras_awn.adaptive_layers(model)
                },
                "test_accuracy": accuracy,
                "events": controller.reallocations,
            }
        )
        print(json.dumps({k: v for k, v in rows[-1].items() if k != "events"}), file=sys.stderr)
    return rows


# The settling part: controller policies on wide layers whose widths keep drifting after they
# stop moving fast. The keyword `regrowth=False` replaces the regrowth of a settled layer by a
# doubling of its capacity (the policy before regrowth existed).
SETTLING_POLICIES = {
    "default (headroom 2%, regrowth)": {},
    "headroom 5%, regrowth": {"settled_headroom": 0.05},
    "headroom 5%, no regrowth": {"settled_headroom": 0.05, "regrowth": False},
    "no settling": {"settle_after": None},
}
SETTLING_UNITS = 256


def _settling_tasks(quick):
    """`{name: (x, y, x_eval, y_eval, batch, epochs)}`: digits, where the widths of 256-unit
    layers drift down, and memorising random labels, where they grow."""
    import numpy as np

    (x, y), (x_test, y_test) = _load_digits()
    rng = np.random.default_rng(0)
    noise_x = rng.normal(size=(256 if quick else 4096, FEATURES)).astype("float32")
    noise_y = rng.integers(0, CLASSES, len(noise_x)).astype("int32")
    return {
        "digits (widths shrink)": (x, y, x_test, y_test, 64, 2 if quick else 40),
        "random labels (widths grow)": (noise_x, noise_y, noise_x, noise_y, 128, 2 if quick else 20),
    }


def _masked_share(layers, widths, inputs, classes):
    """The share of a chain of dense layers' weights that belong to masked units."""

    def count(sizes):
        return sum(a * b for a, b in zip([inputs, *sizes], [*sizes, classes]))

    return 1.0 - count(widths) / count([layer.capacity for layer in layers])


def _settling_controller(keras_awn, regrowth=True, **kwargs):
    """A WidthController; `regrowth=False` doubles a settled layer's capacity when its width
    reaches it instead of regrowing it by a margin (the policy before regrowth existed)."""
    controller = keras_awn.callbacks.WidthController(**kwargs)
    if not regrowth:
        controller.policy.regrown_capacity = lambda *args, **kwargs: None
    return controller


def _masked_share_recorder(keras, layers, inputs, classes, shares):
    """A callback appending `_masked_share` to `shares` at each epoch end (from the widths the
    controller logs, so it must come after the controller)."""

    class MaskedShare(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            widths = [logs[f"{layer.name}_width"] for layer in layers]
            shares.append(_masked_share(layers, widths, inputs, classes))

    return MaskedShare()


def run_settling(quick):
    import numpy as np

    keras, keras_awn = _setup()
    rows = []
    policies = list(SETTLING_POLICIES.items())
    for task, (x, y, x_eval, y_eval, batch, epochs) in _settling_tasks(quick).items():
        for name, policy in policies[:2] if quick else policies:
            keras.utils.set_random_seed(0)
            layers = [
                keras_awn.layers.AdaptiveDense(SETTLING_UNITS, activation="relu") for _ in range(2)
            ]
            classes = int(y.max()) + 1
            model = keras_awn.Sequential(
                [keras.Input((x.shape[1],)), *layers, keras.layers.Dense(classes)]
            )
            _compile(keras, model, 1e-3)
            controller = _settling_controller(keras_awn, **policy)
            shares = []
            recorder = _masked_share_recorder(keras, layers, x.shape[1], classes, shares)
            started = time.perf_counter()
            model.fit(
                x, y, batch_size=batch, epochs=epochs, verbose=0, callbacks=[controller, recorder]
            )
            wall = time.perf_counter() - started
            reasons = {}
            for event in controller.reallocations:
                reasons[event["reason"]] = reasons.get(event["reason"], 0) + 1
            rows.append(
                {
                    "task": task,
                    "policy": name,
                    "epochs": epochs,
                    "wall_s": wall,
                    "rebuilds": controller.rebuilds,
                    "reasons": reasons,
                    "mean_masked_share": float(np.mean(shares)),
                    "final_widths": keras_awn.widths(model),
                    "final_capacities": {layer.name: layer.capacity for layer in layers},
                    "accuracy": float(model.evaluate(x_eval, y_eval, verbose=0)[1]),
                    "events": controller.reallocations,
                }
            )
            print(json.dumps({k: v for k, v in rows[-1].items() if k != "events"}), file=sys.stderr)
    return rows


# The widths of the memory part: the fixed overhead (16) and the one that scales (1024).
MEMORY_WIDTHS = (16, 1024)


def run_memory_one(variant, width, quick):
    """One model trained in this fresh process: state bytes and peak RSS growth."""
    import resource

    import numpy as np

    keras, keras_awn = _setup()
    batch = 64 if quick else 1024
    rng = np.random.default_rng(0)
    x = rng.normal(size=(batch * 8, FEATURES)).astype("float32")
    y = rng.integers(0, CLASSES, batch * 8).astype("int32")
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    capacity = {"plain": None, "settled": settled_capacity(width), "moving": moving_capacity(width)}[variant]
    model = _compile(keras, _mlp(keras, keras_awn, width, capacity))
    callbacks = [] if capacity is None else [_frozen_controller(keras_awn)]
    model.fit(x, y, batch_size=batch, epochs=3, verbose=0, callbacks=callbacks)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    state = sum(
        int(np.prod(v.shape)) * 4 for v in model.variables + model.optimizer.variables
    )
    return {
        "variant": variant,
        "width": width,
        "state_bytes": state,
        "peak_rss_growth_kib": peak - baseline,
    }


def _load_digits():
    import numpy as np
    from sklearn.datasets import load_digits

    from keras_awn import datasets

    x, y = load_digits(return_X_y=True)
    x, y = (x / 16.0).astype("float32"), y.astype("int32")
    order = np.random.default_rng(0).permutation(len(x))
    return datasets.split(x[order], y[order])


def run_accuracy(quick):
    keras, keras_awn = _setup()
    tasks = {"hard spiral": _spiral_task(quick), "digits": _load_digits()}
    epochs = 3 if quick else 60
    grid = (8, 16) if quick else GRID
    rows = []
    for task, ((x, y), (x_test, y_test)) in tasks.items():
        classes = int(y.max()) + 1
        runs = []
        for width in (None, *grid):
            keras.utils.set_random_seed(0)
            if width is None:
                model = keras_awn.Sequential(
                    [
                        keras.Input((x.shape[1],)),
                        keras_awn.layers.AdaptiveDense(16, activation="relu"),
                        keras_awn.layers.AdaptiveDense(16, activation="relu"),
                        keras.layers.Dense(classes),
                    ]
                )
            else:
                model = _mlp(keras, keras_awn, width, inputs=x.shape[1], classes=classes)
            _compile(keras, model, 0.01)
            callbacks = [] if width is not None else [keras_awn.callbacks.WidthController()]
            started = time.perf_counter()
            model.fit(x, y, batch_size=128, epochs=epochs, verbose=0, callbacks=callbacks)
            wall = time.perf_counter() - started
            accuracy = float(model.evaluate(x_test, y_test, verbose=0)[1])
            run = {"width": width, "wall_s": wall, "test_accuracy": accuracy}
            if width is None:
                run["learned_widths"] = keras_awn.widths(model)
                run["rebuilds"] = callbacks[0].rebuilds
            runs.append(run)
            print(json.dumps({"task": task, **run}), file=sys.stderr)
        rows.append({"task": task, "epochs": epochs, "runs": runs})
    return rows


# -- Driver side: no backend imported --------------------------------------------------------------


def _worker(backend, args):
    env = {**os.environ, "KERAS_BACKEND": backend, "PYTHONHASHSEED": "0"}
    command = [sys.executable, os.path.abspath(__file__), "--worker", *args]
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{backend} {' '.join(args)} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _results_path(backend, tag=None, folder=RESULTS):
    suffix = f"-{tag}" if tag else ""
    return os.path.join(folder, f"performance_{backend}{suffix}.json")


def _label(backend, tag=None):
    return f"{backend} ({tag})" if tag else backend


# Peak RSS of one process moves by tens of MiB from run to run (the backend's compiler and
# allocator): each variant runs in this many fresh processes, interleaved, and the median counts.
MEMORY_REPEATS = 3


def _measure_memory(backend, extra, quick):
    rows = []
    for width in (64,) if quick else MEMORY_WIDTHS:
        runs = {}
        for _ in range(1 if quick else MEMORY_REPEATS):
            for variant in ("plain", "settled", "moving"):
                runs.setdefault(variant, []).append(
                    _worker(backend, ["memory_one", variant, str(width), *extra])
                )
        for variant, repeats in runs.items():
            growths = sorted(run["peak_rss_growth_kib"] for run in repeats)
            rows.append(
                {
                    **repeats[0],
                    "peak_rss_growth_kib": growths[len(growths) // 2],
                    "peak_rss_repeats_kib": [run["peak_rss_growth_kib"] for run in repeats],
                }
            )
    return rows


def measure(backend, parts, quick, tag=None, folder=RESULTS):
    path = _results_path(backend, tag, folder)
    results = {}
    if os.path.exists(path) and not quick:
        with open(path) as f:
            results = json.load(f)
    extra = ["quick"] if quick else []
    # A full run gives each part a fresh process, so that no part times another's leftovers
    # (compilation caches, allocator state). Quick mode (the unit test) checks the machinery
    # only and runs its in-process parts in one worker: an import of the backend each instead of
    # one per part.
    in_process = [part for part in parts if part != "memory"]
    groups = [in_process] if quick and in_process else [[part] for part in in_process]
    if "memory" in parts:
        groups.append(["memory"])
    for group in groups:
        print(f"[{backend}] {' '.join(group)} ...", flush=True)
        started = time.perf_counter()
        if group == ["memory"]:
            results["memory"] = _measure_memory(backend, extra, quick)
        else:
            results.update(_worker(backend, [*group, *extra]))
        elapsed = time.perf_counter() - started
        print(f"[{backend}] {' '.join(group)} done in {elapsed:.0f} s", flush=True)
    results["command"] = "python benchmarks/performance.py" + (f" --tag {tag}" if tag else "")
    results["quick"] = quick
    if not quick:
        os.makedirs(folder, exist_ok=True)
        with open(path, "w") as f:
            json.dump(results, f, indent=1)
    return results


def _ratio(a, b):
    return f"{a / b:.2f}"


def _step_ratio(row, case, reference="plain"):
    """Step time of `case` over `reference` in a row of the steps part, as "1.23": the ratio of
    their best epochs (see STEP_REPEATS)."""
    return _ratio(row[f"{case}_ms"], row[f"{reference}_ms"])


def _spiral_share(row):
    """Reallocation plus recompilation as a share of the spiral run's `fit`."""
    return (row["reallocation_s"] + row["recompile_s"]) / row["wall_s"]


def _grid_comparison(task):
    """`(adaptive run, best grid run, grid total seconds, within 1 point)` for one task."""
    adaptive = next(r for r in task["runs"] if r["width"] is None)
    grid = [r for r in task["runs"] if r["width"] is not None]
    best = max(grid, key=lambda r: r["test_accuracy"])
    within = adaptive["test_accuracy"] >= best["test_accuracy"] - 0.01
    return adaptive, best, sum(r["wall_s"] for r in grid), within


def _memory_rows(results):
    """`{width: {variant: row}}` of the memory part."""
    by_width = {}
    for row in results.get("memory", []):
        by_width.setdefault(row["width"], {})[row["variant"]] = row
    return by_width


def _targets(all_results, backends):
    """The targets of the performance issue, each with what the tables above reached."""
    out = [
        "## Against the targets",
        "",
        "Computed from the tables above. Step ratio: the worst settled ratio at widths >= 256",
        "(target <= 1.15 on JAX and TensorFlow, <= 1.25 on PyTorch). Share: reallocation plus",
        "recompilation in the spiral run with the default policy (target <= 5%). Memory: the",
        "worst of the settled state and peak RSS ratios (target <= 1.5; while widths move, see",
        "the table). Time: adaptive / grid wall time, and whether the adaptive run is within 1",
        "point of the grid's best (target <= 0.35 and yes), per task.",
        "",
        "| backend | step ratio | share | memory ratio | time to accuracy |",
        "|---|---|---|---|---|",
    ]
    for backend in backends:
        results = all_results[backend]
        limit = 1.25 if backend.startswith("torch") else 1.15
        steps = [r["settled_ms"] / r["plain_ms"] for r in results.get("steps", []) if r["width"] >= 256]
        step = f"{max(steps):.2f} ({'met' if max(steps) <= limit else 'not met'})" if steps else "-"
        default = next(iter(results.get("spiral", [])), None)
        share = "-"
        if default is not None:
            value = _spiral_share(default)
            share = f"{100 * value:.1f}% ({'met' if value <= 0.05 else 'not met'})"
        memory = _memory_rows(results).get(max(MEMORY_WIDTHS), {})
        mem = "-"
        if len(memory) == 3:
            plain = memory["plain"]
            value = max(
                memory["settled"]["state_bytes"] / plain["state_bytes"],
                memory["settled"]["peak_rss_growth_kib"] / plain["peak_rss_growth_kib"],
            )
            mem = f"{value:.2f} ({'met' if value <= 1.5 else 'not met'})"
        times = []
        for task in results.get("accuracy", []):
            adaptive, _, total, within = _grid_comparison(task)
            ratio = adaptive["wall_s"] / total
            met = "met" if ratio <= 0.35 and within else "not met"
            times.append(f"{task['task']}: {ratio:.2f}, {'yes' if within else 'no'} ({met})")
        out.append(f"| {backend} | {step} | {share} | {mem} | {'; '.join(times) or '-'} |")
    return out + [""]


def _headroom_percent(all_results):
    """The settled headroom the steps part measured with, e.g. "2%" (the controller's default
    when it ran)."""
    for results in all_results.values():
        for row in results.get("steps", []):
            if "settled_headroom" in row:
                return f"{100 * row['settled_headroom']:g}%"
    return "5%"  # results written before the headroom was recorded


def _final_shapes(row):
    """"width/capacity, ..." of each adaptive layer at the end of a training run's row."""
    return ", ".join(
        f"{row['final_widths'][k]}/{row['final_capacities'][k]}" for k in row["final_widths"]
    )


def _step_rows(all_results, backends, cells):
    """Table rows of the steps part: backend, width and batch, then the strings `cells(row)`
    gives for each measured row (None leaves the row out)."""
    rows = []
    for backend in backends:
        for row in all_results[backend].get("steps", []):
            values = cells(row)
            if values is not None:
                rows.append(f"| {backend} | {row['width']} | {row['batch']} | {' | '.join(values)} |")
    return rows


def _drift_section():
    """The table of `benchmarks/drift.py` (drifting widths and repeated fit calls), if run."""
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    import drift

    rows = []
    for backend in BACKENDS:
        path = os.path.join(RESULTS, f"drift_{backend}.json")
        if os.path.exists(path):
            with open(path) as f:
                rows += json.load(f)
    if not rows:
        return []
    return [
        "## Drifting widths and repeated fit calls",
        "",
        "Generated by `python benchmarks/drift.py` (then `--render-only` here). Two",
        "`AdaptiveDense(initial_units=256)` layers on 25,600 examples of random 10-class",
        "labels (64 features, batch 128): `fit(epochs=3)`, then `fit(epochs=1)`",
        f"{rows[0]['fits']} times, as a user writes it (a new controller per fit). Each pair runs",
        "twice from one seed; the fastest run of each counts. The plain Keras MLP has the",
        "adaptive model's final widths and runs the same schedule in the same process. Ratio =",
        "adaptive / plain",
        "seconds per step over the whole run, every compilation, reallocation and width search",
        "included. *rebuilds*: reallocations (each one recompiles the step on JAX and TensorFlow);",
        "*measured rebuild s*: the controller's estimate of one rebuild's cost at the end. The",
        "policy and the targets: [capacity-policy.md](capacity-policy.md).",
        "",
        drift.table(rows),
        "",
    ]


def render(all_results):
    """docs/performance.md from the results of each backend."""
    out = [
        "# Performance: the cost of adaptivity",
        "",
        "Generated by `python benchmarks/performance.py` (this page is overwritten; do not edit",
        "numbers by hand). Every ratio divides two measurements taken in the same process, on this",
        "project's CI machine class (2 CPU cores, no GPU) unless a section says otherwise. Raw",
        "figures: `benchmarks/results/performance_<backend>.json`.",
        "",
    ]
    # CPU rows first, then tagged machines (e.g. "jax (h100)").
    backends = sorted(all_results, key=lambda label: ("(" in label, label))

    out += [
        "## Step time at equal active width",
        "",
        "Two hidden layers of the given active width (32 inputs, 10 classes, Adam), with the",
        "paper's gradient-learned width (`width_learning=\"gradient\"`; what the default width",
        "search adds: the next section). *settled*: the",
        "capacity the controller keeps once a width stops moving (width + "
        f"{_headroom_percent(all_results)}, at least 2 units,",
        "rounded up to a multiple of 8, at least 64); *moving*: the capacity right after a reallocation",
        "(2 x width); *capacity = width*: no masked unit at all, i.e. what the method's per-step",
        "computation (width, mask, importance, prior) costs by itself. All include the",
        "controller's width check every 8 steps. Ratio = adaptive / plain Keras, best epoch of",
        f"each case over {STEP_REPEATS} interleaved rounds (on this shared machine an epoch runs",
        "either unloaded or about twice as slow). *plain + L2*: the plain MLP with an L2 penalty",
        "on its hidden layers at the adaptive prior's scale, i.e. what the method's weight prior",
        "costs by itself.",
        "*plain at settled capacity*: a plain MLP as wide as the settled capacity, i.e. what the",
        "settled size costs with no adaptive computation at all.",
        "",
        "| backend | width | batch | plain ms/step | settled ratio | moving ratio | "
        "capacity = width ratio | plain + L2 ratio | settled / (plain + L2) | "
        "plain at settled capacity |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    out += _step_rows(
        all_results,
        backends,
        lambda row: [
            f"{row['plain_ms']:.2f}",
            *(_step_ratio(row, case) for case in ("settled", "moving", "exact", "plain_l2")),
            _step_ratio(row, "settled", "plain_l2"),
            _step_ratio(row, "plain_settled") if "plain_settled_ms" in row else "-",
        ],
    )
    out += [""]

    out += [
        "### What the per-step computation is made of",
        "",
        "The *capacity = width* model of the table above, measured in the same run, with one part",
        "switched off at a time: *no width gradient*: the width parameters are not trainable, so",
        "no step computes their gradient (the importance still scales the outputs); *no prior*:",
        "`weight_prior_scale=None`; *no checks*: the controller reads no width inside an epoch",
        "(`check_every` larger than the epoch). Ratio = adaptive / plain Keras; the gap between a",
        "column and *capacity = width* is what that part costs.",
        "",
        "| backend | width | batch | capacity = width ratio | no width gradient | no prior | "
        "no checks |",
        "|---|---|---|---|---|---|---|",
    ]
    breakdown = ("exact", "exact_no_width_gradient", "exact_no_prior", "exact_no_checks")
    out += _step_rows(
        all_results,
        backends,
        # Results measured before this table existed have no breakdown: left out.
        lambda row: [_step_ratio(row, case) for case in breakdown]
        if "exact_no_prior_ms" in row
        else None,
    )
    out += [""]

    out += [
        "## What the width search adds",
        "",
        "The width search (`width_learning=\"search\"`, the default) adds two costs to the",
        "paper's per-step computation: the stochastic prefixes, a mask over the units of half the",
        "batch's examples in every training step, and a search every 128 steps: the probe (2048",
        "training examples) scored with each layer cut to prefixes (here: the whole model, the",
        "layer cut to nothing and 5 prefixes per layer, the most a search scores). Two",
        "AdaptiveDense layers at capacity = width (32 inputs, 10 classes, Adam, batch 128),",
        "best epoch of each case over interleaved rounds. *paper*: `width_learning=\"gradient\"`;",
        "*prefixes*: the search's training step; *search, per step*: one search's time / 128.",
        "Ratio = adaptive / plain Keras.",
        "",
        "| backend | width | plain ms/step | paper ratio | prefixes ratio | one search ms | "
        "prefixes + search per step, ratio |",
        "|---|---|---|---|---|---|---|",
    ]
    for backend in backends:
        for row in all_results[backend].get("search", []):
            amortized = row["prefixes_ms"] + row["search_ms"] / row["search_every"]
            out.append(
                f"| {backend} | {row['width']} | {row['plain_ms']:.2f} | "
                f"{_ratio(row['paper_ms'], row['plain_ms'])} | "
                f"{_ratio(row['prefixes_ms'], row['plain_ms'])} | {row['search_ms']:.0f} | "
                f"{_ratio(amortized, row['plain_ms'])} |"
            )
    out += [""]

    out += [
        "## Reallocation and recompilation in a training run",
        "",
        "Hard two-spiral task (5000 points, 2 turns, 80% for training), two AdaptiveDense layers",
        f"from {SPIRAL_INITIAL_UNITS} units (capacity 64, the floor; {2 * SPIRAL_INITIAL_UNITS} without it),",
        "Adam 0.01, batch 128, 60 epochs. *realloc*: time inside the controller's",
        "reallocations; *recompile*: the extra time of the first step after each rebuild over the",
        "median step. Shares are of the whole `fit`. *first step*: the first step of the fit,",
        "which compiles the step as it does for a plain model (the scale of one recompilation).",
        "",
        "| backend | policy | fit s | first step s | realloc s | recompile s | share | rebuilds | "
        "per layer | final width / capacity | test acc |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for backend in backends:
        for row in all_results[backend].get("spiral", []):
            share = _spiral_share(row)
            per_layer = ", ".join(str(v) for v in row["reallocations_per_layer"].values()) or "0"
            shapes = _final_shapes(row)
            out.append(
                f"| {backend} | {row['policy']} | {row['wall_s']:.1f} | {row['first_step_s']:.2f} | "
                f"{row['reallocation_s']:.2f} | {row['recompile_s']:.2f} | {100 * share:.1f}% | "
                f"{row['rebuilds']} | {per_layer} | {shapes} | {row['test_accuracy']:.3f} |"
            )
    out += [""]

    out += [
        "## Settling: masked units against rebuilds",
        "",
        f"Two AdaptiveDense layers from {SETTLING_UNITS} units (capacity 512), Adam 0.001, on two",
        "tasks where the widths keep drifting after they stop moving fast: scikit-learn's digits",
        "(batch 64; the widths shrink slowly) and memorising random labels (4096 points, 32",
        "features, 10 classes, batch 128; the widths grow). *masked share*: the share of the",
        "model's weights that belong to masked units (the work a step does for nothing), averaged",
        "over the epoch ends. *settle / regrow / grow / shrink*: reallocations of each kind (a",
        "rebuild can carry several). *accuracy*: test accuracy on digits, training accuracy on",
        "random labels. Policies: the settled headroom (the margin above a settled width), and",
        "whether a settled layer that reaches its capacity regrows by doubling margins and stays",
        "settled (*regrowth*) or doubles its capacity and moves again (*no regrowth*, the policy",
        "before regrowth existed).",
        "",
        "| backend | task | policy | fit s | rebuilds | settle / regrow / grow / shrink | "
        "masked share | final width / capacity | accuracy |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for backend in backends:
        for row in all_results[backend].get("settling", []):
            kinds = " / ".join(
                str(row["reasons"].get(k, 0)) for k in ("settle", "regrow", "grow", "shrink")
            )
            shapes = _final_shapes(row)
            out.append(
                f"| {backend} | {row['task']} | {row['policy']} | {row['wall_s']:.1f} | "
                f"{row['rebuilds']} | {kinds} | {100 * row['mean_masked_share']:.0f}% | "
                f"{shapes} | {row['accuracy']:.3f} |"
            )
    out += [""]

    out += _drift_section()
    out += [
        "## Peak memory",
        "",
        "Two hidden layers of the given active width, batch 1024, 3 epochs, each model trained in",
        "a fresh process. *state*: bytes of the model and optimizer variables (exact); *peak RSS*:",
        "growth of the process' peak resident memory during build and training (includes the",
        "backend's compilation and allocator caches; the median of 3 processes per model, run",
        "interleaved: one process varies by tens of MiB). Ratios are adaptive / plain; *settled extra",
        "RSS*: settled minus plain peak RSS, in MiB. The narrow model shows the part of the extra",
        "memory that does not grow with the model.",
        "",
        "| backend | width | plain state MiB | settled state | moving state | plain peak RSS MiB | "
        "settled peak RSS | moving peak RSS | settled extra RSS MiB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for backend in backends:
        for width, rows in sorted(_memory_rows(all_results[backend]).items()):
            if len(rows) != 3:
                continue
            plain = rows["plain"]
            extra = (rows["settled"]["peak_rss_growth_kib"] - plain["peak_rss_growth_kib"]) / 1024
            out.append(
                f"| {backend} | {width} | {plain['state_bytes'] / 2**20:.2f} | "
                f"{_ratio(rows['settled']['state_bytes'], plain['state_bytes'])} | "
                f"{_ratio(rows['moving']['state_bytes'], plain['state_bytes'])} | "
                f"{plain['peak_rss_growth_kib'] / 1024:.0f} | "
                f"{_ratio(rows['settled']['peak_rss_growth_kib'], plain['peak_rss_growth_kib'])} | "
                f"{_ratio(rows['moving']['peak_rss_growth_kib'], plain['peak_rss_growth_kib'])} | "
                f"{extra:.0f} |"
            )
    out += [""]

    out += [
        "## Time to accuracy: one adaptive run vs the grid of fixed widths",
        "",
        "Two hidden layers; the grid is the paper's {8, 16, 24, 128, 256} units per layer, each",
        "width one run; the adaptive run starts at 16 units per layer (capacity 64). Same optimizer (Adam",
        "0.01), batch 128, epochs and seed for every run; test accuracy at the last epoch.",
        "",
        "| backend | task | grid: best acc (width) | grid total s | adaptive acc | adaptive s | "
        "adaptive / grid time | within 1 point | learned widths | rebuilds |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for backend in backends:
        for task in all_results[backend].get("accuracy", []):
            adaptive, best, total, within = _grid_comparison(task)
            widths = ", ".join(str(v) for v in adaptive["learned_widths"].values())
            out.append(
                f"| {backend} | {task['task']} | {best['test_accuracy']:.3f} ({best['width']}) | "
                f"{total:.1f} | {adaptive['test_accuracy']:.3f} | {adaptive['wall_s']:.1f} | "
                f"{_ratio(adaptive['wall_s'], total)} | {'yes' if within else 'no'} | {widths} | "
                f"{adaptive.get('rebuilds', '')} |"
            )
    out += [""]
    out += _targets(all_results, backends)
    notes = os.path.join(ROOT, "benchmarks", "performance_notes.md")
    if os.path.exists(notes):
        with open(notes) as f:
            out += [f.read().rstrip(), ""]
    return "\n".join(out)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=BACKENDS)
    parser.add_argument("--parts", nargs="+", default=list(PARTS), choices=PARTS)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, results not saved")
    parser.add_argument("--render-only", action="store_true")
    parser.add_argument("--tag", help="name of the machine, e.g. h100 (results kept apart)")
    parser.add_argument("--results-dir", help="where to write the results (default benchmarks/results)")
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        quick = "quick" in args.worker
        if args.worker[0] == "memory_one":
            _, variant, width, *_ = args.worker
            result = run_memory_one(variant, int(width), quick)
        else:
            runs = {
                "steps": run_steps,
                "search": run_search,
                "spiral": run_spiral,
                "settling": run_settling,
                "accuracy": run_accuracy,
            }
            result = {part: runs[part](quick) for part in args.worker if part in runs}
        print(json.dumps(result))
        return

    all_results = {}
    for name in sorted(os.listdir(RESULTS)) if os.path.isdir(RESULTS) else []:
        if name.startswith("performance_") and name.endswith(".json"):
            backend, _, tag = name[len("performance_") : -len(".json")].partition("-")
            with open(os.path.join(RESULTS, name)) as f:
                all_results[_label(backend, tag or None)] = json.load(f)
    if not args.render_only:
        folder = args.results_dir or RESULTS
        for backend in args.backends:
            all_results[_label(backend, args.tag)] = measure(
                backend, args.parts, args.quick, args.tag, folder
            )
    page = render(all_results)
    print(page)
    if not args.quick:
        with open(PAGE, "w") as f:
            f.write(page + "\n")


if __name__ == "__main__":
    main()
