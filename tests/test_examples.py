"""The main job, examples/spiral.py, run with its default settings on the current backend."""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples"))

import spiral  # noqa: E402


def test_spiral_example(tmp_path, capsys):
    result = spiral.main(["--output", str(tmp_path)])
    output = capsys.readouterr().out
    assert "learned widths" in output and "reallocation" in output
    # The train step is rebuilt at most log2(final / initial) + 2 times per adaptive layer.
    assert result["within_rebuild_bound"], result["reallocations"]
    assert result["test_accuracy"] > 0.95
    # Widths grew from the initial 4 units: the capacity had to be reallocated at least once.
    assert result["rebuilds"] >= 1
    assert max(result["widths"].values()) > 4
    assert result["reload_error"] == 0.0
    assert result["strip_error"] < 1e-5
    assert result["truncation"][0.0] == result["test_accuracy"]
    assert (tmp_path / "spiral_plain.keras").exists()


def test_annealing_example_prints_both_runs(capsys):
    import annealing

    result = annealing.main(["--epochs", "8", "--start", "3", "--initial-units", "8"])
    output = capsys.readouterr().out
    assert "| epoch | annealed: total width" in output and "Annealing from epoch 3" in output
    assert len(result["annealed"]) == len(result["reference"]) == 8
    # Same weights and batches: the two runs are the same until annealing starts (epoch 4).
    assert result["annealed"][:3] == result["reference"][:3]
