"""Choosing the settings: adaptive-width variants against plain Keras MLPs of fixed widths.

For each task (double moon, two spirals of 1, 2 and 3 turns, scikit-learn digits) and seed, this
trains plain Keras MLPs with two hidden layers of each fixed width, and adaptive MLPs (two
AdaptiveDense layers starting at 16 units) under each variant of the settings, all with the same
optimizer, batch size and number of epochs. It records the test accuracy, the widths per epoch
and wall time, and for adaptive runs (with --diagnose) the width parameter, the importance, the
size of each loss term and the finite-difference gradient of each term with respect to the width
parameter, every epoch.

    KERAS_BACKEND=jax python benchmarks/settings_study.py                 # the full study
    KERAS_BACKEND=torch python benchmarks/settings_study.py --tasks spiral2 --variants paper recommended

Writes benchmarks/results/settings_<backend>.json and docs/study/settings_<backend>.md (tables)
and, with matplotlib installed, docs/study/*.png (figures).
"""

import argparse
import json
import os
import sys
import time

import keras
import numpy as np
from keras import ops

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import keras_awn  # noqa: E402
from keras_awn import datasets  # noqa: E402

FIXED_WIDTHS = (8, 16, 32, 64, 128, 256)
INITIAL_UNITS = 16

# Each variant: AdaptiveDense arguments and WidthController arguments.
PAPER = {"importance_normalization": "sum"}
VARIANTS = {
    # The paper: importances sum to 1, readers initialised N(0, 2 / sum p^2), weight prior sigma 1.
    "paper": {"layer": PAPER, "controller": {}},
    # The paper with a flat weight prior (sigma 100, the other value the authors use).
    "paper_sigma100": {"layer": {**PAPER, "weight_prior_scale": 100.0}, "controller": {}},
    # The paper with the width frozen for the first 10 epochs (weights train first).
    "paper_warmup": {"layer": PAPER, "controller": {"width_warmup_epochs": 10}},
    # keras_awn's default: importances average 1 over the active units.
    "mean": {"layer": {"importance_normalization": "mean"}, "controller": {}},
}


def load_task(name, seed):
    """(x_train, y_train, x_test, y_test, classes) for a task; generated or shipped with sklearn."""
    if name == "moons":
        x, y = datasets.moons(2000, noise=0.1, seed=seed)
    elif name.startswith("spiral"):
        turns = float(name[len("spiral") :])
        x, y = datasets.spirals(5000 if turns >= 2 else 2000, turns=turns, noise=0.02, seed=seed)
    elif name == "digits":
        from sklearn.datasets import load_digits

        x, y = load_digits(return_X_y=True)
        x = (x / 16.0).astype("float32")
        y = y.astype("int32")
        order = np.random.default_rng(seed).permutation(len(x))
        x, y = x[order], y[order]
    else:
        raise ValueError(f"Unknown task. Received: task={name!r}")
    (x_train, y_train), (x_test, y_test) = datasets.split(x, y)
    return x_train, y_train, x_test, y_test, int(y.max()) + 1


def compile_model(model):
    model.compile(
        keras.optimizers.Adam(0.01),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def test_accuracy(model, x, y):
    return float(np.mean(np.argmax(model.predict(x, verbose=0, batch_size=1024), axis=1) == y))


class Diagnostics(keras.callbacks.Callback):
    """Per epoch: width parameter, width, importance, loss terms and their gradients in nu."""

    def __init__(self, x, y, step=1e-3):
        super().__init__()
        self.x, self.y, self.step = x, y, step
        self.records = []

    def _terms(self, model, layers, num_examples):
        logits = model.predict(self.x, verbose=0, batch_size=len(self.x)).astype("float64")
        logits -= logits.max(axis=1, keepdims=True)
        log_probs = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
        cross_entropy = float(-log_probs[np.arange(len(self.y)), self.y].mean())
        priors = [float(ops.convert_to_numpy(layer.prior_loss())) / num_examples for layer in layers]
        return cross_entropy, priors

    def on_epoch_end(self, epoch, logs=None):
        model = self.model
        layers = keras_awn.adaptive_layers(model)
        num_examples = layers[0].training_state.num_examples or 1
        cross_entropy, priors = self._terms(model, layers, num_examples)
        record = {"epoch": epoch + 1, "cross_entropy": cross_entropy, "layers": []}
        for index, layer in enumerate(layers):
            raw = float(ops.convert_to_numpy(layer.width_parameter))
            importance = ops.convert_to_numpy(layer.importance()).astype("float64")
            gradients = []
            for sign in (1.0, -1.0):
                layer.width_parameter.assign(raw + sign * self.step)
                gradients.append(self._terms(model, layers, num_examples))
            layer.width_parameter.assign(raw)
            (ce_plus, priors_plus), (ce_minus, priors_minus) = gradients
            kernel = ops.convert_to_numpy(layer.kernel)
            width = layer.active_units
            record["layers"].append(
                {
                    "width_parameter": raw,
                    "width": width,
                    "capacity": layer.capacity,
                    "importance_head": importance[:5].round(5).tolist(),
                    "importance_sum_of_squares": float((importance**2).sum()),
                    "prior_term": priors[index],
                    "active_kernel_rms": float(np.sqrt((kernel[:, :width] ** 2).mean())),
                    "d_cross_entropy_d_nu": (ce_plus - ce_minus) / (2 * self.step),
                    "d_prior_d_nu": (priors_plus[index] - priors_minus[index]) / (2 * self.step),
                }
            )
        self.records.append(record)


def run_fixed(task, width, seed, epochs, batch_size):
    x_train, y_train, x_test, y_test, classes = load_task(task, seed)
    keras.utils.set_random_seed(seed)
    model = compile_model(
        keras.Sequential(
            [
                keras.Input((x_train.shape[1],)),
                keras.layers.Dense(width, activation="relu"),
                keras.layers.Dense(width, activation="relu"),
                keras.layers.Dense(classes),
            ]
        )
    )
    start = time.perf_counter()
    model.fit(x_train, y_train, batch_size=batch_size, epochs=epochs, verbose=0)
    return {"accuracy": test_accuracy(model, x_test, y_test), "seconds": time.perf_counter() - start}


def run_adaptive(task, variant, seed, epochs, batch_size, diagnose):
    x_train, y_train, x_test, y_test, classes = load_task(task, seed)
    keras.utils.set_random_seed(seed)
    settings = VARIANTS[variant]
    model = compile_model(
        keras_awn.Sequential(
            [keras.Input((x_train.shape[1],))]
            + [
                keras_awn.layers.AdaptiveDense(INITIAL_UNITS, activation="relu", **settings["layer"])
                for _ in range(2)
            ]
            + [keras.layers.Dense(classes)]
        )
    )
    callbacks = [keras_awn.callbacks.WidthController(**settings["controller"])]
    diagnostics = None
    if diagnose:
        probe = np.random.default_rng(seed).permutation(len(x_train))[:512]
        diagnostics = Diagnostics(x_train[probe], y_train[probe])
        callbacks.append(diagnostics)
    start = time.perf_counter()
    history = model.fit(
        x_train, y_train, batch_size=batch_size, epochs=epochs, verbose=0, callbacks=callbacks
    )
    seconds = time.perf_counter() - start
    names = [layer.name for layer in keras_awn.adaptive_layers(model)]
    return {
        "accuracy": test_accuracy(model, x_test, y_test),
        "seconds": seconds,
        "widths": list(keras_awn.widths(model).values()),
        "width_history": [[int(w) for w in history.history[f"{n}_width"]] for n in names],
        "train_accuracy_history": [float(a) for a in history.history["accuracy"]],
        "truncation": {
            str(f): test_accuracy(keras_awn.truncate(model, fraction=f), x_test, y_test)
            for f in (0.25, 0.5)
        },
        "diagnostics": diagnostics.records if diagnostics else None,
    }


def summarize(results, tasks, variants, seeds):
    """Markdown tables: per task, fixed widths and variants, mean +- std over seeds."""
    lines = []
    for task in tasks:
        fixed = results["fixed"].get(task, {})
        lines.append(f"### {task}\n")
        lines.append(
            "| model | test accuracy (mean +- std) | widths | accuracy after dropping 25% / 50% "
            "of each layer's units | seconds |"
        )
        lines.append("| --- | --- | --- | --- | --- |")
        best_width, best_mean = None, -1.0
        for width, runs in sorted(fixed.items(), key=lambda kv: int(kv[0])):
            accuracies = [r["accuracy"] for r in runs]
            mean = float(np.mean(accuracies))
            if mean > best_mean:
                best_width, best_mean = width, mean
            lines.append(
                f"| fixed 2 x {width} | {mean:.3f} +- {np.std(accuracies):.3f} | {width}, {width} | "
                f"| {np.mean([r['seconds'] for r in runs]):.1f} |"
            )
        needed = None
        for width, runs in sorted(fixed.items(), key=lambda kv: int(kv[0])):
            if np.mean([r["accuracy"] for r in runs]) >= best_mean - 0.01:
                needed = int(width)
                break
        for variant in variants:
            runs = results["adaptive"].get(task, {}).get(variant, [])
            if not runs:
                continue
            accuracies = [r["accuracy"] for r in runs]
            widths = [r["widths"] for r in runs]
            mean = float(np.mean(accuracies))
            verdict = "within 1 point" if mean >= best_mean - 0.01 else "below"
            truncated = [
                np.mean([r["truncation"][fraction] for r in runs]) for fraction in ("0.25", "0.5")
            ]
            lines.append(
                f"| adaptive `{variant}` | {mean:.3f} +- {np.std(accuracies):.3f} ({verdict}) | "
                f"{'; '.join(', '.join(map(str, w)) for w in widths)} | "
                f"{truncated[0]:.3f} / {truncated[1]:.3f} | "
                f"{np.mean([r['seconds'] for r in runs]):.1f} |"
            )
        lines.append(
            f"\nBest fixed width: 2 x {best_width} ({best_mean:.3f}); the narrowest fixed width within "
            f"1 point of it: 2 x {needed}.\n"
        )
    lines.append("### Learned width by task (sum over the two layers, mean over seeds)\n")
    lines.append("| variant | " + " | ".join(tasks) + " |")
    lines.append("| --- |" + " --- |" * len(tasks))
    for variant in variants:
        cells = []
        for task in tasks:
            runs = results["adaptive"].get(task, {}).get(variant, [])
            cells.append(f"{np.mean([sum(r['widths']) for r in runs]):.0f}" if runs else "")
        lines.append(f"| `{variant}` | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def diagnostics_tables(results):
    """Markdown: the loss terms and width gradients over training, per diagnosed run."""
    lines = []
    for task, by_variant in results["diagnostics"].items():
        for variant, records in by_variant.items():
            lines.append(f"### Diagnostics: {task}, `{variant}`, seed 0\n")
            lines.append(
                "| epoch | cross-entropy | widths | prior term / N per layer | active kernel rms "
                "per layer | sum p^2 per layer | d cross-entropy / d nu per layer |"
            )
            lines.append("| --- | --- | --- | --- | --- | --- | --- |")
            for record in records:
                if record["epoch"] not in (1, 2, 5, 10, 20, 40, 60, len(records)):
                    continue
                layers = record["layers"]

                def column(key, fmt):
                    return ", ".join(format(layer[key], fmt) for layer in layers)

                lines.append(
                    f"| {record['epoch']} | {record['cross_entropy']:.3f} | {column('width', 'd')} | "
                    f"{column('prior_term', '.3f')} | {column('active_kernel_rms', '.2f')} | "
                    f"{column('importance_sum_of_squares', '.3f')} | "
                    f"{column('d_cross_entropy_d_nu', '+.4f')} |"
                )
            lines.append("")
    return "\n".join(lines)


def figures(results, tasks, variants, folder, backend):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no figures")
        return []
    written = []
    for task in tasks:
        runs_by_variant = results["adaptive"].get(task, {})
        if not runs_by_variant:
            continue
        figure, axes = plt.subplots(1, 2, figsize=(10, 3.5))
        for variant in variants:
            runs = runs_by_variant.get(variant, [])
            for index, run in enumerate(runs):
                total = np.sum(run["width_history"], axis=0)
                axes[0].plot(total, color=f"C{variants.index(variant)}", alpha=0.7,
                             label=variant if index == 0 else None)
                axes[1].plot(run["train_accuracy_history"], color=f"C{variants.index(variant)}",
                             alpha=0.7, label=variant if index == 0 else None)
        axes[0].set(title=f"{task}: total width (2 layers)", xlabel="epoch", ylabel="units")
        axes[1].set(title=f"{task}: training accuracy", xlabel="epoch", ylim=(0.4, 1.01))
        axes[0].legend(fontsize=8)
        figure.tight_layout()
        path = os.path.join(folder, f"settings_{backend}_{task}.png")
        figure.savefig(path, dpi=90)
        plt.close(figure)
        written.append(path)
    return written


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=["moons", "spiral1", "spiral2", "spiral3", "digits"])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS))
    parser.add_argument("--fixed-widths", nargs="*", type=int, default=list(FIXED_WIDTHS))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--diagnose", nargs="*", default=["paper", "mean"],
                        help="variants given one extra, untimed seed-0 run per task that records "
                             "per-epoch diagnostics")
    parser.add_argument("--name", default=None, help="suffix of the output files")
    parser.add_argument("--render-only", action="store_true",
                        help="rewrite the tables and figures from the saved JSON, train nothing")
    args = parser.parse_args(argv)

    backend = keras.backend.backend()
    name = args.name or backend
    json_path = os.path.join(ROOT, "benchmarks", "results", f"settings_{name}.json")
    if args.render_only:
        with open(json_path) as f:
            results = json.load(f)
        command = results.get("command", f"KERAS_BACKEND={backend} python benchmarks/settings_study.py")
        render(results, list(results["fixed"]), _variants_in(results), name, command)
        return
    command = f"KERAS_BACKEND={backend} python benchmarks/settings_study.py " + " ".join(
        argv if argv is not None else sys.argv[1:]
    )
    results = {"command": command, "backend": backend, "epochs": args.epochs, "batch_size": args.batch_size,
               "seeds": args.seeds, "fixed": {}, "adaptive": {}, "diagnostics": {}}
    for task in args.tasks:
        for width in args.fixed_widths:
            for seed in range(args.seeds):
                run = run_fixed(task, width, seed, args.epochs, args.batch_size)
                results["fixed"].setdefault(task, {}).setdefault(str(width), []).append(run)
                print(f"{task} fixed {width} seed {seed}: {run['accuracy']:.3f} ({run['seconds']:.1f} s)", flush=True)
        for variant in args.variants:
            for seed in range(args.seeds):
                run = run_adaptive(task, variant, seed, args.epochs, args.batch_size, diagnose=False)
                results["adaptive"].setdefault(task, {}).setdefault(variant, []).append(run)
                print(f"{task} {variant} seed {seed}: {run['accuracy']:.3f} widths {run['widths']} "
                      f"({run['seconds']:.1f} s)", flush=True)
            if variant in args.diagnose:
                # A separate run, so that the diagnostics do not count in the timings above.
                run = run_adaptive(task, variant, 0, args.epochs, args.batch_size, diagnose=True)
                results["diagnostics"].setdefault(task, {})[variant] = run["diagnostics"]

    os.makedirs(os.path.dirname(json_path), exist_ok=True)
    with open(json_path, "w") as f:
        json.dump(results, f)
    render(results, args.tasks, args.variants, name, command)


def _variants_in(results):
    variants = []
    for by_variant in results["adaptive"].values():
        variants += [v for v in by_variant if v not in variants]
    return variants


def render(results, tasks, variants, name, command):
    """Writes docs/study/settings_<name>.md and its figures from the results."""
    folder = os.path.join(ROOT, "docs", "study")
    os.makedirs(folder, exist_ok=True)
    table = summarize(results, tasks, variants, results["seeds"])
    written = figures(results, tasks, variants, folder, name)
    header = (
        f"# Settings study on {results['backend']}\n\nGenerated by `{command}` (tables and figures "
        f"re-rendered with `--render-only`): {results['epochs']} epochs, batch "
        f"{results['batch_size']}, Adam 0.01, {results['seeds']} seeds, adaptive models start at "
        f"2 x {INITIAL_UNITS} units. Test accuracy at the last epoch.\n\n"
    )
    images = "".join(f"![{os.path.basename(p)}]({os.path.basename(p)})\n" for p in written)
    with open(os.path.join(folder, f"settings_{name}.md"), "w") as f:
        f.write(header + table + "\n\n" + images + "\n" + diagnostics_tables(results))
    print(table)


if __name__ == "__main__":
    main()
