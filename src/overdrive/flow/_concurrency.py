"""Concurrency limits for one upstream: how many calls may be in flight at once.

Three modules, one per part: the slot keeping every limit shares (permits,
waiting in arrival order) is in ``_permits``; the adaptive limit, which
follows the upstream's latency, is in ``_adaptive``; the fixed limit is here,
with the names of all three for ``overdrive.flow``.
"""

from __future__ import annotations

import sys

from .._clock import Clock
from .._validate import check_int
from ._adaptive import AdaptiveLimit
from ._permits import ConcurrencyLimit, Outcome, Permit

__all__ = ["AdaptiveLimit", "ConcurrencyLimit", "FixedLimit", "Outcome", "Permit"]


class FixedLimit(ConcurrencyLimit):
    """A limit that moves only when set; ``record`` changes nothing.

    >>> FixedLimit(4)
    FixedLimit(limit=4, in_flight=0, waiting=0)
    """

    __slots__ = ("_limit",)

    def __init__(self, limit: int, *, clock: Clock | None = None) -> None:
        super().__init__(min_limit=1, max_limit=sys.maxsize, clock=clock)
        self._limit = self._check_limit(limit)

    @property
    def limit(self) -> int:
        return self._limit

    @limit.setter
    def limit(self, value: int) -> None:
        self._limit = self._check_limit(value)
        self._wake()

    def _check_limit(self, value: int) -> int:
        return check_int("limit", value, 1)  # no ceiling: sys.maxsize only stands in for none

    def __repr__(self) -> str:
        return (
            f"FixedLimit(limit={self._limit}, in_flight={self._in_flight}, waiting={self.waiting})"
        )
