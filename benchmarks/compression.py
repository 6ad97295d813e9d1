"""Compressing trained models: `keras_awn.adapt` + `WidthAnnealing` against structured pruning.

    python benchmarks/compression.py                      # JAX, three families, 2 seeds
    python benchmarks/compression.py --backend torch --seeds 1
    python benchmarks/compression.py --render-only        # redraw docs/compression.md
    python benchmarks/compression.py --quick              # tiny sizes (the test suite)

Three families, each a plain Keras model trained from scratch first (the "trained model"):

- `tabular`: an MLP (256, 128 hidden units) on generated tabular data (scikit-learn's
  `make_classification`: 4,000 rows, 32 features, 4 classes);
- `digits_cnn`: a functional CNN on scikit-learn's 8x8 digits (Conv2D(32) without bias,
  BatchNormalization, ReLU, max pooling, Conv2D(64), global average pooling, Dense(64));
- `transformer`: one Transformer encoder block that outputs, for each of 12 tokens over 48
  symbols, the token plus the token at the mirrored position modulo 48 (MultiHeadAttention with
  8 heads, a feed-forward layer of 128 units; reversing the sequence alone was solved at every
  size by every method).

Each trained model is compressed to several sizes (`--fractions` of the units of every layer
that can shrink: hidden units, filters, attention heads and feed-forward units), each with the
same number of fine-tuning epochs:

- **adaptive**: `keras_awn.adapt(trained)` (units in magnitude order), then `fit` with
  `WidthAnnealing(0, 1, target_fraction=f)` (one cut at the start), then `keras_awn.strip`;
  also with `saliency="contribution"` (measured on 512 training examples);
- **magnitude**: structured L1 magnitude pruning, the baseline of tfmot and Torch-Pruning users:
  keep the units, filters or heads whose weights have the largest L1 norm (incoming weights;
  a head's query, key, value and output weights), remove the others at once, then fine-tune;
- **scratch**: the same architecture at that size, trained from scratch for as many epochs as
  the trained model was.

The pruned and the scratch models have exactly the widths (so the parameters) of the stripped
adaptive one. Test accuracy against parameters, per family and backend, goes to
benchmarks/results/compression_<backend>.json, the figures to docs/results/<backend>/, and the
page to docs/compression.md. A first table measures how well each unit ordering ranks units
(accuracy after removing units with no fine-tuning): the saliency `adapt` uses is chosen there.
"""

import argparse
import json
import math
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "benchmarks", "results")
PAGE = os.path.join(ROOT, "docs", "compression.md")
FRACTIONS = (0.5, 0.25, 0.125)
ORDERINGS = ("contribution", "weight_norm", "magnitude", "original")
# The adaptive compressions compared: `keras_awn.adapt` ordering units by each saliency.
ADAPTIVE_METHODS = {"adaptive": "magnitude", "adaptive_contribution": "contribution"}
METHODS = (*ADAPTIVE_METHODS, "magnitude", "scratch")
LABELS = {
    "adaptive": "adaptive (magnitude order)",
    "adaptive_contribution": "adaptive (contribution order)",
    "magnitude": "L1 magnitude pruning",
    "scratch": "from scratch",
}


# -- Families ------------------------------------------------------------------------------------


class Family:
    """A model family: data, a plain Keras builder at given widths, how to prune it."""

    name = None
    title = None
    widths = None  # {layer name: units} of the trained model
    # {layer name: [(reader name, kind)]}: kind "input" (a kernel's input axis) or "channels"
    # (a BatchNormalization's per-channel arrays).
    readers = None
    epochs = 30
    fine_tune_epochs = 8
    batch_size = 64
    learning_rate = 3e-3
    fine_tune_learning_rate = 3e-3

    def data(self, seed):
        raise NotImplementedError

    def model(self, widths):
        raise NotImplementedError


class Tabular(Family):
    name = "tabular"
    title = "MLP on tabular data (make_classification: 4,000 rows, 32 features, 4 classes)"
    widths = {"hidden_1": 256, "hidden_2": 128}
    readers = {"hidden_1": [("hidden_2", "input")], "hidden_2": [("logits", "input")]}
    epochs = 30

    def data(self, seed):
        from sklearn.datasets import make_classification

        x, y = make_classification(
            n_samples=4000,
            n_features=32,
            n_informative=16,
            n_redundant=8,
            n_classes=4,
            n_clusters_per_class=2,
            class_sep=1.0,
            random_state=seed,
        )
        x = x.astype("float32")
        split = 3200
        mean, std = x[:split].mean(axis=0), x[:split].std(axis=0) + 1e-8
        x = (x - mean) / std
        return (x[:split], y[:split].astype("int32")), (x[split:], y[split:].astype("int32"))

    def model(self, widths):
        import keras

        inputs = keras.Input((32,))
        hidden = keras.layers.Dense(widths["hidden_1"], activation="relu", name="hidden_1")(inputs)
        hidden = keras.layers.Dense(widths["hidden_2"], activation="relu", name="hidden_2")(hidden)
        return keras.Model(inputs, keras.layers.Dense(4, name="logits")(hidden))


class DigitsCNN(Family):
    name = "digits_cnn"
    title = "CNN on scikit-learn's 8x8 digits (BatchNormalization, global pooling)"
    widths = {"conv_1": 32, "conv_2": 64, "dense": 64}
    readers = {
        "conv_1": [("batch_norm", "channels"), ("conv_2", "input")],
        "conv_2": [("dense", "input")],
        "dense": [("logits", "input")],
    }
    epochs = 40

    def data(self, seed):
        import numpy as np
        from sklearn.datasets import load_digits

        digits = load_digits()
        order = np.random.default_rng(seed).permutation(len(digits.target))
        x = (digits.images[order][..., None] / 16.0).astype("float32")
        y = digits.target[order].astype("int32")
        split = 1437
        return (x[:split], y[:split]), (x[split:], y[split:])

    def model(self, widths):
        import keras

        inputs = keras.Input((8, 8, 1))
        hidden = keras.layers.Conv2D(
            widths["conv_1"], 3, padding="same", use_bias=False, name="conv_1"
        )(inputs)
        hidden = keras.layers.BatchNormalization(name="batch_norm")(hidden)
        hidden = keras.layers.ReLU()(hidden)
        hidden = keras.layers.MaxPooling2D()(hidden)
        hidden = keras.layers.Conv2D(
            widths["conv_2"], 3, padding="same", activation="relu", name="conv_2"
        )(hidden)
        hidden = keras.layers.GlobalAveragePooling2D()(hidden)
        hidden = keras.layers.Dense(widths["dense"], activation="relu", name="dense")(hidden)
        return keras.Model(inputs, keras.layers.Dense(10, name="logits")(hidden))


class Transformer(Family):
    name = "transformer"
    # Eight epochs bring every method back to 100% at most sizes here: two tell them apart.
    fine_tune_epochs = 2
    title = (
        "Transformer block: each of 12 tokens plus its mirror, modulo 48 (8 heads, "
        "feed-forward 128)"
    )
    widths = {"attention": 8, "feed_forward": 128}
    readers = {"attention": [], "feed_forward": [("feed_forward_out", "input")]}
    length, symbols, model_dim, key_dim = 12, 48, 32, 8
    epochs = 20
    examples = 4000

    def data(self, seed):
        sys.path.insert(0, ROOT)
        from examples.tasks import token_sequences

        tokens, x = token_sequences(seed, self.examples, self.length, self.symbols)
        # Each token plus the token at the mirrored position, modulo the symbols: attention
        # finds the mirror, the feed-forward layer adds (a 48 x 48 table, which takes width).
        y = ((tokens + tokens[:, ::-1]) % self.symbols).astype("int32")
        split = 3200
        return (x[:split], y[:split]), (x[split:], y[split:])

    def model(self, widths):
        import keras

        inputs = keras.Input((self.length, self.symbols + self.length))
        hidden = keras.layers.Dense(self.model_dim, name="embed")(inputs)
        attended = keras.layers.MultiHeadAttention(
            widths["attention"], key_dim=self.key_dim, name="attention"
        )(hidden, hidden)
        hidden = keras.layers.LayerNormalization(name="norm_1")(hidden + attended)
        forward = keras.layers.Dense(
            widths["feed_forward"], activation="relu", name="feed_forward"
        )(hidden)
        forward = keras.layers.Dense(self.model_dim, name="feed_forward_out")(forward)
        hidden = keras.layers.LayerNormalization(name="norm_2")(hidden + forward)
        return keras.Model(inputs, keras.layers.Dense(self.symbols, name="logits")(hidden))


FAMILIES = {family.name: family for family in (Tabular(), DigitsCNN(), Transformer())}


# -- Training and pruning ------------------------------------------------------------------------


def compile_model(model, learning_rate):
    import keras

    model.compile(
        keras.optimizers.Adam(learning_rate),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


def accuracy(model, x, y):
    import numpy as np

    logits = model.predict(x, batch_size=512, verbose=0)
    return float(np.mean(np.argmax(logits, axis=-1) == y))


def magnitude_scores(model, name):
    """The L1 norm of each unit's weights: incoming weights of a unit or filter; a head's
    query, key, value and output weights."""
    import numpy as np

    layer = model.get_layer(name)
    weights = [np.abs(w) for w in layer.get_weights()]
    if type(layer).__name__ == "MultiHeadAttention":
        query, _, key, _, value, _, output = weights[:7]
        return (
            query.sum(axis=(0, 2))
            + key.sum(axis=(0, 2))
            + value.sum(axis=(0, 2))
            + output.sum(axis=(1, 2))
        )
    kernel = weights[0]
    return kernel.reshape(-1, kernel.shape[-1]).sum(axis=0)


def pruned(family, model, keep):
    """A plain model of `family` keeping the units `keep[name]` (index arrays) of each layer,
    with the trained weights sliced (no fine-tuning)."""
    import numpy as np

    widths = {**family.widths, **{name: len(units) for name, units in keep.items()}}
    small = family.model(widths)
    sliced = {layer.name: layer.get_weights() for layer in model.layers if layer.weights}
    for name, units in keep.items():
        weights = sliced[name]
        if type(model.get_layer(name)).__name__ == "MultiHeadAttention":
            sliced[name] = [
                weights[0][:, units],
                weights[1][units],
                weights[2][:, units],
                weights[3][units],
                weights[4][:, units],
                weights[5][units],
                weights[6][units],
                weights[7],
            ]
        else:
            sliced[name] = [weights[0][..., units]] + [w[units] for w in weights[1:]]
        for reader, kind in family.readers[name]:
            weights = sliced[reader]
            if kind == "channels":
                sliced[reader] = [w[units] for w in weights]
            else:
                sliced[reader] = [np.take(weights[0], units, axis=-2)] + weights[1:]
    for layer in small.layers:
        if layer.weights:
            layer.set_weights(sliced[layer.name])
    return small


def ordering_accuracy(family, model, scores, fraction, test):
    """Test accuracy of `model` keeping the `fraction` of each layer's units that `scores` rank
    first (no fine-tuning)."""
    import numpy as np

    keep = {}
    for name, width in family.widths.items():
        units = max(1, math.ceil(fraction * width))
        keep[name] = np.sort(np.argsort(-scores[name], kind="stable")[:units])
    return accuracy(pruned(family, model, keep), *test)


def run_seed(family, seed, fractions, quick):
    import keras
    import numpy as np

    import keras_awn

    keras.utils.set_random_seed(seed)
    train, test = family.data(seed)
    epochs = 2 if quick else family.epochs
    tune = 1 if quick else family.fine_tune_epochs
    # One cut at the start of the fine-tuning, which then trains at the target size (cutting
    # over the first quarter of it measured worse on the digits CNN: docs/adapt.md).
    anneal = 1
    fit = {"batch_size": family.batch_size, "verbose": 0}

    started = time.perf_counter()
    trained = compile_model(family.model(family.widths), family.learning_rate)
    trained.fit(*train, epochs=epochs, **fit)
    result = {
        "seed": seed,
        "trained": {"accuracy": accuracy(trained, *test), "parameters": trained.count_params()},
        "orderings": {},
        "sizes": [],
    }
    sample = train[0][:512]
    scores = {
        "contribution": keras_awn.conversion.unit_saliency(trained, "contribution", x=sample),
        "weight_norm": keras_awn.conversion.unit_saliency(trained, "weight_norm"),
        "magnitude": {name: magnitude_scores(trained, name) for name in family.widths},
        "original": {name: -np.arange(w, dtype="float64") for name, w in family.widths.items()},
    }
    for ordering in ORDERINGS:
        result["orderings"][ordering] = [
            ordering_accuracy(family, trained, scores[ordering], f, test) for f in fractions
        ]

    for fraction in fractions:
        row = {"fraction": fraction}
        for method, saliency in ADAPTIVE_METHODS.items():
            keras.utils.set_random_seed(seed + 1)
            adaptive = keras_awn.adapt(
                trained,
                saliency=saliency,
                x=sample if saliency == "contribution" else None,
                verbose=False,
            )
            compile_model(adaptive, family.fine_tune_learning_rate)
            adaptive.fit(
                *train,
                epochs=tune,
                callbacks=[keras_awn.callbacks.WidthAnnealing(0, anneal, target_fraction=fraction)],
                **fit,
            )
            widths = keras_awn.widths(adaptive)
            stripped = keras_awn.strip(adaptive)
            row["widths"] = widths
            row[method] = {
                "accuracy": accuracy(stripped, *test),
                "parameters": stripped.count_params(),
            }

        keras.utils.set_random_seed(seed + 1)
        keep = {
            name: np.sort(
                np.argsort(-magnitude_scores(trained, name), kind="stable")[: widths[name]]
            )
            for name in family.widths
        }
        magnitude = compile_model(pruned(family, trained, keep), family.fine_tune_learning_rate)
        magnitude.fit(*train, epochs=tune, **fit)
        row["magnitude"] = {
            "accuracy": accuracy(magnitude, *test),
            "parameters": magnitude.count_params(),
        }

        keras.utils.set_random_seed(seed + 1)
        scratch = compile_model(family.model({**family.widths, **widths}), family.learning_rate)
        scratch.fit(*train, epochs=epochs, **fit)
        row["scratch"] = {
            "accuracy": accuracy(scratch, *test),
            "parameters": scratch.count_params(),
        }
        result["sizes"].append(row)
        print(
            f"  {family.name} seed {seed} f={fraction}: "
            + ", ".join(f"{m} {row[m]['accuracy']:.3f}" for m in METHODS)
            + f" ({row['adaptive']['parameters']} parameters)",
            flush=True,
        )
    result["seconds"] = time.perf_counter() - started
    return result


def run_backend(families, seeds, fractions, quick):
    sys.path.insert(0, ROOT)
    import keras

    results = {"backend": keras.backend.backend(), "quick": quick, "families": {}}
    for name in families:
        family = FAMILIES[name]
        runs = [run_seed(family, seed, fractions, quick) for seed in range(seeds)]
        results["families"][name] = {
            "title": family.title,
            "epochs": 2 if quick else family.epochs,
            "fine_tune_epochs": 1 if quick else family.fine_tune_epochs,
            "fractions": list(fractions),
            "runs": runs,
        }
    return results


# -- The page ------------------------------------------------------------------------------------


def _mean(values):
    return sum(values) / len(values)


def summary(family_results):
    """Per fraction: mean accuracy of each method over seeds, and the mean parameters."""
    rows = []
    runs = family_results["runs"]
    for index, fraction in enumerate(family_results["fractions"]):
        row = {"fraction": fraction}
        for method in METHODS:
            row[method] = _mean([run["sizes"][index][method]["accuracy"] for run in runs])
        row["parameters"] = _mean([run["sizes"][index]["adaptive"]["parameters"] for run in runs])
        row["widths"] = runs[0]["sizes"][index]["widths"]
        rows.append(row)
    return rows


def figure(backend, name, family_results):
    sys.path.insert(0, ROOT)
    import matplotlib

    matplotlib.use("Agg")
    import keras_awn.plotting

    points = {}
    for run in family_results["runs"]:
        for size in run["sizes"]:
            for method in METHODS:
                points.setdefault(LABELS[method], []).append(
                    (size[method]["parameters"], size[method]["accuracy"])
                )
        points.setdefault("trained (uncompressed)", []).append(
            (run["trained"]["parameters"], run["trained"]["accuracy"])
        )
    ax = keras_awn.plotting.plot_accuracy_vs_parameters(points, title=family_results["title"])
    directory = os.path.join(ROOT, "docs", "results", backend)
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, f"compression_{name}.png")
    ax.figure.savefig(path, dpi=110, bbox_inches="tight")
    return os.path.relpath(path, os.path.dirname(PAGE))


def render(all_results):
    lines = [
        "# Compressing trained models: results",
        "",
        "Generated by `python benchmarks/compression.py` (then `--render-only`); do not edit by "
        "hand. The method and the recipe: [adapt.md](adapt.md).",
        "",
        "Each family's plain Keras model is trained from scratch, then compressed to a share of "
        "the units of every layer that can shrink, with the same fine-tuning epochs for each "
        "method: **adaptive** (`keras_awn.adapt`, then `fit` with "
        "`WidthAnnealing(0, 1, target_fraction=f)`, then `keras_awn.strip`; units in magnitude "
        "order, the default, or in measured contribution order), "
        "**magnitude** (structured L1 magnitude pruning at the same widths, then fine-tuning: "
        "keep the units, filters or heads whose weights have the largest L1 norm) and "
        "**scratch** (the same widths trained from scratch for as many epochs as the trained "
        "model). The pruned and scratch models have exactly the parameters of the stripped "
        "adaptive one. Accuracy is on a held-out test split, averaged over the seeds.",
        "",
    ]
    for backend, results in all_results.items():
        if results.get("quick"):
            continue
        lines += [f"## {backend}", ""]
        for name, family_results in results["families"].items():
            runs = family_results["runs"]
            trained = _mean([run["trained"]["accuracy"] for run in runs])
            lines += [
                f"### {family_results['title']}",
                "",
                f"Trained for {family_results['epochs']} epochs: test accuracy {trained:.3f} "
                f"with {runs[0]['trained']['parameters']:,} parameters; fine-tuning: "
                f"{family_results['fine_tune_epochs']} epochs; {len(runs)} seed(s).",
                "",
                "| kept share | widths | parameters | "
                + " | ".join(LABELS[m] for m in METHODS)
                + " | adaptive - L1, per seed |",
                "| --- | --- | --- |" + " --- |" * (len(METHODS) + 1),
            ]
            compared = (*ADAPTIVE_METHODS, "magnitude")
            for index, row in enumerate(summary(family_results)):
                best = max(row[m] for m in compared)
                cells = []
                for method in METHODS:
                    text = f"{row[method]:.3f}"
                    cells.append(
                        f"**{text}**" if method in compared and row[method] == best else text
                    )
                sizes = [run["sizes"][index] for run in runs]
                differences = " ".join(
                    f"{size['adaptive']['accuracy'] - size['magnitude']['accuracy']:+.3f}"
                    for size in sizes
                )
                widths = ", ".join(f"{k} {v}" for k, v in row["widths"].items())
                lines.append(
                    f"| {row['fraction']} | {widths} | {row['parameters']:,.0f} | "
                    + " | ".join(cells)
                    + f" | {differences} |"
                )
            lines += ["", f"![{name}]({figure(backend, name, family_results)})", ""]
        lines += [
            "#### Which units to keep: orderings without fine-tuning",
            "",
            "Test accuracy of each trained model after removing units in the order each "
            "criterion ranks them (least salient first), with no fine-tuning, averaged over "
            "kept shares and seeds. `contribution`: measured activations times outgoing "
            "weights on 512 training examples (`adapt(x=...)`); `weight_norm`: the same from "
            "weights only (`adapt()` without `x`); `magnitude`: the L1 norm of incoming weights "
            "(the pruning baseline); `original`: the first units, in the trained layer's order.",
            "",
            "| family | " + " | ".join(ORDERINGS) + " |",
            "| --- |" + " --- |" * len(ORDERINGS),
        ]
        for name, family_results in results["families"].items():
            runs = family_results["runs"]
            cells = [
                _mean([_mean(run["orderings"][ordering]) for run in runs]) for ordering in ORDERINGS
            ]
            best = max(cells)
            lines.append(
                f"| {name} | "
                + " | ".join(f"**{c:.3f}**" if c == best else f"{c:.3f}" for c in cells)
                + " |"
            )
        lines.append("")
    with open(PAGE, "w") as handle:
        handle.write("\n".join(lines))


def load_all():
    found = {}
    for backend in ("jax", "tensorflow", "torch"):
        path = os.path.join(RESULTS, f"compression_{backend}.json")
        if os.path.exists(path):
            with open(path) as handle:
                found[backend] = json.load(handle)
    return found


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", default="jax", choices=("jax", "tensorflow", "torch"))
    parser.add_argument("--families", nargs="+", default=list(FAMILIES), choices=list(FAMILIES))
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--fractions", nargs="+", type=float, default=list(FRACTIONS))
    parser.add_argument("--quick", action="store_true", help="tiny run, nothing written")
    parser.add_argument("--render-only", action="store_true")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.render_only:
        render(load_all())
        return
    if not args.child:
        # The backend is fixed at import: run in a process of its own.
        command = [sys.executable, os.path.abspath(__file__), "--child", *sys.argv[1:]]
        env = {**os.environ, "KERAS_BACKEND": args.backend}
        sys.exit(subprocess.run(command, env=env).returncode)
    results = run_backend(args.families, args.seeds, args.fractions, args.quick)
    if args.quick:
        print(json.dumps(results)[:2000])
        return
    os.makedirs(RESULTS, exist_ok=True)
    path = os.path.join(RESULTS, f"compression_{args.backend}.json")
    if os.path.exists(path):
        # A run of some families keeps the others' results.
        with open(path) as handle:
            previous = json.load(handle)
        results["families"] = {**previous.get("families", {}), **results["families"]}
    with open(path, "w") as handle:
        json.dump(results, handle, indent=1)
    render(load_all())
    print(f"wrote {PAGE}")


if __name__ == "__main__":
    main()
