"""The retry budget: retries stay a small share of the requests an upstream receives.

Per-call retry limits are not enough: when an upstream fails every call, each
call retrying three times quadruples the load on a service that is already
down. A budget caps retries (and hedges) across all calls instead: over a
sliding window, retries may be at most ``ratio`` of first attempts, plus a
small floor (``min_per_second``) so a quiet upstream can still retry at all.
Once spent, a failed call fails at once with the upstream's error.
"""

from __future__ import annotations

import math

from .._clock import Clock
from .._validate import check_float

__all__ = ["RetryBudget"]


class RetryBudget:
    """Counts first attempts and retries per second over ``window`` seconds.

    >>> from overdrive.testing import FakeClock
    >>> budget = RetryBudget(ratio=0.1, min_per_second=0.0, window=10, clock=FakeClock())
    >>> for _ in range(30):
    ...     budget.record_attempt()
    >>> [budget.try_spend() for _ in range(4)]
    [True, True, True, False]
    """

    __slots__ = ("_attempts", "_clock", "_retries", "_second", "min_per_second", "ratio", "window")

    def __init__(
        self, ratio: float, min_per_second: float, window: int = 10, *, clock: Clock
    ) -> None:
        self.ratio = check_float("retry.budget_ratio", ratio, 0.0, 1.0)
        self.min_per_second = check_float("retry.budget_min_per_second", min_per_second, 0.0)
        self.window = window
        self._clock = clock
        self._attempts = [0] * window
        self._retries = [0] * window
        self._second = math.floor(clock.now())

    def record_attempt(self) -> None:
        """A first attempt was sent: it earns ``ratio`` of a retry."""
        self._attempts[self._slot()] += 1

    def try_spend(self) -> bool:
        """Take one retry from the budget; False (nothing taken) when it is spent."""
        slot = self._slot()
        allowed = self.ratio * sum(self._attempts) + self.min_per_second * self.window
        if sum(self._retries) + 1 > allowed:
            return False
        self._retries[slot] += 1
        return True

    @property
    def retries(self) -> int:
        """Retries inside the window."""
        self._slot()
        return sum(self._retries)

    @property
    def attempts(self) -> int:
        """First attempts inside the window."""
        self._slot()
        return sum(self._attempts)

    def _slot(self) -> int:
        """The bucket of the current second, clearing buckets that fell out of the window."""
        second = math.floor(self._clock.now())
        for stale in range(self._second + 1, min(second, self._second + self.window) + 1):
            self._attempts[stale % self.window] = 0
            self._retries[stale % self.window] = 0
        self._second = max(self._second, second)
        return self._second % self.window

    def __repr__(self) -> str:
        return (
            f"RetryBudget(ratio={self.ratio:g}, attempts={self.attempts}, "
            f"retries={self.retries}, window={self.window}s)"
        )
