"""Digits read row by row: an adaptive recurrent layer against fixed-width ones.

Prints each run, then the table: test accuracy (mean +- std over seeds), learned widths,
parameters and wall time of the adaptive model and of every fixed width of the grid.
Run it on any backend (about the time given in docs/results.md):

    KERAS_BACKEND=jax python examples/digits_rnn.py
    KERAS_BACKEND=torch python examples/digits_rnn.py --seeds 1 --widths 8 128

The task itself (data, models, settings) is `examples/tasks.py::digits_rnn`.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from examples import compare  # noqa: E402

if __name__ == "__main__":
    compare.main("digits_rnn")
