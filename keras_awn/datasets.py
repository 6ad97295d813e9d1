"""Small synthetic classification tasks (generated, nothing is downloaded).

The paper's synthetic benchmarks: two interleaved spirals (harder with more turns) and the double
moon. Both return float32 features in roughly [-1, 1] and int32 labels in {0, 1}.
"""

import numpy as np


def spirals(num_examples: int = 1000, turns: float = 1.0, noise: float = 0.05, seed: int = 0):
    """Two interleaved spirals.

    Args:
        num_examples: total number of points (split evenly between the two classes).
        turns: number of turns of each spiral; 2 gives the paper's "hard spiral".
        noise: standard deviation of the Gaussian noise added to each coordinate.
        seed: seed of the generator.

    Returns:
        `(x, y)`: float32 array of shape `(num_examples, 2)`, int32 array of shape
        `(num_examples,)`.
    """
    if num_examples < 2:
        raise ValueError(f"`num_examples` must be >= 2. Received: num_examples={num_examples}")
    if not turns > 0:
        raise ValueError(f"`turns` must be positive. Received: turns={turns}")
    rng = np.random.default_rng(seed)
    half = num_examples // 2
    counts = (half, num_examples - half)
    points, labels = [], []
    for label, count in enumerate(counts):
        # sqrt spreads the points evenly along the arc rather than bunching them at the centre.
        radius = np.sqrt(rng.uniform(0.0, 1.0, count))
        angle = radius * turns * 2.0 * np.pi + label * np.pi
        xy = np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=1)
        points.append(xy + rng.normal(0.0, noise, xy.shape))
        labels.append(np.full(count, label))
    x = np.concatenate(points).astype("float32")
    y = np.concatenate(labels).astype("int32")
    order = rng.permutation(num_examples)
    return x[order], y[order]


def moons(num_examples: int = 1000, noise: float = 0.1, seed: int = 0):
    """The double moon: two interleaving half circles.

    Returns:
        `(x, y)` as `spirals` does.
    """
    if num_examples < 2:
        raise ValueError(f"`num_examples` must be >= 2. Received: num_examples={num_examples}")
    rng = np.random.default_rng(seed)
    half = num_examples // 2
    outer = np.linspace(0.0, np.pi, half)
    inner = np.linspace(0.0, np.pi, num_examples - half)
    x = np.concatenate(
        [
            np.stack([np.cos(outer), np.sin(outer)], axis=1),
            np.stack([1.0 - np.cos(inner), 0.5 - np.sin(inner)], axis=1),
        ]
    )
    x = (x - [0.5, 0.25]) / 1.5 + rng.normal(0.0, noise, x.shape)
    y = np.concatenate([np.zeros(half), np.ones(num_examples - half)]).astype("int32")
    order = rng.permutation(num_examples)
    return x[order].astype("float32"), y[order]


def split(x, y, test_fraction: float = 0.2):
    """Splits arrays into train and test parts (they come shuffled from the generators)."""
    cut = int(round(len(x) * (1.0 - test_fraction)))
    return (x[:cut], y[:cut]), (x[cut:], y[cut:])
