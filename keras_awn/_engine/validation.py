"""Argument checks shared by keras_awn's layers and callbacks, with Keras-style messages.

Integers and reals are accepted in any form Python's number tower knows (numpy scalars such as
`np.int64(16)` included, as Keras accepts them); booleans are not numbers here.
"""

import math
import numbers


def is_integer(value) -> bool:
    """An integer (a Python or numpy one; not a boolean)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_number(value) -> bool:
    """A finite real number (a Python or numpy one; not a boolean)."""
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(float(value))
    except OverflowError:  # an integer too large for a float
        return False


def check_int(name: str, value, minimum: int = 1, allow_none: bool = False):
    """Raises a ValueError unless `value` is an integer >= `minimum` (or None when allowed);
    returns it as a Python int (or None)."""
    if allow_none and value is None:
        return None
    if not is_integer(value) or value < minimum:
        suffix = " or None" if allow_none else ""
        raise ValueError(
            f"`{name}` must be an integer >= {minimum}{suffix}. Received: {name}={value!r}"
        )
    return int(value)


def check_positive_number(name: str, value) -> float:
    """Raises a ValueError unless `value` is a finite number > 0; returns it as a float."""
    if not is_number(value) or not value > 0:
        raise ValueError(f"`{name}` must be a positive number. Received: {name}={value!r}")
    return float(value)


def check_in_open_interval(name: str, value, low: float, high: float) -> float:
    """Raises a ValueError unless `value` is a number with `low < value < high`."""
    if not is_number(value) or not low < value < high:
        raise ValueError(
            f"`{name}` must be a number in ({low}, {high}). Received: {name}={value!r}"
        )
    return float(value)


def check_fraction(name: str, value, low: float = 0.0, high: float = 1.0) -> float:
    """Raises a ValueError unless `value` is a number with `low <= value < high`."""
    if not is_number(value) or not low <= value < high:
        raise ValueError(
            f"`{name}` must be a number in [{low}, {high}). Received: {name}={value!r}"
        )
    return float(value)
