"""The examples: the main job (examples/demo.py), annealing, every comparison task and the reproduce command."""

import json
import os
import sys

import keras
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples"))

import demo  # noqa: E402


def test_spiral_example(tmp_path, capsys):
    result = demo.main(["--output", str(tmp_path)])
    output = capsys.readouterr().out
    assert "learned widths" in output and "reallocation" in output
    # Each adaptive layer grows at most log2(final / initial) + 2 times (its reductions are
    # weighed against the measured rebuild cost: tests/_engine/test_capacity_policy.py).
    assert result["within_rebuild_bound"], result["reallocations"]
    assert result["test_accuracy"] > 0.95
    # Widths grew from the initial 4 units, within capacities that held them.
    assert max(result["widths"].values()) > 4
    assert all(result["widths"][name] <= result["capacities"][name] for name in result["widths"])
    assert result["reload_error"] == 0.0
    # The same sums in another order: float32 round-off, relative to the logits' size.
    assert result["strip_error"] < 1e-5 * max(1.0, result["logit_scale"])
    assert result["truncation"][0.0] == result["test_accuracy"]
    assert (tmp_path / "spiral_plain.keras").exists()


def test_annealing_example_prints_both_runs(capsys):
    import annealing

    # Annealing rebuilds the step every epoch it changes the prior: few annealed epochs.
    result = annealing.main(["--epochs", "5", "--start", "3", "--initial-units", "8"])
    output = capsys.readouterr().out
    assert "| epoch | annealed: total width" in output and "Annealing from epoch 3" in output
    assert len(result["annealed"]) == len(result["reference"]) == 5
    # Same weights and batches: the two runs are the same until annealing starts (epoch 4).
    assert result["annealed"][:3] == result["reference"][:3]


def test_compression_example_compresses_to_the_fraction(capsys):
    import compress

    small = compress.main(["--epochs", "2", "--fine-tune-epochs", "2", "--fraction", "0.5"])
    output = capsys.readouterr().out
    assert "trained:" in output and "compressed:" in output
    # The recipe's model is plain Keras, with half of the filters and hidden units.
    assert small.get_layer("conv_1").filters == 16 and small.get_layer("hidden").units == 32
    change = float(output.split("largest prediction change ")[1].split()[0])
    assert change < 1e-3


from examples import compare  # noqa: E402
from examples import reproduce  # noqa: E402
from examples import tasks  # noqa: E402


@pytest.mark.parametrize("name", sorted(tasks.TASKS))
def test_every_task_trains_its_fixed_and_adaptive_models(name):
    task = tasks.get(name, epochs=1)
    # The grid's width is the width of the fixed model: more units, more parameters.
    assert task.fixed_model(8).count_params() < task.fixed_model(16).count_params()
    results = compare.compare(task, seeds=1, widths=(8,), log=lambda *_: None)
    (fixed,), (adaptive,) = results["fixed"], results["adaptive"]
    assert 0.0 <= fixed["accuracy"] <= 1.0 and 0.0 <= adaptive["accuracy"] <= 1.0
    assert adaptive["widths"] and set(adaptive["width_history"]) == set(adaptive["widths"])
    assert all(len(h) == 1 for h in adaptive["width_history"].values())
    assert "| adaptive, recommended |" in compare.table(results)


def test_tasks_get_refuses_unknown_names_and_settings():
    with pytest.raises(ValueError, match="Received: name='mnist'"):
        tasks.get("mnist")
    with pytest.raises(ValueError, match="Received: epoch=3"):
        tasks.get("moons", epoch=3)
    assert tasks.get("moons", epochs=3).epochs == 3 and tasks.TASKS["moons"].epochs != 3


def test_reproduce_writes_the_results_page(tmp_path, monkeypatch):
    # One task, two epochs, two stability runs: the whole pipeline, small.
    monkeypatch.setattr(reproduce, "STABILITY_INITIAL_UNITS", (4,))
    monkeypatch.setattr(reproduce, "STABILITY_BATCH_SIZES", (128,))
    arguments = ["--tasks", "moons", "--seeds", "1", "--widths", "8", "--epochs", "2"]
    arguments += ["--results", str(tmp_path / "results"), "--docs", str(tmp_path / "docs")]
    reproduce.main(arguments)
    backend = keras.backend.backend()
    page = (tmp_path / "docs" / "results.md").read_text()
    saved = json.loads((tmp_path / "results" / f"reproduce_{backend}.json").read_text())
    assert f"## {backend}" in page
    for claim in ("1. **", "3. **", "4. **", "5. **"):
        assert claim in page
    # The page shows the saved numbers: each fixed run's accuracy, the truncation curves.
    for run in saved["tasks"]["moons"]["fixed"]:
        assert f"| fixed, width {run['width']}" in page and f"{run['accuracy']:.3f}" in page
    assert " | ".join(f"{a:.3f}" for a in saved["truncation"]["moons"]["curves"]["adaptive"]) in page
    for figure in ("moons", "truncation", "annealing", "stability"):
        assert (tmp_path / "docs" / "results" / backend / f"{figure}.png").stat().st_size > 1000
        assert f"results/{backend}/{figure}.png" in page
    # Rendering again from the saved results gives the same page.
    reproduce.main(arguments + ["--render-only"])
    assert (tmp_path / "docs" / "results.md").read_text() == page
