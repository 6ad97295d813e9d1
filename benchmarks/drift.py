"""Drifting widths and repeated `fit()` calls: adaptive against plain Keras, over a whole run.

    python benchmarks/drift.py                       # TensorFlow, JAX, PyTorch; both width modes
    python benchmarks/drift.py --backends jax --fits 8

The case of issue 23: two `AdaptiveDense(initial_units=256)` layers on 25,600 examples of random
10-class labels (64 features, batch 128): `fit(epochs=3)`, then `fit(epochs=1)` again and again,
while the widths keep moving. The plain Keras MLP has the adaptive model's final widths and runs
the same schedule in the same process. Ratio = adaptive seconds per step / plain seconds per
step, averaged over the whole run: every compilation, reallocation and width search included.
Each pair runs `--repeats` times from the same seed; the fastest run of each counts.
Each backend runs in its own process; results go to benchmarks/results/drift_<backend>.json and
the table is printed (docs/performance.md, "Drifting widths and repeated fit calls").
"""

import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "benchmarks", "results")
BACKENDS = ("tensorflow", "jax", "torch")
MODES = ("gradient", "search")


def run_one(mode, fits, repeats):
    """`repeats` runs of the pair (adaptive, then plain), each from the same seed: the figures
    of the fastest of each (on this shared machine a run is either unloaded or much slower)."""
    runs = [run_pair(mode, fits) for _ in range(repeats)]
    best = dict(min(runs, key=lambda r: r["adaptive_ms_per_step"]))
    best["plain_ms_per_step"] = min(r["plain_ms_per_step"] for r in runs)
    best["ratio"] = best["adaptive_ms_per_step"] / best["plain_ms_per_step"]
    best["repeats"] = [
        {k: r[k] for k in ("adaptive_ms_per_step", "plain_ms_per_step", "final_widths")}
        for r in runs
    ]
    return best


def run_pair(mode, fits):
    sys.path.insert(0, ROOT)
    import keras
    import numpy as np

    import keras_awn
    from keras_awn._engine import training_state

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(25600, 64)).astype("float32")
    y = rng.integers(0, 10, size=25600)

    def schedule(model, callbacks=None):
        model.compile(
            keras.optimizers.Adam(1e-3),
            keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        started, steps = time.perf_counter(), 0
        for epochs in [3] + [1] * fits:
            extra = callbacks() if callbacks else None
            model.fit(x, y, batch_size=128, epochs=epochs, verbose=0, callbacks=extra)
            steps += epochs * len(x) // 128
        return (time.perf_counter() - started) / steps

    controllers = []

    def controller():
        controllers.append(keras_awn.callbacks.WidthController())
        return [controllers[-1]]

    adaptive = keras_awn.Sequential([
        keras.Input((64,)),
        keras_awn.layers.AdaptiveDense(initial_units=256, activation="relu", width_learning=mode),
        keras_awn.layers.AdaptiveDense(initial_units=256, activation="relu", width_learning=mode),
        keras.layers.Dense(10),
    ])
    adaptive_step = schedule(adaptive, controller)
    layers = keras_awn.adaptive_layers(adaptive)
    widths = [layer.active_units for layer in layers]
    plain = keras.Sequential([
        keras.Input((64,)),
        keras.layers.Dense(widths[0], activation="relu"),
        keras.layers.Dense(widths[1], activation="relu"),
        keras.layers.Dense(10),
    ])
    plain_step = schedule(plain)
    ledger = training_state.training_ledger(adaptive)
    return {
        "backend": keras.backend.backend(),
        "mode": mode,
        "fits": fits,
        "final_widths": widths,
        "final_capacities": [layer.capacity for layer in layers],
        "rebuilds": sum(c.rebuilds for c in controllers),
        "searches": sum(len({e["step"] for e in c.searches}) for c in controllers),
        "measured_rebuild_s": ledger.rebuild_seconds,
        "adaptive_ms_per_step": 1000 * adaptive_step,
        "plain_ms_per_step": 1000 * plain_step,
        "ratio": adaptive_step / plain_step,
    }


def table(rows):
    lines = [
        "| backend | widths learned by | final widths / capacities | rebuilds | measured rebuild s "
        "| plain ms/step | adaptive ms/step | ratio |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        shapes = ", ".join(f"{w}/{c}" for w, c in zip(r["final_widths"], r["final_capacities"]))
        rebuild = r["measured_rebuild_s"]
        lines.append(
            f"| {r['backend']} | {r['mode']} | {shapes} | {r['rebuilds']} | "
            f"{'-' if rebuild is None else f'{rebuild:.2f}'} | {r['plain_ms_per_step']:.2f} | "
            f"{r['adaptive_ms_per_step']:.2f} | {r['ratio']:.2f} |"
        )
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=BACKENDS)
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--fits", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--tag", help="name of the machine, e.g. h100 (results kept apart)")
    parser.add_argument("--results-dir", default=RESULTS, help="where to write the results")
    parser.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        mode, fits, repeats = args.worker
        print(json.dumps(run_one(mode, int(fits), int(repeats))))
        return
    os.makedirs(args.results_dir, exist_ok=True)
    rows = []
    for backend in args.backends:
        results = []
        for mode in args.modes:
            env = dict(os.environ, KERAS_BACKEND=backend)
            out = subprocess.run(
                [sys.executable, __file__, "--worker", mode, str(args.fits), str(args.repeats)],
                env=env, capture_output=True, text=True, check=True,
            ).stdout
            results.append(json.loads(out.strip().splitlines()[-1]))
        name = f"drift_{backend}-{args.tag}.json" if args.tag else f"drift_{backend}.json"
        with open(os.path.join(args.results_dir, name), "w") as f:
            json.dump(results, f, indent=1)
        rows += results
    print(table(rows))


if __name__ == "__main__":
    main()
