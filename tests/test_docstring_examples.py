"""The Example of every layer family's docstring (and of keras_awn.plotting's) runs as written (with small data for the names it
leaves to the reader: `x`, `y`, `images`, `labels`, `sequences`, `node_features`,
`edge_index`, `graph_id`)."""

import re

import keras
import numpy as np
import pytest
from sklearn.datasets import load_digits

import keras_awn
from keras_awn import datasets
from keras_awn import layers
from tests.families import cycles_and_paths

DOCUMENTED = [
    layers.AdaptiveConv2D,
    layers.AdaptiveFeedForward,
    layers.AdaptiveMultiHeadAttention,
    layers.AdaptiveRNNCell,
    layers.AdaptiveRNN,
    layers.MLPRNNCell,
    layers.AdaptiveGINConv,
    layers.GINConv,
    layers.GraphPooling,
    keras_awn.callbacks.WidthAnnealing,
    keras_awn.plotting,
]


def example_code(cls):
    blocks = re.findall(r"```python\n(.*?)```", cls.__doc__, flags=re.S)
    assert blocks, f"{cls.__name__} has no Example"
    lines = blocks[0].splitlines()
    indent = min(len(line) - len(line.lstrip()) for line in lines if line.strip())
    return "\n".join(line[indent:] for line in lines)


def namespace():
    digits = load_digits()
    images = (digits.images[:64] / 16.0).astype("float32")
    graphs, _ = cycles_and_paths(32)
    x, y = datasets.spirals(64, turns=1.0, seed=0)
    batch = keras_awn.graph_data.batch_graphs(graphs, num_graphs=32)
    return {
        "keras": keras,
        "keras_awn": keras_awn,
        "np": np,
        "x": x,
        "y": y,
        "images": images[..., None],
        "sequences": images,
        "labels": digits.target[:64].astype("int32"),
        "node_features": batch["node_features"],
        "edge_index": batch["edge_index"],
        "graph_id": batch["graph_id"],
    }


@pytest.mark.parametrize("cls", DOCUMENTED, ids=lambda cls: cls.__name__)
def test_docstring_example_runs(cls):
    exec(compile(example_code(cls), f"<{cls.__name__} example>", "exec"), namespace())
