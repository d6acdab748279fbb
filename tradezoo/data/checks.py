"""Argument checks shared by the data layer and the environments (errors name the argument,
the rule and the value)."""

from __future__ import annotations

import numbers

__all__ = ["check_int"]


def check_int(name: str, value: object, minimum: int) -> int:
    """``value`` as an ``int`` >= ``minimum``.

    Raises:
        TypeError: not an integer (``bool`` counts as not one).
        ValueError: an integer below ``minimum``.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if int(value) < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)
