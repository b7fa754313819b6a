"""Retry decisions: which outcomes to retry and how long to wait first."""

from __future__ import annotations

import random
from collections.abc import Mapping
from email.utils import parsedate_to_datetime
from time import time

__all__ = ["RETRYABLE_STATUSES", "Backoff", "retry_after"]

# 408 timeout, 409 conflict (OpenAI uses it for transient lock errors), 5xx,
# and Anthropic's 529 "overloaded", which is a 503 in all but number.
RETRYABLE_STATUSES = frozenset({408, 409, 500, 502, 503, 504, 529})
# A server asking for a longer pause is treated as down, not as busy.
_MAX_RETRY_AFTER = 60.0


class Backoff:
    """Full-jitter exponential backoff: a uniform draw in ``[0, min(cap, base * 2**n)]``.

    >>> backoff = Backoff(base=0.5, cap=8.0, rng=random.Random(1))
    >>> 0 <= backoff.delay(3) <= 4.0
    True
    """

    __slots__ = ("_rng", "base", "cap")

    def __init__(self, base: float, cap: float, rng: random.Random | None = None) -> None:
        self.base = base
        self.cap = cap
        self._rng = rng or random.Random()

    def delay(self, attempt: int) -> float:
        """Seconds to wait before retry number ``attempt`` (0 for the first retry)."""
        ceiling = min(self.cap, self.base * 2.0 ** min(attempt, 30))
        return self._rng.uniform(0.0, ceiling)

    def __repr__(self) -> str:
        return f"Backoff(base={self.base}, cap={self.cap})"


def retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds the server asked us to wait (``retry-after-ms`` or ``retry-after``), if sane."""
    millis = _to_float(headers.get("retry-after-ms", ""))
    seconds = millis / 1000 if millis is not None else None
    if seconds is None:
        value = headers.get("retry-after")
        seconds = _parse_retry_after(value) if value is not None else None
    if seconds is None or not 0 <= seconds <= _MAX_RETRY_AFTER:
        return None
    return seconds


def _parse_retry_after(value: str) -> float | None:
    seconds = _to_float(value)
    if seconds is not None:
        return seconds
    try:
        return parsedate_to_datetime(value).timestamp() - time()
    except (TypeError, ValueError):
        return None


def _to_float(value: str) -> float | None:
    try:
        number = float(value)
    except ValueError:
        return None
    return number if number == number else None  # NaN is not a wait
