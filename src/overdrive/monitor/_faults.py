"""Faults the pipeline survives but must not hide: counted always, logged sparingly.

A cache tier that fails (a full disk, Redis gone) is skipped, so callers never
notice; an operator must. Every failure counts in
``overdrive_cache_tier_errors_total{tier, op}``; the log gets the first one
and then at most one line per ``interval`` per (tier, op), saying how many
were not logged in between, so a dead disk cannot flood it.

>>> from overdrive.testing import FakeClock
>>> from overdrive.monitor import Metrics
>>> faults = TierFaults(Metrics(), FakeClock(), interval=60.0)
>>> faults.report("disk", "write", OSError("database or disk is full"))
>>> faults.metrics.counter("overdrive_cache_tier_errors_total", tier="disk", op="write").value
1.0
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from .names import CACHE_TIER_ERRORS

if TYPE_CHECKING:
    from .._clock import Clock
    from ._metrics import Metrics
    from ._series import Counter

__all__ = ["LogThrottle", "TierFaults"]

_log = logging.getLogger("overdrive.cache")


class LogThrottle:
    """Lets one line through per ``interval`` seconds; counts the ones it held back."""

    __slots__ = ("_clock", "_interval", "_next_at", "held")

    def __init__(self, clock: Clock, interval: float) -> None:
        self._clock = clock
        self._interval = interval
        self._next_at = float("-inf")
        self.held = 0

    def admit(self) -> int | None:
        """None to stay quiet; else how many lines were held back since the last one."""
        now = self._clock.now()
        if now < self._next_at:
            self.held += 1
            return None
        self._next_at = now + self._interval
        held, self.held = self.held, 0
        return held


class TierFaults:
    """The cache tiers' failure hook: a counter per (tier, op), a throttled log line."""

    __slots__ = ("_clock", "_counters", "_interval", "_throttles", "metrics")

    def __init__(self, metrics: Metrics, clock: Clock, interval: float = 60.0) -> None:
        self.metrics = metrics
        self._clock = clock
        self._interval = interval
        self._counters: dict[tuple[str, str], Counter] = {}
        self._throttles: dict[tuple[str, str], LogThrottle] = {}

    def report(self, tier: str, op: str, error: Exception) -> None:
        """Count a failed ``op`` ("read", "write", "delete", ...) on ``tier``; maybe log it."""
        key = (tier, op)
        counter = self._counters.get(key)
        if counter is None:  # a handful of (tier, op) pairs: both maps stay tiny
            counter = self._counters[key] = self.metrics.counter(
                CACHE_TIER_ERRORS, tier=tier, op=op
            )
            self._throttles[key] = LogThrottle(self._clock, self._interval)
        counter.inc()
        held = self._throttles[key].admit()
        if held is not None:
            _log.warning(
                "cache tier %r: %s failed (%s); the tier is skipped meanwhile%s",
                tier,
                op,
                error,
                f"; {held} more failures since the last line" if held else "",
            )

    def __repr__(self) -> str:
        return f"TierFaults(pairs={sorted(self._counters)})"
