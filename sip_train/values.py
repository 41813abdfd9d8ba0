"""One check for the values of settings: a number of the right kind in its interval, or one of a few
choices; anything else is a ValueError naming the key, the value and what is allowed, in one line."""
from __future__ import annotations

import math
import re
from typing import Any, Sequence

_INTERVAL = re.compile(r"^([\[(])\s*(-?inf|-?[0-9.e+-]+)\s*,\s*(-?inf|-?[0-9.e+-]+)\s*([\])])$")


def _bounds(interval: str) -> tuple[float, float, bool, bool]:
    """(low, high, low included, high included) of an interval written as "[1, inf)", "(0, 1]", ..."""
    match = _INTERVAL.match(interval)
    if match is None:
        raise ValueError(f"interval {interval!r} is not of the form '[low, high)'")
    opening, low, high, closing = match.groups()
    return float(low), float(high), opening == "[", closing == "]"


def _allowed(kind: str, interval: str) -> str:
    """The values of `interval` in words: "a positive integer", "a non-negative number", "in [-1, 1]"."""
    low, high, low_in, _ = _bounds(interval)
    if high == math.inf and low == 0:
        return f"a {'non-negative' if low_in else 'positive'} {kind}"
    if kind == "integer" and high == math.inf and low == 1 and low_in:
        return "a positive integer"
    return f"in {interval}" if kind == "number" else f"an integer in {interval}"


def _checked(key: str, value: Any, kind: str, interval: str, optional: bool) -> Any:
    if value is None and optional:
        return None
    low, high, low_in, high_in = _bounds(interval)
    types = (int,) if kind == "integer" else (int, float)
    fits = (isinstance(value, types) and not isinstance(value, bool)
            and (value >= low if low_in else value > low) and (value <= high if high_in else value < high))
    if not fits:
        raise ValueError(f"{key}={value!r} is invalid: must be {_allowed(kind, interval)}{' or null' if optional else ''}")
    return value


def integer(key: str, value: Any, interval: str = "[1, inf)", optional: bool = False) -> int | None:
    """`value` if it is an integer (not a bool) in `interval` (or None where `optional`), else a ValueError
    naming `key`: `integer("updates_per_step", 0)` -> "updates_per_step=0 is invalid: must be a positive integer"."""
    return _checked(key, value, "integer", interval, optional)


def number(key: str, value: Any, interval: str = "(0, inf)", optional: bool = False) -> float | None:
    """`value` as a float if it is a number (not a bool, not NaN) in `interval` (or None where `optional`), else
    a ValueError naming `key`: `number("optimizer.kappa", 2, "[-1, 1]")` -> "... must be in [-1, 1]"."""
    checked = _checked(key, value, "number", interval, optional)
    return None if checked is None else float(checked)


def choice(key: str, value: Any, choices: Sequence[Any]) -> Any:
    """`value` if it is one of `choices`, else a ValueError naming `key` and the choices."""
    if value not in choices:
        raise ValueError(f"{key}={value!r} is invalid: choose one of {list(choices)}")
    return value
