"""The benchmarks run (tiny sizes) and report what they measured. No timings checked."""

import os
import subprocess
import sys

import keras

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_quick(script, *arguments):
    """The standard output of `benchmarks/<script> --quick <arguments>`, which must succeed."""
    done = subprocess.run(
        [sys.executable, os.path.join(ROOT, "benchmarks", script), "--quick", *arguments],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_performance_benchmark_runs_in_quick_mode():
    backend = keras.backend.backend()
    output = run_quick(
        "performance.py", "--backends", backend, "--parts", "steps", "spiral", "settling"
    )
    rows = [line for line in output.splitlines() if line.startswith(f"| {backend} |")]
    # Two step-time rows for width 16, batch 32 (the ratios and what the per-step computation is
    # made of), and one row per capacity policy of the spiral run (two policies in quick mode).
    assert len([r for r in rows if "| 16 | 32 |" in r]) == 2
    assert len([r for r in rows if "floor" in r]) == 2
    # The settling part: two policies on each of its two tasks.
    assert len([r for r in rows if "(widths shrink)" in r]) == 2
    assert len([r for r in rows if "(widths grow)" in r]) == 2


def test_compression_benchmark_runs_in_quick_mode():
    backend = keras.backend.backend()
    output = run_quick(
        "compression.py", "--backend", backend, "--families", "tabular", "--seeds", "1",
        "--fractions", "0.5",
    )
    line = next(row for row in output.splitlines() if row.startswith("  tabular seed 0 f=0.5"))
    # Every method ran at the adaptive model's size.
    for method in ("adaptive", "adaptive_contribution", "magnitude", "scratch"):
        assert f"{method} " in line
