"""The width search: how many units a layer needs, read from prefixes of its units.

The paper learns the width by gradient through the importance, but the importance is redundant
with the weights that read it (scaling unit i's importance by a and its outgoing weights by 1/a
changes nothing), so that gradient averages to about zero once the weights have adapted, and a
masked unit gives no signal at all: widths stay near where they start (docs/study/
width_search.md, "Why the width barely moves"). The search measures instead.

A layer's units are ordered (importance decreases with the index) and trained with stochastic
prefixes (`AdaptiveWidthLayer._stochastic_prefixes`: half of a batch's examples see only the
first c units, c log-uniform between an eighth of the width and the width), so the model with a
layer cut to its first w units is a trained model of width w. Every `search_every` steps the
`WidthController` scores the model on a probe of training examples with each layer cut to
prefixes (`Probe`), finds the smallest prefix within tolerance of the whole layer (`needed`),
and sets the width (`WidthSearch.target_width`):

- `needed >= grow_at * width`: the layer needs (nearly) all its units: it doubles. The new units
  start with zero outgoing weights, so the model computes the same function, and training
  decides whether they are used;
- otherwise the width becomes `headroom * needed` (a shrink, or no change): room to see whether
  more units would help.

At the end of the search (the last `final_share` of the epochs) each layer keeps
`final_margin * needed` units and trains on all of them (`WidthSearch.final_width`).
`set_width` applies a width without changing what the kept units compute.
"""

import math

import numpy as np
from keras import ops

from keras_awn._engine import folding
from keras_awn._engine import interrupts
from keras_awn._engine import running_state
from keras_awn._engine import topology

# The search does not judge narrower widths, and moves a narrower layer up to it: with the
# paper's offset of 2, the last of fewer units carries under a twentieth of the first one's
# importance, so whether it is needed cannot be read from prefixes (a layer started at 4 units
# stayed there on a task needing 256). The fixed-width grid of the paper starts at 8 too.
MIN_SEARCH_WIDTH = 8


class WidthSearch:
    """Decides a layer's next width from the scores of prefixes of its units.

    The score (lower is better; see `Probe`) is read with the layer cut to its first `w` units.
    `value = score(0) - score(width)` is what the layer adds at all; a prefix is enough when it
    loses at most `tolerance * value`.

    Args:
        tolerance: float in (0, 1), the share of the layer's value a prefix may lose.
        final_margin: float >= 1, the units kept per needed unit when the search ends.
        grow_at: float in (0, 1], the share of its width a layer must need to double.
        headroom: float > 1 / grow_at, the width per needed unit while searching.
        fractions: the prefixes probed, as shares of the width (ascending).
    """

    def __init__(
        self,
        tolerance=0.01,
        final_margin=1.25,
        grow_at=0.75,
        headroom=1.5,
        fractions=(0.125, 0.25, 0.375, 0.5, 0.625),
    ):
        self.tolerance = float(tolerance)
        self.final_margin = float(final_margin)
        self.grow_at = float(grow_at)
        self.headroom = float(headroom)
        self.fractions = tuple(fractions)

    def target_width(self, width: int, score) -> int:
        """The next width of a layer at `width` (`score(units)` as above)."""
        if width < MIN_SEARCH_WIDTH:
            return MIN_SEARCH_WIDTH
        full = score(width)
        value = score(0) - full
        if not value > 0:
            return width  # the layer adds nothing yet: no evidence either way
        allowed = self.tolerance * value
        needed = width
        for fraction in self.fractions:
            units = max(math.ceil(fraction * width), 1)
            if score(units) - full <= allowed:
                needed = units
                break
        if needed >= self.grow_at * width:
            return 2 * width
        return max(min(math.ceil(self.headroom * needed), width), MIN_SEARCH_WIDTH)

    def needed_units(self, width: int, score, steps: int = 8) -> int:
        """The smallest of `width / steps, 2 * width / steps, ...` units within tolerance."""
        full = score(width)
        value = score(0) - full
        if not value > 0:
            return width
        for step in range(1, steps):
            units = math.ceil(step * width / steps)
            if score(units) - full <= self.tolerance * value:
                return units
        return width

    def final_width(self, width: int, score) -> int:
        """The width a layer keeps for the rest of training."""
        if width < MIN_SEARCH_WIDTH:
            return width
        needed = self.needed_units(width, score)
        return min(max(math.ceil(self.final_margin * needed), MIN_SEARCH_WIDTH), width)


def _reader_kernels(links):
    """`[(variable, axis)]`: the kernels reading the producer's importance-scaled units directly
    (a block's internal reader counts as direct); normalizations are left out, they rescale."""
    readers = links.direct_readers or [
        reader for reader in links.consumers if not topology.is_normalization(reader)
    ]
    kernels = []
    for reader in readers:
        if topology.is_normalization(reader):
            continue
        kernels.append(topology.reader_input_variables(reader)[0])
    return kernels


def set_width(layer, units: int, links) -> None:
    """Sets `layer`'s width to `units`, keeping what the model computes from its kept units.

    The importance of every unit changes with the width (the distribution is rescaled), so the
    rows of the layers reading it are rescaled by `old / new` importance (a BatchNormalization
    reader's statistics and `gamma` follow the new scale instead); units the width newly
    covers get zero outgoing weights (function-preserving growth). Units the width leaves are
    masked, as any unit beyond the width. Called between steps, with the state synced.
    """
    old_raw = float(running_state.host_value(layer.width_parameter))
    old_active = layer.active_units_on_host(old_raw)
    new_raw = layer.distribution.raw_for_width(int(units), layer.quantile)
    # Below the distributions' narrowest width (3 units) the caller also lowers the capacity
    # (or `max_units`) to `units`: the importance is then spread over `units` units.
    new_active = min(layer.active_units_on_host(new_raw), int(units))
    if new_active == old_active:
        return
    old_importance = layer.distribution.importance_on_host(
        old_raw, old_active, layer.importance_normalization
    )
    new_importance = layer.distribution.importance_on_host(
        new_raw, new_active, layer.importance_normalization
    )
    kept = min(old_active, new_active)
    scale = np.zeros(layer.capacity)
    scale[:kept] = old_importance[:kept] / new_importance[:kept]
    scale[kept:new_active] = 0.0  # newly covered units: no outgoing weights yet
    scale[new_active:] = 1.0  # masked units keep their weights
    assignments = []
    for reader in links.direct_readers:
        if topology.is_normalization(reader):
            # Its inputs are multiplied by new / old importance (`1 / scale`): its statistics
            # follow, so that inference computes the same.
            assignments += folding.normalization_assignments(reader, 1.0 / scale[:kept])
    for variable, axis in _reader_kernels(links):
        value = running_state.host_value(variable)
        shape = [1] * value.ndim
        shape[axis] = -1
        factor = scale[: value.shape[axis]].reshape(shape)
        assignments.append((variable, (value * factor).astype(value.dtype)))
    assignments.append((layer.width_parameter, new_raw))
    # All or nothing: rescaled readers with the old width would change what the model computes.
    with interrupts.deferred():
        for variable, value in assignments:
            variable.assign(value)


def _one_hot(values) -> bool:
    """Whether `values` are one-hot rows (class labels), not real-valued targets."""
    return bool(np.all((values == 0) | (values == 1)) and np.all(values.sum(axis=-1) == 1))


class Probe:
    """Scores a model on a fixed sample of training examples, with layers cut to prefixes.

    The score is the error rate when the model outputs one score per class and the labels are
    class indices or one-hot vectors, so that sharper margins on separable data do not count as
    a need for more units; otherwise it is the model's compiled loss.

    Args:
        x: inputs of the probe examples (arrays, or a list of arrays).
        y: their targets.
    """

    def __init__(self, x, y):
        self.x = x
        # One array of targets as numpy (its labels are compared on the host); structures of
        # targets (several outputs) go to the model's loss as they are.
        self.y = y if isinstance(y, (list, tuple, dict)) else np.asarray(ops.convert_to_numpy(y))

    def score(self, model, layer=None, units=None) -> float:
        """The probe's score with `layer` cut to its first `units` units (lower is better)."""
        if layer is not None:
            layer.training_state.probe_cut = units
        try:
            predictions = model(self.x, training=False)
        finally:
            if layer is not None:
                layer.training_state.probe_cut = None
        return self._score(model, predictions)

    def _score(self, model, predictions):
        if not isinstance(predictions, (list, tuple, dict)):
            values = running_state.host_value(predictions)
            targets = self.y if isinstance(self.y, np.ndarray) else None
            if targets is not None:
                if targets.ndim == values.ndim and targets.shape[-1] == 1 and values.shape[-1] > 1:
                    targets = targets[..., 0]
                if values.ndim >= 2 and values.shape[-1] > 1:
                    if targets.shape == values.shape and _one_hot(targets):
                        targets = np.argmax(targets, axis=-1)
                    if targets.shape == values.shape[:-1] and np.issubdtype(
                        targets.dtype, np.integer
                    ):
                        return float(np.mean(np.argmax(values, axis=-1) != targets))
        # Several outputs, real-valued targets: the model's own loss.
        loss = model.compute_loss(self.x, self.y, predictions, training=False)
        return float(running_state.host_value(loss))
