"""The tasks of the paper's comparison, one per layer family, on generated or shipped data.

Each task knows its data (generated, or shipped inside scikit-learn: nothing is downloaded), the
adaptive model, the fixed-width model it is compared with, and its training settings.
`examples/compare.py` trains them; `python -m examples.reproduce` runs them all.

What "width" means for the fixed-width grid, task by task:

| task | adaptive model | fixed model of width w |
| --- | --- | --- |
| moons, spiral, hard_spiral, breast_cancer | 2 x AdaptiveDense | 2 x Dense(w) |
| digits_cnn | AdaptiveConv2D, Conv2D(16), AdaptiveDense head | Conv2D(w), Conv2D(16), Dense(w) |
| digits_rnn | AdaptiveRNN (input and state maps learn their widths) | MLPRNNCell with maps of width w |
| reverse | AdaptiveMultiHeadAttention + AdaptiveFeedForward | MultiHeadAttention (4 heads) + feed-forward of width w |
| cycles | 2 x AdaptiveGINConv | 2 x GINConv with MLPs of width w |
"""

import keras
import numpy as np

import keras_awn
from keras_awn import datasets
from keras_awn import graph_data
from keras_awn import layers

# The settings keras_awn recommends (its defaults: the width search) and the paper's method
# beside them (importances summing to 1, the width learned by gradient).
VARIANTS = {
    "recommended": {},
    "paper": {"importance_normalization": "sum", "width_learning": "gradient"},
}


class Task:
    """One comparison task. Subclasses set the class attributes and the three builders."""

    name = None
    title = None
    epochs = 60
    batch_size = 128
    learning_rate = 0.01
    # Every adaptive model starts at 16 units per layer (heads: 4); the grid is the fixed widths.
    initial_units = 16
    # Whether `keras_awn.plotting.truncation_curve` can cut its fixed-width model (Dense chains).
    truncatable = False

    def data(self, seed):
        """`(train, test)`: dicts of `fit` arguments (`x`, `y`, or `x` a dataset)."""
        raise NotImplementedError

    def adaptive_model(self, **layer_arguments):
        raise NotImplementedError

    def fixed_model(self, width):
        raise NotImplementedError

    def fixed_model_like(self, widths):
        """A fixed-width model with one width per adaptive layer (for the truncation figure)."""
        raise NotImplementedError(f"Task {self.name!r} has no per-layer fixed model.")

    def fit(self, model, train, **arguments):
        """`model.fit` on the training split with the task's epochs and batch size (a dataset
        batches itself)."""
        batch_size = self.batch_size if "y" in train else None
        return model.fit(**train, batch_size=batch_size, epochs=self.epochs, verbose=0, **arguments)

    def compile(self, model):
        model.compile(
            keras.optimizers.Adam(self.learning_rate),
            keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
        )
        return model

    def accuracy(self, model, test):
        """Accuracy on the test split (per token for sequence outputs)."""
        if "y" not in test:
            return float(model.evaluate(test["x"], verbose=0, return_dict=True)["accuracy"])
        logits = model.predict(test["x"], verbose=0, batch_size=1024)
        return float(np.mean(np.argmax(logits, axis=-1) == test["y"]))


def _as_dict(x, y):
    return {"x": x, "y": y}


def _split(x, y, test_fraction=0.2):
    (x_train, y_train), (x_test, y_test) = datasets.split(x, y, test_fraction)
    return _as_dict(x_train, y_train), _as_dict(x_test, y_test)


class MLPTask(Task):
    """Two hidden layers, ReLU, on a vector input."""

    truncatable = True
    features = 2
    classes = 2

    def adaptive_model(self, **layer_arguments):
        return keras_awn.Sequential(
            [keras.Input((self.features,))]
            + [
                layers.AdaptiveDense(self.initial_units, activation="relu", **layer_arguments)
                for _ in range(2)
            ]
            + [keras.layers.Dense(self.classes)]
        )

    def fixed_model_like(self, widths):
        return keras.Sequential(
            [keras.Input((self.features,))]
            + [keras.layers.Dense(width, activation="relu") for width in widths]
            + [keras.layers.Dense(self.classes)]
        )

    def fixed_model(self, width):
        return self.fixed_model_like([width, width])


class Moons(MLPTask):
    name = "moons"
    title = "Double moon (2000 points)"

    def data(self, seed):
        return _split(*datasets.moons(2000, noise=0.1, seed=seed))


class Spiral(MLPTask):
    name = "spiral"
    title = "Two spirals, 1 turn (2000 points)"
    turns, examples = 1.0, 2000

    def data(self, seed):
        return _split(*datasets.spirals(self.examples, turns=self.turns, noise=0.02, seed=seed))


class HardSpiral(Spiral):
    name = "hard_spiral"
    title = "Hard spiral: two spirals, 2 turns (5000 points)"
    turns, examples = 2.0, 5000


class BreastCancer(MLPTask):
    name = "breast_cancer"
    title = "Breast cancer, tabular (scikit-learn, 569 examples, 30 features)"
    features, classes = 30, 2
    batch_size = 32
    learning_rate = 0.003
    epochs = 40

    def data(self, seed):
        from sklearn.datasets import load_breast_cancer

        x, y = load_breast_cancer(return_X_y=True)
        order = np.random.default_rng(seed).permutation(len(x))
        x, y = x[order], y[order].astype("int32")
        train, test = _split(x, y)
        # Standardised with the training split's statistics only.
        mean, std = train["x"].mean(axis=0), train["x"].std(axis=0) + 1e-8
        train["x"] = ((train["x"] - mean) / std).astype("float32")
        test["x"] = ((test["x"] - mean) / std).astype("float32")
        return train, test


def _digits(seed):
    from sklearn.datasets import load_digits

    digits = load_digits()
    order = np.random.default_rng(seed).permutation(len(digits.target))
    images = (digits.images[order] / 16.0).astype("float32")
    return images, digits.target[order].astype("int32")


class DigitsCNN(Task):
    name = "digits_cnn"
    title = "Digits CNN (scikit-learn 8x8 digits, 1797 images)"
    epochs = 30
    batch_size = 64
    learning_rate = 0.005
    reader_filters = 16

    def data(self, seed):
        images, labels = _digits(seed)
        return _split(images[..., None], labels)

    def adaptive_model(self, **layer_arguments):
        # The adaptive filters are read by a fixed Conv2D, so the head can flatten its output.
        return keras_awn.Sequential(
            [
                keras.Input((8, 8, 1)),
                layers.AdaptiveConv2D(
                    self.initial_units, 3, padding="same", activation="relu", **layer_arguments
                ),
                keras.layers.MaxPooling2D(),
                keras.layers.Conv2D(self.reader_filters, 3, padding="same", activation="relu"),
                keras.layers.Flatten(),
                layers.AdaptiveDense(self.initial_units, activation="relu", **layer_arguments),
                keras.layers.Dense(10),
            ]
        )

    def fixed_model(self, width):
        return keras.Sequential(
            [
                keras.Input((8, 8, 1)),
                keras.layers.Conv2D(width, 3, padding="same", activation="relu"),
                keras.layers.MaxPooling2D(),
                keras.layers.Conv2D(self.reader_filters, 3, padding="same", activation="relu"),
                keras.layers.Flatten(),
                keras.layers.Dense(width, activation="relu"),
                keras.layers.Dense(10),
            ]
        )


class DigitsRNN(Task):
    name = "digits_rnn"
    title = "Digits read row by row by a recurrent layer (8 steps of 8 pixels)"
    epochs = 60
    # Keras runs the recurrent loop step by step on torch (eager): batches of 128 keep the
    # example under 10 minutes there (about 25 s per run on 2 cores).
    batch_size = 128
    learning_rate = 0.005
    state_size = 32

    def data(self, seed):
        return _split(*_digits(seed))

    def adaptive_model(self, **layer_arguments):
        return keras_awn.Sequential(
            [
                keras.Input((8, 8)),
                layers.AdaptiveRNN(self.state_size, initial_units=self.initial_units, **layer_arguments),
                keras.layers.Dense(10),
            ]
        )

    def fixed_model(self, width):
        def mlp():
            return keras.Sequential(
                [keras.layers.Dense(width, activation="relu"), keras.layers.Dense(self.state_size)]
            )

        cell = layers.MLPRNNCell(self.state_size, input_map=mlp(), state_map=mlp())
        return keras.Sequential(
            [keras.Input((8, 8)), keras.layers.RNN(cell), keras.layers.Dense(10)]
        )


def token_sequences(seed, examples, length, symbols):
    """`(tokens, x)`: random token sequences (`examples x length` ints below `symbols`) and their
    encoding, a one-hot symbol concatenated with a one-hot position per token (so no positional
    embedding layer is needed)."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, symbols, (examples, length))
    one_hot = np.eye(symbols, dtype="float32")[tokens]
    position = np.broadcast_to(np.eye(length, dtype="float32"), (examples, length, length))
    return tokens, np.concatenate([one_hot, position], axis=-1)


class Reverse(Task):
    """Sequence to sequence: output the input tokens in reverse order.

    Each token is a one-hot symbol concatenated with a one-hot position (so no positional
    embedding layer is needed); one Transformer encoder block predicts every output token.
    """

    name = "reverse"
    title = "Reverse a sequence (12 tokens over 16 symbols): a Transformer block"
    length, symbols, model_dim, key_dim = 12, 16, 32, 8
    fixed_heads = 4
    epochs = 10
    batch_size = 64
    learning_rate = 0.003
    examples = 4000

    def data(self, seed):
        tokens, x = token_sequences(seed, self.examples, self.length, self.symbols)
        return _split(x, tokens[:, ::-1].astype("int32"))

    def _encoder(self, attention, feed_forward):
        inputs = keras.Input((self.length, self.symbols + self.length))
        hidden = keras.layers.Dense(self.model_dim)(inputs)
        hidden = keras.layers.LayerNormalization()(hidden + attention(hidden, hidden))
        hidden = keras.layers.LayerNormalization()(hidden + feed_forward(hidden))
        return inputs, keras.layers.Dense(self.symbols)(hidden)

    def adaptive_model(self, **layer_arguments):
        inputs, outputs = self._encoder(
            layers.AdaptiveMultiHeadAttention(4, key_dim=self.key_dim, **layer_arguments),
            layers.AdaptiveFeedForward(
                self.model_dim, initial_units=self.initial_units, activation="relu", **layer_arguments
            ),
        )
        return keras_awn.Model(inputs, outputs)

    def fixed_model(self, width):
        feed_forward = keras.Sequential(
            [keras.layers.Dense(width, activation="relu"), keras.layers.Dense(self.model_dim)]
        )
        inputs, outputs = self._encoder(
            keras.layers.MultiHeadAttention(self.fixed_heads, key_dim=self.key_dim), feed_forward
        )
        return keras.Model(inputs, outputs)


def cycles_and_trees(num_graphs, seed=0):
    """Cycles (label 1) and random trees (label 0) of 6 to 15 nodes; each node's feature is its
    degree / 4 (with constant features, a third of the runs of every width never left the
    starting plateau)."""
    rng = np.random.default_rng(seed)
    graph_list, labels = [], []
    for index in range(num_graphs):
        size = int(rng.integers(6, 16))
        label = index % 2
        if label:
            edges = [[i, (i + 1) % size] for i in range(size)]
        else:
            edges = [[i, int(rng.integers(0, i))] for i in range(1, size)]
        edges += [[b, a] for a, b in edges]
        degree = np.bincount(np.asarray(edges)[:, 0], minlength=size).astype("float32")
        graph_list.append(((degree / 4.0)[:, None], np.asarray(edges, "int32")))
        labels.append(label)
    order = rng.permutation(num_graphs)
    return [graph_list[i] for i in order], np.asarray(labels, "int32")[order]


class Cycles(Task):
    name = "cycles"
    title = "Graph classification: cycles vs random trees (GIN)"
    epochs = 30
    batch_size = 32
    learning_rate = 0.005
    hidden = 16
    num_graphs = 800

    def data(self, seed):
        graph_list, labels = cycles_and_trees(self.num_graphs, seed)
        cut = int(0.8 * self.num_graphs)
        batches = [
            graph_data.GraphBatches(
                graph_list[s], labels[s], batch_size=self.batch_size, shuffle=shuffle, seed=seed
            )
            for s, shuffle in ((slice(None, cut), True), (slice(cut, None), False))
        ]
        return {"x": batches[0]}, {"x": batches[1]}

    def _model(self, convolutions):
        nodes = keras.Input((1,))
        edges = keras.Input((2,), dtype="int32")
        graph_id = keras.Input((), dtype="int32")
        hidden = nodes
        for convolution in convolutions:
            hidden = convolution([hidden, edges])
        pooled = layers.GraphPooling(num_graphs=self.batch_size, reduction="sum")([hidden, graph_id])
        # Sums over graphs of 6 to 15 nodes vary in scale; normalizing them keeps wide and narrow
        # models trainable at one learning rate.
        outputs = keras.layers.Dense(2)(keras.layers.LayerNormalization()(pooled))
        return nodes, edges, graph_id, outputs

    def adaptive_model(self, **layer_arguments):
        *inputs, outputs = self._model(
            [
                layers.AdaptiveGINConv(
                    self.hidden,
                    initial_units=self.initial_units,
                    output_activation=activation,
                    **layer_arguments,
                )
                for activation in ("relu", None)
            ]
        )
        return keras_awn.Model(inputs, outputs)

    def fixed_model(self, width):
        def convolution(activation):
            mlp = keras.Sequential(
                [
                    keras.layers.Dense(width, activation="relu"),
                    keras.layers.Dense(self.hidden, activation=activation),
                ]
            )
            return layers.GINConv(mlp)

        # No ReLU at the last convolution's output: all-dead outputs would pool to a constant.
        *inputs, outputs = self._model([convolution(a) for a in ("relu", None)])
        return keras.Model(inputs, outputs)


TASKS = {
    task.name: task
    for task in (
        Moons(),
        Spiral(),
        HardSpiral(),
        BreastCancer(),
        DigitsCNN(),
        DigitsRNN(),
        Reverse(),
        Cycles(),
    )
}


def get(name, **overrides):
    """A fresh copy of task `name` with some settings changed (`epochs=2`, `initial_units=4`...)."""
    if name not in TASKS:
        raise ValueError(f"Unknown task. Expected one of {sorted(TASKS)}. Received: name={name!r}")
    task = type(TASKS[name])()
    for key, value in overrides.items():
        if not hasattr(task, key):
            raise ValueError(f"Task {name!r} has no setting {key!r}. Received: {key}={value!r}")
        setattr(task, key, value)
    return task
