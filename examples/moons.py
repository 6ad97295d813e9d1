"""Double moon: an adaptive MLP against plain MLPs of the grid's fixed widths.

Prints each run, then the table: test accuracy (mean +- std over seeds), learned widths,
parameters and wall time of the adaptive model and of every fixed width of the grid.
Run it on any backend (about the time given in docs/results.md):

    KERAS_BACKEND=jax python examples/moons.py
    KERAS_BACKEND=torch python examples/moons.py --seeds 1 --widths 8 128

The task itself (data, models, settings) is `examples/tasks.py::moons`.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from examples import compare  # noqa: E402

if __name__ == "__main__":
    compare.main("moons")
