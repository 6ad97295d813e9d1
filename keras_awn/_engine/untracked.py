"""Holding a layer or a list of layers without Keras (or torch) tracking them."""


class Untracked:
    """Holds `value` where a plain attribute would be tracked.

    Keras tracks the layers and variables a layer's attributes hold (and torch registers them as
    submodules), so a reference to a *neighbouring* layer stored directly would make it a
    sublayer: saved twice, its weights counted twice.
    """

    def __init__(self, value=None):
        self.value = value

    def __repr__(self):
        return f"Untracked({self.value!r})"
