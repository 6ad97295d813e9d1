"""Two spirals, 1 turn and 2 turns (the paper's "hard spiral"): adaptive MLPs against the grid.

Prints each run, then one table per task: test accuracy (mean +- std over seeds), learned
widths, parameters and wall time of the adaptive model and of every fixed width of the grid.
The learned width follows the difficulty: the hard spiral ends wider. Run it on any backend:

    KERAS_BACKEND=jax python examples/spirals.py
    KERAS_BACKEND=torch python examples/spirals.py --seeds 1

`examples/demo.py` is the walk-through (training, saving, truncating, stripping) on one spiral.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from examples import compare  # noqa: E402

if __name__ == "__main__":
    for task in ("spiral", "hard_spiral"):
        compare.main(task)
