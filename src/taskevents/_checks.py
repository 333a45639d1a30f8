"""Argument checks shared by the core and the adapters; each raises ValidationError
naming the argument."""

from __future__ import annotations

from typing import Any

from .exceptions import ValidationError


def positive_int(value: Any, field: str) -> int:
    """``value`` if it is a whole number >= 1 (not a bool)."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValidationError(field, "a positive integer", value)
    return value


def number(value: Any, field: str, *, above: float | None = None, at_least: float = 0.0) -> float:
    """``value`` as a float if it is a number (not a bool) >= ``at_least``, or > ``above``."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        ok = False
    elif above is not None:
        ok = value > above
    else:
        ok = value >= at_least
    if not ok:
        expected = f"a number > {above:g}" if above is not None else f"a number >= {at_least:g}"
        raise ValidationError(field, expected, value)
    return float(value)
