"""Reproduces the paper's claims on every task and writes docs/results.md with its figures.

    KERAS_BACKEND=jax python -m examples.reproduce
    KERAS_BACKEND=torch python -m examples.reproduce
    python -m examples.reproduce --render-only     # redraw docs/results.md from the saved results

For each task of `examples/tasks.py`: the fixed-width grid {8, 16, 24, 128, 256} and the adaptive
model (keras_awn's recommended settings; the paper's method beside them on the MLP tasks),
3 seeds each. Then: truncation curves (adaptive vs a fixed-width MLP of the same widths), the
learned width by task difficulty, dynamic compression (`WidthAnnealing`), and the learned widths
from several initial widths and batch sizes.

Each backend's results go to `benchmarks/results/reproduce_<backend>.json`; `docs/results.md`
and `docs/results/<backend>/*.png` are rendered from every backend's saved results, so running
the command on a second backend adds its section. Nothing in the page is edited by hand. It also
redraws the settings study's pages and figures (docs/study) from their saved results.
"""

import argparse
import glob
import importlib.util
import json
import os
import sys
import time

import keras
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from examples import annealing  # noqa: E402
from examples import compare  # noqa: E402
from examples import tasks as task_catalogue  # noqa: E402
from keras_awn import plotting  # noqa: E402

FRACTIONS = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
DIFFICULTY = ("moons", "spiral", "hard_spiral")
STABILITY_TASK = "spiral"
STABILITY_INITIAL_UNITS = (4, 16, 64)
STABILITY_BATCH_SIZES = (32, 128)
BACKENDS = ("jax", "tensorflow", "torch")


def _task(name, epochs=None, **overrides):
    return task_catalogue.get(name, **({} if epochs is None else {"epochs": epochs}), **overrides)


def truncation_study(task, seed=0, log=print):
    """Adaptive model vs a fixed-width MLP with its learned widths, cut by each fraction."""
    adaptive = compare.run_adaptive(task, seed, keep_model=True)
    widths = list(adaptive["widths"].values())
    train, test = task.data(seed)
    keras.utils.set_random_seed(seed)
    fixed = task.compile(task.fixed_model_like(widths))
    task.fit(fixed, train)
    curves = {
        "adaptive": plotting.truncation_curve(adaptive["model"], test["x"], test["y"], FRACTIONS),
        "fixed width": plotting.truncation_curve(fixed, test["x"], test["y"], FRACTIONS),
    }
    log(f"{task.name} truncation (widths {widths}): {curves}")
    return {"widths": widths, "fractions": FRACTIONS, "curves": curves}


def stability_study(epochs=None, log=print):
    """Learned widths and accuracy of one task from several initial widths and batch sizes."""
    runs = []
    for batch_size in STABILITY_BATCH_SIZES:
        for initial_units in STABILITY_INITIAL_UNITS:
            task = _task(STABILITY_TASK, epochs, initial_units=initial_units, batch_size=batch_size)
            run = compare.run_adaptive(task, seed=0)
            run.update(initial_units=initial_units, batch_size=batch_size)
            runs.append(run)
            log(
                f"stability: initial {initial_units}, batch {batch_size}: accuracy "
                f"{run['accuracy']:.3f} widths {list(run['widths'].values())}"
            )
    return runs


def annealing_study(epochs, start):
    result = annealing.main(["--epochs", str(epochs), "--start", str(start)])
    return {"start": start, **result}


def run_all(arguments, log=print):
    backend = keras.backend.backend()
    results = {
        "backend": backend,
        "command": f"KERAS_BACKEND={backend} python -m examples.reproduce "
        + " ".join(arguments.argv),
        "seeds": arguments.seeds,
        "widths": arguments.widths,
        "tasks": {},
        "truncation": {},
    }
    started = time.perf_counter()
    for name in arguments.tasks:
        task = _task(name, arguments.epochs)
        variants = ("recommended", "paper") if task.truncatable else ("recommended",)
        log(f"== {task.title} ({task.epochs} epochs)")
        results["tasks"][name] = compare.compare(task, arguments.seeds, arguments.widths, variants, log=log)
        results["tasks"][name]["epochs"] = task.epochs
        if task.truncatable:
            results["truncation"][name] = truncation_study(task, log=log)
    log("== stability across initial widths and batch sizes")
    results["stability"] = stability_study(arguments.epochs, log=log)
    log("== dynamic compression")
    annealing_epochs = arguments.epochs or 80
    results["annealing"] = annealing_study(annealing_epochs, max(1, (3 * annealing_epochs) // 8))
    results["seconds"] = time.perf_counter() - started
    return results


# ---------------------------------------------------------------------------------------------
# Rendering: docs/results.md and the figures, from the saved results of every backend.


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(figure, folder, name):
    path = os.path.join(folder, name)
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    _pyplot().close(figure)
    return path


def figures(results, folder):
    """Writes the backend's PNGs; returns `{key: path}`."""
    plt = _pyplot()
    os.makedirs(folder, exist_ok=True)
    written = {}
    for name, task in results["tasks"].items():
        figure, (left, right) = plt.subplots(1, 2, figsize=(10, 3.5))
        first = next(r for r in task["adaptive"] if r["variant"] == "recommended")
        plotting.plot_widths({f"{k}_width": v for k, v in first["width_history"].items()}, ax=left,
                             title=f"{name}: learned widths (seed 0)")
        points = {"fixed width": [(r["parameters"], r["accuracy"]) for r in task["fixed"]]}
        for variant in dict.fromkeys(r["variant"] for r in task["adaptive"]):
            points[f"adaptive ({variant})"] = [
                (r["parameters"], r["accuracy"]) for r in task["adaptive"] if r["variant"] == variant
            ]
        plotting.plot_accuracy_vs_parameters(points, ax=right, title=f"{name}: accuracy vs parameters")
        written[name] = _save(figure, folder, f"{name}.png")
    if results["truncation"]:
        count = len(results["truncation"])
        figure, axes = plt.subplots(1, count, figsize=(3.6 * count, 3.3), squeeze=False)
        for ax, (name, study) in zip(axes[0], results["truncation"].items()):
            plotting.plot_truncation(study["fractions"], study["curves"], ax=ax,
                                     title=f"{name} (widths {study['widths']})")
        written["truncation"] = _save(figure, folder, "truncation.png")
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 3.5))
    study = results["annealing"]
    for label in ("annealed", "reference"):
        rows = np.asarray(study[label], dtype="float64")
        left.plot(rows[:, 0], rows[:, 1], label=label)
        right.plot(rows[:, 0], rows[:, 2], label=label)
    for ax in (left, right):
        ax.axvline(study["start"], color="grey", linestyle=":", label="annealing starts")
        ax.legend(fontsize=8)
    left.set(xlabel="epoch", ylabel="total units", title="Dynamic compression: total width")
    right.set(xlabel="epoch", ylabel="test accuracy", title="Dynamic compression: test accuracy")
    written["annealing"] = _save(figure, folder, "annealing.png")
    figure, ax = plt.subplots(figsize=(6, 3.5))
    for run in results["stability"]:
        total = np.sum(list(run["width_history"].values()), axis=0)
        ax.plot(range(1, len(total) + 1), total,
                linestyle="-" if run["batch_size"] == STABILITY_BATCH_SIZES[0] else "--",
                label=f"initial {run['initial_units']}, batch {run['batch_size']}")
    ax.set(xlabel="epoch", ylabel="total units (2 layers)", title=f"{STABILITY_TASK}: from several starts")
    ax.legend(fontsize=7)
    written["stability"] = _save(figure, folder, "stability.png")
    return written


def _total_widths(runs):
    return [sum(run["widths"].values()) for run in runs]


def summary_table(results):
    lines = [
        "| task | best fixed width (accuracy) | adaptive accuracy | gap (points) | learned widths, "
        "mean (min-max) per layer | adaptive run / whole grid, wall time |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, task in results["tasks"].items():
        width, best = compare.best_fixed(task)
        runs = [r for r in task["adaptive"] if r["variant"] == "recommended"]
        accuracy = [r["accuracy"] for r in runs]
        per_layer = np.asarray([list(r["widths"].values()) for r in runs])
        widths = ", ".join(
            f"{column.mean():.0f} ({column.min()}-{column.max()})" for column in per_layer.T
        )
        adaptive_seconds, grid_seconds = compare.wall_times(task, "recommended")
        lines.append(
            f"| {name} | {width} ({best:.3f}) | {np.mean(accuracy):.3f} +- {np.std(accuracy):.3f} | "
            f"{100 * (np.mean(accuracy) - best):+.1f} | {widths} | "
            f"{adaptive_seconds:.0f} s / {grid_seconds:.0f} s ({100 * adaptive_seconds / grid_seconds:.0f}%) |"
        )
    return "\n".join(lines)


def claims(results):
    """One line per claim of the paper, with the verdict computed from the numbers."""
    lines = []
    within = []
    for name, task in results["tasks"].items():
        _, best = compare.best_fixed(task)
        mean = np.mean([r["accuracy"] for r in task["adaptive"] if r["variant"] == "recommended"])
        within.append((name, 100 * (mean - best)))
    held = [name for name, gap in within if gap >= -1.0]
    missed = [f"{name} ({gap:+.1f})" for name, gap in within if gap < -1.0]
    lines.append(
        f"1. **One adaptive run matches the best fixed width (within 1 point):** "
        f"{len(held)} of {len(within)} tasks"
        + (f"; not on {', '.join(missed)} points." if missed else ".")
    )
    available = [name for name in DIFFICULTY if name in results["tasks"]]
    if len(available) >= 2:
        totals = {
            name: np.mean(_total_widths([r for r in results["tasks"][name]["adaptive"] if r["variant"] == "recommended"]))
            for name in available
        }
        ordered = all(totals[a] < totals[b] for a, b in zip(available, available[1:]))
        lines.append(
            "2. **The learned width follows task difficulty:** total learned width "
            + " < ".join(f"{name} {totals[name]:.0f}" for name in available)
            + (": holds." if ordered else ": does **not** hold in this order.")
        )
    if results["truncation"]:
        verdicts = []
        for name, study in results["truncation"].items():
            adaptive, fixed = (np.asarray(study["curves"][k]) for k in ("adaptive", "fixed width"))
            area = (adaptive - fixed).mean() * 100
            verdicts.append(f"{name} {area:+.1f}")
        lines.append(
            "3. **The adaptive network truncates more gracefully than a fixed-width one of the same "
            "widths** (mean accuracy difference over the cut fractions, points): "
            + ", ".join(verdicts) + "."
        )
    study = results["annealing"]
    at_start, final = study["annealed"][study["start"] - 1], study["annealed"][-1]
    reference = study["reference"][-1]
    lines.append(
        f"4. **Annealing the width prior compresses the network while accuracy holds:** total width "
        f"{at_start[1]} -> {final[1]} (unannealed twin: {reference[1]}), test accuracy "
        f"{at_start[2]:.3f} -> {final[2]:.3f} (twin: {reference[2]:.3f})."
    )
    stability = results["stability"]
    totals = _total_widths(stability)
    accuracies = [run["accuracy"] for run in stability]
    lines.append(
        f"5. **Stable across initial widths and batch sizes** ({STABILITY_TASK}, initial widths "
        f"{list(STABILITY_INITIAL_UNITS)}, batch sizes {list(STABILITY_BATCH_SIZES)}): total learned "
        f"width {min(totals)}-{max(totals)}, test accuracy {min(accuracies):.3f}-{max(accuracies):.3f}."
    )
    return "\n".join(lines)


def backend_section(results, folder, relative):
    written = figures(results, folder)

    def image(key, alt):
        return f"![{alt}]({relative}/{os.path.basename(written[key])})\n" if key in written else ""

    out = [
        f"## {results['backend']}\n",
        f"Generated by `{results['command']}` in {results['seconds'] / 60:.0f} minutes on "
        f"{results.get('machine', 'this machine')}: {results['seeds']} seeds, fixed-width grid "
        f"{results['widths']}. Test accuracy at the last epoch.\n",
        "### The paper's claims\n",
        claims(results) + "\n",
        "### Summary\n",
        summary_table(results) + "\n",
        "### Truncation\n",
        "Accuracy as each hidden layer loses a growing fraction of its units: the adaptive model "
        "(seed 0) loses its least important units, a plain MLP trained with the same widths, "
        "data and epochs loses its last ones.\n",
        image("truncation", "truncation"),
    ]
    for name, study in results["truncation"].items():
        out.append(f"\n{name}, widths {study['widths']}:\n")
        out.append("| fraction removed | " + " | ".join(f"{f:.1f}" for f in study["fractions"]) + " |")
        out.append("| --- |" + " --- |" * len(study["fractions"]))
        for label, curve in study["curves"].items():
            out.append(f"| {label} | " + " | ".join(f"{a:.3f}" for a in curve) + " |")
    out += [
        "\n### Dynamic compression\n",
        f"`examples/annealing.py`: from epoch {results['annealing']['start']}, `WidthAnnealing` lowers "
        "the width prior's scale linearly to 10% of its value; the twin is trained without it.\n",
        image("annealing", "annealing"),
        "### Initial widths and batch sizes\n",
        "| initial width | batch size | test accuracy | learned widths | seconds |",
        "| --- | --- | --- | --- | --- |",
    ]
    for run in results["stability"]:
        out.append(
            f"| {run['initial_units']} | {run['batch_size']} | {run['accuracy']:.3f} | "
            f"{', '.join(map(str, run['widths'].values()))} | {run['seconds']:.1f} |"
        )
    out.append("\n" + image("stability", "stability"))
    for name, task in results["tasks"].items():
        out += [
            f"### {task['title']}\n",
            f"{task['epochs']} epochs; `examples/tasks.py` holds the models and settings.\n",
            compare.table(task) + "\n",
            image(name, name),
        ]
    return "\n".join(out)


def render(results_folder, docs_folder):
    """Writes docs/results.md (and its figures) from every backend's saved results."""
    sections = []
    for backend in BACKENDS:
        path = os.path.join(results_folder, f"reproduce_{backend}.json")
        if not os.path.exists(path):
            continue
        with open(path) as f:
            results = json.load(f)
        sections.append(
            backend_section(results, os.path.join(docs_folder, "results", backend), f"results/{backend}")
        )
    if not sections:
        raise FileNotFoundError(f"No reproduce_<backend>.json in {results_folder}: run the command first.")
    header = (
        "# Results: the paper's claims, reproduced\n\n"
        "Everything on this page (numbers and figures) is written by `python -m examples.reproduce` "
        "from the results it saves in `benchmarks/results/`; nothing is edited by hand. Each "
        "backend's section comes from a run on that backend. The tasks, models and settings are "
        "in `examples/tasks.py`; each task also runs on its own "
        "(`python examples/compare.py <task>`).\n\n"
        "The adaptive models use keras_awn's recommended settings (its defaults: the width "
        "search, [semantics.md](semantics.md); [choosing-settings.md](choosing-settings.md)); on "
        "the MLP tasks the paper's method (`importance_normalization=\"sum\"`, "
        "`width_learning=\"gradient\"`) is shown beside them. Adaptive parameter counts are "
        "those of the stripped model (`keras_awn.strip`).\n\n"
    )
    path = os.path.join(docs_folder, "results.md")
    with open(path, "w") as f:
        f.write(header + "\n\n".join(sections) + "\n")
    return path


def render_settings_study(results_folder):
    """Redraws docs/study (the settings study's tables and figures) from its saved results, so
    that this command regenerates every figure in docs/. Rerunning the study itself is
    `benchmarks/settings_study.py` (about 25 minutes per backend)."""
    spec = importlib.util.spec_from_file_location(
        "settings_study", os.path.join(ROOT, "benchmarks", "settings_study.py")
    )
    study = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(study)
    for path in sorted(glob.glob(os.path.join(results_folder, "settings_*.json"))):
        name = os.path.basename(path)[len("settings_") : -len(".json")]
        with open(path) as f:
            results = json.load(f)
        command = results.get("command", f"KERAS_BACKEND={results['backend']} python benchmarks/settings_study.py")
        study.render(results, list(results["fixed"]), study._variants_in(results), name, command)


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=list(task_catalogue.TASKS),
                        choices=list(task_catalogue.TASKS))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--widths", type=int, nargs="+", default=list(compare.GRID))
    parser.add_argument("--epochs", type=int, default=None, help="override every task's epochs (smoke runs)")
    parser.add_argument("--results", default=os.path.join(ROOT, "benchmarks", "results"),
                        help="folder of the saved results")
    parser.add_argument("--docs", default=os.path.join(ROOT, "docs"), help="folder of results.md")
    parser.add_argument("--machine", default="2 CPU cores", help="where it ran, for the page")
    parser.add_argument("--render-only", action="store_true", help="train nothing; redraw the page")
    arguments = parser.parse_args(argv)
    arguments.argv = argv
    if not arguments.render_only:
        results = run_all(arguments)
        results["machine"] = arguments.machine
        os.makedirs(arguments.results, exist_ok=True)
        with open(os.path.join(arguments.results, f"reproduce_{results['backend']}.json"), "w") as f:
            json.dump(results, f)
    path = render(arguments.results, arguments.docs)
    render_settings_study(arguments.results)
    print(f"wrote {path}")
    return path


if __name__ == "__main__":
    main()
