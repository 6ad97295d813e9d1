"""One adaptive run against the grid of fixed widths, on one task of `examples/tasks.py`.

For each seed, trains the task's fixed-width model at every width of the grid (the paper's
{8, 16, 24, 128, 256}) and the adaptive model (keras_awn's recommended settings, and the paper's
normalization where asked), with the same optimizer, batches and epochs; prints the table:
test accuracy (mean +- std over seeds), learned widths, parameters and wall time.

    KERAS_BACKEND=jax python examples/compare.py moons
    KERAS_BACKEND=torch python examples/compare.py digits_cnn --seeds 1 --widths 8 128

Tasks: moons, spiral, hard_spiral, breast_cancer, digits_cnn, digits_rnn, reverse, cycles
(`examples/tasks.py`).
"""

import argparse
import os
import sys
import time

import keras
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras_awn  # noqa: E402
from examples import tasks as task_catalogue  # noqa: E402
from keras_awn import plotting  # noqa: E402

GRID = (8, 16, 24, 128, 256)


def _parameters(model):
    """Parameters of the deployed model: adaptive models are counted after `keras_awn.strip`."""
    if keras_awn.widths(model):
        model = keras_awn.strip(model)
    return int(model.count_params())


def run_fixed(task, width, seed):
    train, test = task.data(seed)
    keras.utils.set_random_seed(seed)
    model = task.compile(task.fixed_model(width))
    start = time.perf_counter()
    task.fit(model, train)
    seconds = time.perf_counter() - start
    return {
        "width": width,
        "seed": seed,
        "accuracy": task.accuracy(model, test),
        "seconds": seconds,
        "parameters": _parameters(model),
    }


def run_adaptive(task, seed, variant="recommended", keep_model=False):
    train, test = task.data(seed)
    keras.utils.set_random_seed(seed)
    model = task.compile(task.adaptive_model(**task_catalogue.VARIANTS[variant]))
    start = time.perf_counter()
    history = task.fit(model, train)
    seconds = time.perf_counter() - start
    result = {
        "variant": variant,
        "seed": seed,
        "accuracy": task.accuracy(model, test),
        "seconds": seconds,
        "parameters": _parameters(model),
        "widths": {name: int(width) for name, width in keras_awn.widths(model).items()},
        "width_history": plotting.width_histories(history),
    }
    if keep_model:
        result["model"], result["test"] = model, test
    return result


def compare(task, seeds=3, widths=GRID, variants=("recommended",), log=print):
    """Trains the grid and the adaptive variants; returns `{"fixed": [...], "adaptive": [...]}`."""
    results = {"task": task.name, "title": task.title, "fixed": [], "adaptive": []}
    for seed in range(seeds):
        for width in widths:
            run = run_fixed(task, width, seed)
            results["fixed"].append(run)
            log(f"{task.name} fixed {width} seed {seed}: accuracy {run['accuracy']:.3f} ({run['seconds']:.1f} s)")
        for variant in variants:
            run = run_adaptive(task, seed, variant)
            results["adaptive"].append(run)
            log(
                f"{task.name} adaptive ({variant}) seed {seed}: accuracy {run['accuracy']:.3f} "
                f"widths {list(run['widths'].values())} ({run['seconds']:.1f} s)"
            )
    return results


def best_fixed(results):
    """`(width, mean accuracy)` of the best grid point (mean over seeds)."""
    by_width = {}
    for run in results["fixed"]:
        by_width.setdefault(run["width"], []).append(run["accuracy"])
    width = max(by_width, key=lambda w: (np.mean(by_width[w]), -w))
    return width, float(np.mean(by_width[width]))


def wall_times(results, variant):
    """`(seconds of one adaptive run, seconds of one seed of the whole grid)`, averaged over seeds."""
    grid_seconds = sum(r["seconds"] for r in results["fixed"]) / max(1, len({r["seed"] for r in results["fixed"]}))
    adaptive_seconds = float(np.mean([r["seconds"] for r in results["adaptive"] if r["variant"] == variant]))
    return adaptive_seconds, grid_seconds


def _mean_std(values):
    return f"{np.mean(values):.3f} +- {np.std(values):.3f}"


def table(results):
    """The task's result table (markdown)."""
    lines = [
        "| model | test accuracy (mean +- std) | widths per seed | parameters | seconds per run |",
        "| --- | --- | --- | --- | --- |",
    ]
    by_width = {}
    for run in results["fixed"]:
        by_width.setdefault(run["width"], []).append(run)
    best_width, best_accuracy = best_fixed(results)
    for width, runs in sorted(by_width.items()):
        mark = " (best)" if width == best_width else ""
        lines.append(
            f"| fixed, width {width}{mark} | {_mean_std([r['accuracy'] for r in runs])} | {width} | "
            f"{runs[0]['parameters']} | {np.mean([r['seconds'] for r in runs]):.1f} |"
        )
    variants = list(dict.fromkeys(run["variant"] for run in results["adaptive"]))
    for variant in variants:
        runs = [run for run in results["adaptive"] if run["variant"] == variant]
        accuracy = [r["accuracy"] for r in runs]
        gap = 100 * (np.mean(accuracy) - best_accuracy)
        widths = "; ".join(", ".join(str(w) for w in r["widths"].values()) for r in runs)
        lines.append(
            f"| adaptive, {variant} | {_mean_std(accuracy)} ({gap:+.1f} points vs best) | {widths} | "
            f"{np.mean([r['parameters'] for r in runs]):.0f} | {np.mean([r['seconds'] for r in runs]):.1f} |"
        )
    adaptive_seconds, grid_seconds = wall_times(results, variants[0])
    lines.append(
        f"\nBest fixed width {best_width} ({best_accuracy:.3f}). One adaptive run "
        f"({variants[0]}) took {adaptive_seconds:.1f} s, {100 * adaptive_seconds / grid_seconds:.0f}% "
        f"of the grid's {grid_seconds:.1f} s (one seed of every width)."
    )
    return "\n".join(lines)


def parser(description, task_argument=False):
    parser = argparse.ArgumentParser(description=description)
    if task_argument:
        parser.add_argument("task", choices=sorted(task_catalogue.TASKS))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--widths", type=int, nargs="+", default=list(GRID), help="the fixed-width grid")
    parser.add_argument("--variants", nargs="+", default=["recommended"], choices=sorted(task_catalogue.VARIANTS))
    parser.add_argument("--epochs", type=int, default=None, help="override the task's epochs")
    return parser


def main(task_name=None, argv=None):
    """Runs the comparison for `task_name` (or the task given on the command line)."""
    arguments = parser(__doc__.splitlines()[0], task_argument=task_name is None).parse_args(argv)
    overrides = {} if arguments.epochs is None else {"epochs": arguments.epochs}
    task = task_catalogue.get(task_name or arguments.task, **overrides)
    print(f"backend: {keras.backend.backend()}  task: {task.title}  epochs: {task.epochs}")
    results = compare(task, arguments.seeds, arguments.widths, arguments.variants)
    print("\n" + table(results))
    return results


if __name__ == "__main__":
    main()
