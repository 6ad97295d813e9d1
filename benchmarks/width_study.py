"""Learn the width from any start: adaptive runs from many starts against a fixed-width grid.

For tasks of rising capacity demand (k random Gaussian clusters with random binary labels, two
spirals of 1 to 3 turns, scikit-learn's digits as an MLP and as a CNN with adaptive filters),
this trains:

- plain Keras models of every fixed width of the grid {8, 16, 24, 128, 256};
- adaptive models (keras_awn defaults: the width search) from every start in
  {1, 2, 4, 16, 64, 256, 1024} and from the default start (no `initial_units`);
- the paper's gradient-learned width (`width_learning="gradient"`) from a few starts, for
  comparison;

all with Adam 0.01, batch 128 and 60 epochs, and writes test accuracies, final widths and the
widths after every epoch.

    KERAS_BACKEND=jax python benchmarks/width_study.py                       # the full study
    KERAS_BACKEND=torch python benchmarks/width_study.py --tasks clusters1024 spiral3 \\
        --starts 2 16 256 --seeds 1 --no-paper
    python benchmarks/width_study.py --report                                # the page only

Writes benchmarks/results/width_study_<backend>.json (one entry per run; reruns of a subset
replace only their entries) and, with --report, docs/study/width_search.md and its figures
(docs/study/width_search_*.png) from every backend's results.
"""

import argparse
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "benchmarks", "results")
PAGE = os.path.join(ROOT, "docs", "study", "width_search.md")

GRID = (8, 16, 24, 128, 256)
STARTS = (1, 2, 4, 16, 64, 256, 1024)
PAPER_STARTS = (4, 16, 256)
TASKS = (
    "clusters4",
    "clusters16",
    "clusters64",
    "clusters256",
    "clusters1024",
    "spiral1",
    "spiral2",
    "spiral3",
    "digits",
    "digits_cnn",
)
EPOCHS = 60
BATCH_SIZE = 128
LEARNING_RATE = 0.01


# -- Tasks ---------------------------------------------------------------------------------------


def clusters(k, seed, num_examples=8000, dim=8, spread=0.15):
    """`k` Gaussian clusters in `dim`-D, each with a random binary label: memorising them takes
    more units as `k` grows."""
    import numpy as np

    rng = np.random.default_rng(seed)
    centers = rng.normal(0.0, 1.0, (k, dim))
    labels = rng.integers(0, 2, k)
    members = rng.integers(0, k, num_examples)
    x = centers[members] + rng.normal(0.0, spread, (num_examples, dim))
    return x.astype("float32"), labels[members].astype("int32")


def spirals(turns, seed, num_examples=4000, noise=0.3):
    """Two spirals whose arms are pi apart (radius = angle), Gaussian noise, scaled into [-1, 1]."""
    import numpy as np

    rng = np.random.default_rng(seed)
    half = num_examples // 2
    points, labels = [], []
    top = 2.0 * np.pi * turns
    for label in (0, 1):
        angle = np.sqrt(rng.uniform(0.0, 1.0, half)) * top
        xy = np.stack(
            [angle * np.cos(angle + label * np.pi), angle * np.sin(angle + label * np.pi)], 1
        )
        points.append((xy + rng.normal(0.0, noise, (half, 2))) / top)
        labels.append(np.full(half, label))
    order = rng.permutation(num_examples)
    x = np.concatenate(points).astype("float32")[order]
    return x, np.concatenate(labels).astype("int32")[order]


def digits(seed, images=False):
    import numpy as np
    from sklearn.datasets import load_digits

    data = load_digits()
    order = np.random.default_rng(seed).permutation(len(data.target))
    x = (data.images / 16.0).astype("float32")[order]
    x = x[..., None] if images else x.reshape(len(x), -1)
    return x, data.target.astype("int32")[order]


def task_data(name, seed):
    """`(x_train, y_train, x_test, y_test, classes)`: 80% / 20%."""
    if name.startswith("clusters"):
        x, y = clusters(int(name[len("clusters") :]), seed)
        classes = 2
    elif name.startswith("spiral"):
        x, y = spirals(float(name[len("spiral") :]), seed)
        classes = 2
    else:
        x, y = digits(seed, images=name == "digits_cnn")
        classes = 10
    cut = int(0.8 * len(x))
    return x[:cut], y[:cut], x[cut:], y[cut:], classes


def build(name, shape, classes, width=None, start=None, paper=False):
    """A fixed model of `width`, or an adaptive one starting at `start` (None: the default)."""
    import keras

    import keras_awn

    adaptive = width is None
    arguments = {"width_learning": "gradient"} if paper else {}
    if name == "digits_cnn":
        if adaptive:
            conv = [
                keras_awn.layers.AdaptiveConv2D(
                    start, 3, padding="same", activation="relu", **arguments
                ),
                keras.layers.MaxPooling2D(),
                keras_awn.layers.AdaptiveConv2D(
                    start, 3, padding="same", activation="relu", **arguments
                ),
            ]
        else:
            conv = [
                keras.layers.Conv2D(width, 3, padding="same", activation="relu"),
                keras.layers.MaxPooling2D(),
                keras.layers.Conv2D(width, 3, padding="same", activation="relu"),
            ]
        layers = [keras.Input(shape), *conv, keras.layers.GlobalAveragePooling2D()]
    elif adaptive:
        layers = [
            keras.Input(shape),
            keras_awn.layers.AdaptiveDense(start, activation="relu", **arguments),
            keras_awn.layers.AdaptiveDense(start, activation="relu", **arguments),
        ]
    else:
        layers = [
            keras.Input(shape),
            keras.layers.Dense(width, activation="relu"),
            keras.layers.Dense(width, activation="relu"),
        ]
    layers.append(keras.layers.Dense(classes))
    model = (keras_awn.Sequential if adaptive else keras.Sequential)(layers)
    model.compile(
        keras.optimizers.Adam(LEARNING_RATE),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def run(kind, name, value, seed):
    """One run: `kind` is "fixed" (value: width), "search" or "paper" (value: the start, or
    None for the default start). Returns its result entry."""
    import keras
    import numpy as np

    import keras_awn

    x, y, x_test, y_test, classes = task_data(name, seed)
    keras.utils.set_random_seed(seed)
    if kind == "fixed":
        model = build(name, x.shape[1:], classes, width=value)
    else:
        model = build(name, x.shape[1:], classes, start=value, paper=kind == "paper")
    started = time.perf_counter()
    history = model.fit(x, y, batch_size=BATCH_SIZE, epochs=EPOCHS, verbose=0)
    seconds = time.perf_counter() - started
    logits = model.predict(x_test, batch_size=1024, verbose=0)
    entry = {
        "kind": kind,
        "task": name,
        "value": value,
        "seed": seed,
        "accuracy": float(np.mean(np.argmax(logits, axis=-1) == y_test)),
        "seconds": round(seconds, 2),
    }
    if kind != "fixed":
        entry["widths"] = list(keras_awn.widths(model).values())
        entry["history"] = [
            values for key, values in history.history.items() if key.endswith("_width")
        ]
    return entry


# -- Running -------------------------------------------------------------------------------------


def key(entry):
    return (entry["kind"], entry["task"], entry["value"], entry["seed"])


def results_path(backend):
    return os.path.join(RESULTS, f"width_study_{backend}.json")


def load(backend):
    path = results_path(backend)
    if not os.path.exists(path):
        return []
    with open(path) as handle:
        return json.load(handle)["runs"]


def save(backend, runs):
    os.makedirs(RESULTS, exist_ok=True)
    runs = sorted(runs, key=lambda e: (e["task"], e["kind"], str(e["value"]), e["seed"]))
    with open(results_path(backend), "w") as handle:
        json.dump({"epochs": EPOCHS, "batch_size": BATCH_SIZE, "runs": runs}, handle, indent=1)


def plan(arguments):
    runs = []
    for name in arguments.tasks:
        for seed in range(arguments.seeds):
            if not arguments.no_fixed:
                runs += [("fixed", name, width, seed) for width in GRID]
            runs += [
                ("search", name, start, seed)
                for start in arguments.starts
                # 1024 filters on 8 x 8 images take minutes per run on 2 CPU cores.
                if not (name == "digits_cnn" and start > 256)
            ]
            if arguments.default_start:
                runs.append(("search", name, None, seed))
            if not arguments.no_paper and seed == 0:
                runs += [("paper", name, start, seed) for start in PAPER_STARTS]
    return runs


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=list(TASKS))
    parser.add_argument("--starts", nargs="+", type=int, default=list(STARTS))
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--no-fixed", action="store_true", help="skip the fixed-width grid")
    parser.add_argument("--no-paper", action="store_true", help="skip the paper's width")
    parser.add_argument("--no-default-start", dest="default_start", action="store_false")
    parser.add_argument("--report", action="store_true", help="write the page and stop")
    arguments = parser.parse_args(argv)
    if arguments.report:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        import width_study_report

        width_study_report.write(PAGE)
        return
    import keras

    backend = keras.backend.backend()
    runs = {key(entry): entry for entry in load(backend)}
    for kind, name, value, seed in plan(arguments):
        entry = run(kind, name, value, seed)
        runs[key(entry)] = entry
        print(json.dumps({k: v for k, v in entry.items() if k != "history"}), flush=True)
        save(backend, list(runs.values()))


if __name__ == "__main__":
    main()
