"""Checks of numeric settings, once: a bad number is a ConfigError naming the field and the value.

Every part that takes a count, a share or a duration checks it here, so a
wrong one reads alike wherever it was given. ``bool`` is refused where a
number is expected (``True`` as a batch size is a bug, not 1), and so is NaN,
which would slip through every comparison.

>>> check_int("max_batch", 64, 1, 10_000)
64
>>> check_int("max_batch", 0, 1, 10_000)
Traceback (most recent call last):
...
overdrive._errors.ConfigError: config field `max_batch`: must be an integer in [1, 10000], got 0
"""

from __future__ import annotations

import math
from typing import TypeGuard

from ._errors import ConfigError

__all__ = ["check_duration", "check_float", "check_int"]


def check_int(field: str, value: object, low: int | None, high: int | None = None) -> int:
    """``value`` if it is an int from ``low`` up to ``high`` (None: no bound that side)."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or (low is not None and value < low)
        or (high is not None and value > high)
    ):
        floor, ceiling = -math.inf if low is None else low, math.inf if high is None else high
        span = _span(floor, ceiling, open_low=False)
        raise ConfigError(field, f"must be an integer{span}, got {value!r}")
    return value


def check_float(
    field: str,
    value: object,
    low: float = -math.inf,
    high: float = math.inf,
    *,
    open_low: bool = False,
    finite: bool = False,
) -> float:
    """``value`` as a float if it is a number in ``[low, high]`` (``(low, high]`` if ``open_low``).

    An infinite bound admits infinity itself unless ``finite``.
    """
    if not _within(value, low, high, open_low=open_low, finite=finite):
        kind = "a finite number" if finite else "a number"
        raise ConfigError(field, f"must be {kind}{_span(low, high, open_low)}, got {value!r}")
    return float(value)


def check_duration(
    field: str, value: object, *, positive: bool = False, high: float = math.inf
) -> float:
    """``value`` as seconds: a finite number >= 0 (> 0 if ``positive``) and at most ``high``.

    Infinity is refused: a setting with no time limit is spelled ``None``.
    """
    if not _within(value, 0.0, high, open_low=positive, finite=True):
        raise ConfigError(
            field, f"must be a duration in seconds{_span(0.0, high, positive)}, got {value!r}"
        )
    return float(value)


def _within(
    value: object, low: float, high: float, *, open_low: bool, finite: bool
) -> TypeGuard[int | float]:
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        return False
    if finite and math.isinf(value):
        return False
    return (low < value if open_low else low <= value) and value <= high


def _span(low: float, high: float, open_low: bool) -> str:
    """The allowed range in words, after a space: `` in (0, 1]``, `` >= 1``, `` <= 60``."""
    if math.isfinite(low) and math.isfinite(high):
        return f" in {'(' if open_low else '['}{_show(low)}, {_show(high)}]"
    if math.isfinite(low):
        return f" {'>' if open_low else '>='} {_show(low)}"
    if math.isfinite(high):
        return f" <= {_show(high)}"
    return ""


def _show(bound: float) -> str:
    return str(bound) if isinstance(bound, int) else f"{bound:g}"
