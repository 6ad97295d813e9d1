"""Argument checks shared by keras_awn's layers and callbacks, with Keras-style messages."""


def check_int(name: str, value, minimum: int = 1, allow_none: bool = False) -> None:
    """Raises a ValueError unless `value` is an int >= `minimum` (or None when allowed)."""
    if allow_none and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        suffix = " or None" if allow_none else ""
        raise ValueError(
            f"`{name}` must be an integer >= {minimum}{suffix}. Received: {name}={value!r}"
        )


def check_positive_number(name: str, value) -> None:
    """Raises a ValueError unless `value` is a number > 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"`{name}` must be a positive number. Received: {name}={value!r}")


def check_in_open_interval(name: str, value, low: float, high: float) -> None:
    """Raises a ValueError unless `value` is a number with `low < value < high`."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low < value < high:
        raise ValueError(
            f"`{name}` must be a number in ({low}, {high}). Received: {name}={value!r}"
        )


def check_fraction(name: str, value, low: float = 0.0, high: float = 1.0) -> None:
    """Raises a ValueError unless `value` is a number with `low <= value < high`."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value < high:
        raise ValueError(
            f"`{name}` must be a number in [{low}, {high}). Received: {name}={value!r}"
        )
