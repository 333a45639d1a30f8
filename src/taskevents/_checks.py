"""Argument checks shared by the core and the adapters; each raises ValidationError
naming the argument."""

from __future__ import annotations

import math
import re
from typing import Any

from .exceptions import ValidationError


def positive_int(value: Any, field: str) -> int:
    """``value`` if it is a whole number >= 1 (not a bool)."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValidationError(field, "a positive integer", value)
    return value


def number(value: Any, field: str, *, above: float | None = None, at_least: float = 0.0) -> float:
    """``value`` as a float if it is a finite number (not a bool) >= ``at_least``, or >
    ``above``."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        ok = False
    elif not math.isfinite(value):
        raise ValidationError(field, "a finite number", value)
    elif above is not None:
        ok = value > above
    else:
        ok = value >= at_least
    if not ok:
        expected = f"a number > {above:g}" if above is not None else f"a number >= {at_least:g}"
        raise ValidationError(field, expected, value)
    return float(value)


#: Longest subject name (a subject is what clients subscribe to, e.g. ``"aws01"``).
MAX_SUBJECT_LENGTH = 128
#: Longest task id and task type.
MAX_NAME_LENGTH = 256
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")
SUBJECT_RULE = f"a string of 1 to {MAX_SUBJECT_LENGTH} characters, no control characters"


def is_valid_name(value: object, max_length: int) -> bool:
    """Whether ``value`` is a string of 1 to ``max_length`` characters with no control
    characters (and no lone surrogates, which no UTF-8 sink can encode)."""
    if not isinstance(value, str) or not value or len(value) > max_length:
        return False
    if _CONTROL_CHARACTERS.search(value):
        return False
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return False
    return True


def subject(value: Any, field: str = "subject") -> str:
    """``value`` if it is a valid subject name: the rule clients are held to as well."""
    if not is_valid_name(value, MAX_SUBJECT_LENGTH):
        raise ValidationError(field, SUBJECT_RULE, value)
    return str(value)


def name(value: Any, field: str) -> str:
    """``value`` if it is a valid task id or task type."""
    if not is_valid_name(value, MAX_NAME_LENGTH):
        raise ValidationError(
            field, f"a string of 1 to {MAX_NAME_LENGTH} characters, no control characters", value
        )
    return str(value)
