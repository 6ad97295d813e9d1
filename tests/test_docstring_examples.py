"""The Example of every public class's docstring (and of keras_awn.plotting's) runs as written,
with small data for the names it leaves to the reader (`x`, `y`, `images`, `labels`,
`sequences`, `node_features`, `edge_index`, `graph_id`, `model`)."""

import doctest
import inspect
import re

import keras
import numpy as np
import pytest
from sklearn.datasets import load_digits

import keras_awn
from keras_awn import datasets
from keras_awn import distributions
from keras_awn import graph_data
from tests import helpers
from tests.families import cycles_and_paths


def public_classes():
    """Every class the documented public API exposes."""
    classes = [getattr(keras_awn.layers, name) for name in keras_awn.layers.__all__]
    classes += [getattr(keras_awn.callbacks, name) for name in keras_awn.callbacks.__all__]
    classes += [keras_awn.Model, keras_awn.Sequential, graph_data.GraphBatches]
    classes += [
        value
        for _, value in inspect.getmembers(distributions, inspect.isclass)
        if issubclass(value, distributions.WidthDistribution)
    ]
    return classes


DOCUMENTED = public_classes() + [
    keras_awn.plotting,
    keras_awn.clone_model,
    keras_awn.adapt,
    keras_awn.conversion_plan,
    keras_awn.conversion.unit_saliency,
]


def namespace():
    digits = load_digits()
    images = (digits.images[:32] / 16.0).astype("float32")
    graphs, graph_labels = cycles_and_paths(32)
    x, y = datasets.spirals(64, turns=1.0, seed=0)
    batch = graph_data.batch_graphs(graphs, num_graphs=32)
    model = helpers.sequential_model(initial_units=(6, 6))
    model.build((None, 2))
    return {
        "keras": keras,
        "keras_awn": keras_awn,
        "math": __import__("math"),
        "np": np,
        "x": x,
        "y": y,
        "images": images[..., None],
        "sequences": images,
        "labels": graph_labels,  # 0 or 1: one per graph, and per image
        "graphs": graphs,
        "node_features": batch["node_features"],
        "edge_index": batch["edge_index"],
        "graph_id": batch["graph_id"],
        "model": model,
    }


def example_code(documented):
    """The first ```python block of the docstring, dedented, or None."""
    blocks = re.findall(r"```python\n(.*?)```", documented.__doc__, flags=re.S)
    if not blocks:
        return None
    lines = blocks[0].splitlines()
    indent = min(len(line) - len(line.lstrip()) for line in lines if line.strip())
    return "\n".join(line[indent:] for line in lines)


def test_every_public_class_is_covered():
    names = {cls.__name__ for cls in DOCUMENTED if inspect.isclass(cls)}
    for name in ("AdaptiveDense", "AdaptiveMLP", "WidthController", "Model", "Sequential"):
        assert name in names


@pytest.mark.parametrize("documented", DOCUMENTED, ids=lambda cls: cls.__name__)
def test_docstring_example_runs(documented):
    assert "Example" in (documented.__doc__ or ""), f"{documented.__name__} has no Example"
    code = example_code(documented)
    if code is not None:
        exec(compile(code, f"<{documented.__name__} example>", "exec"), namespace())
        return
    # A doctest-style Example (`>>>`): its printed values are checked too.
    test = doctest.DocTestParser().get_doctest(
        documented.__doc__, namespace(), documented.__name__, None, 0
    )
    assert test.examples, f"{documented.__name__} has no runnable Example"
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    runner.run(test)
    assert runner.failures == 0
