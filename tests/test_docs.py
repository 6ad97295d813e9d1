"""Every ```python block of README.md and docs/ runs as written (docs/custom-loops.md's blocks
on their own backend), with small data for the names a block leaves to the reader (`x`, `y`,
`graphs`, `labels`). A block that cannot run here says why on its first line (`# not run:`)."""

import contextlib
import io
import pathlib
import re
import textwrap

import keras
import numpy as np
import pytest

import keras_awn
from tests.families import cycles_and_paths

ROOT = pathlib.Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md"] + sorted((ROOT / "docs").glob("*.md")) + sorted(
    (ROOT / "docs" / "layers").glob("*.md")
)


def blocks():
    """`(id, code)` of every block meant to run on this backend."""
    found = []
    for page in PAGES:
        for index, code in enumerate(re.findall(r"```python\n(.*?)```", page.read_text(), re.S)):
            code = textwrap.dedent(code)  # blocks inside a list item are indented
            first = code.splitlines()[0] if code.strip() else ""
            if first.startswith("# not run:"):
                continue
            backend = re.match(r"# backend: (\w+)", first)
            if backend and backend.group(1) != keras.backend.backend():
                continue
            found.append((f"{page.relative_to(ROOT)}#{index}", code))
    return found


BLOCKS = blocks()


def test_the_pages_have_blocks_to_run():
    names = {name.split("#")[0] for name, _ in BLOCKS}
    assert {"README.md", "docs/index.md", "docs/custom-loops.md"} <= names


@pytest.mark.parametrize("code", [code for _, code in BLOCKS], ids=[name for name, _ in BLOCKS])
def test_the_block_runs_as_written(code, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # files a block saves land here
    x, y = keras_awn.datasets.spirals(256, seed=0)
    graphs, labels = cycles_and_paths(64)
    namespace = {"keras": keras, "keras_awn": keras_awn, "np": np, "x": x, "y": y,
                 "graphs": graphs, "labels": labels}
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(code, "<doc block>", "exec"), namespace)
    # A block that trains an adaptive model shows it learned widths within its capacities.
    model = namespace.get("model")
    if isinstance(model, keras.Model) and model.built and keras_awn.adaptive_layers(model):
        for layer in keras_awn.adaptive_layers(model):
            assert layer.active_units in range(1, layer.capacity + 1)
