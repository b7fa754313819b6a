"""When to hedge: send a second copy of a slow call once it is slower than most.

A hedge is worth its cost only for cheap, idempotent calls (embeddings, a
deterministic lookup), and only for the slow tail: waiting until the call has
taken longer than about the 95th percentile of recent attempts means roughly
one call in twenty sends a copy, while the tail it cuts is where agents lose
most time. Until enough attempts have been seen there is no estimate and no
hedge.
"""

from __future__ import annotations

from ..monitor import Histogram

__all__ = ["HedgeDelay"]


class HedgeDelay:
    """The latency ``quantile`` of recent attempts, re-read every ``refresh`` samples.

    >>> delay = HedgeDelay(quantile=95, min_samples=4)
    >>> for seconds in (0.1, 0.1, 0.1, 0.1, 2.0):
    ...     delay.observe(seconds)
    >>> delay.current is not None
    True
    """

    __slots__ = ("_histogram", "_until_refresh", "current", "min_samples", "quantile", "refresh")

    def __init__(self, quantile: float = 95.0, min_samples: int = 20, refresh: int = 32) -> None:
        self.quantile = quantile
        self.min_samples = min_samples
        self.refresh = refresh
        self.current: float | None = None
        self._histogram = Histogram()
        self._until_refresh = 0

    def observe(self, seconds: float) -> None:
        self._histogram.observe(seconds)
        self._until_refresh -= 1
        if self._histogram.count >= self.min_samples and self._until_refresh <= 0:
            # Reading a percentile walks the buckets; once per ``refresh`` keeps it cheap.
            self.current = self._histogram.percentile(self.quantile)
            self._until_refresh = self.refresh

    def __repr__(self) -> str:
        shown = "none yet" if self.current is None else f"{self.current * 1e3:.1f}ms"
        return f"HedgeDelay(p{self.quantile:g}={shown}, samples={self._histogram.count})"
