"""Counters and log-bucketed histograms, keyed by name and labels."""

from __future__ import annotations

import math
from typing import Any, TypeVar

__all__ = ["Counter", "Histogram", "Metrics"]

# 32 buckets per doubling: a bucket spans 2.2%, so a percentile read from its
# midpoint is within about 1.1% of the exact value.
_BUCKETS_PER_OCTAVE = 32

LabelKey = tuple[tuple[str, str], ...]
S = TypeVar("S")


class Counter:
    """A monotonically increasing count."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount

    def __repr__(self) -> str:
        return f"Counter({self.value:g})"


class Histogram:
    """Distribution of non-negative observations in logarithmic buckets.

    >>> h = Histogram()
    >>> for v in (0.1, 0.2, 0.3):
    ...     h.observe(v)
    >>> round(h.percentile(50), 2)
    0.2
    """

    __slots__ = ("_buckets", "count", "max", "min", "sum", "zeros")

    def __init__(self) -> None:
        self._buckets: dict[int, int] = {}
        self.count = 0
        self.zeros = 0
        self.sum = 0.0
        self.min = math.inf
        self.max = 0.0

    def observe(self, value: float) -> None:
        self.count += 1
        self.sum += value
        self.min = min(self.min, value)
        self.max = max(self.max, value)
        if value <= 0:
            self.zeros += 1
            return
        index = math.floor(math.log2(value) * _BUCKETS_PER_OCTAVE)
        self._buckets[index] = self._buckets.get(index, 0) + 1

    def percentile(self, q: float) -> float:
        """The ``q``-th percentile (0-100); 0.0 when empty."""
        if self.count == 0:
            return 0.0
        rank = max(1, math.ceil(q / 100 * self.count))
        if rank <= self.zeros:
            return 0.0
        seen = self.zeros
        for index in sorted(self._buckets):
            seen += self._buckets[index]
            if seen >= rank:
                middle = 2 ** ((index + 0.5) / _BUCKETS_PER_OCTAVE)
                return min(max(middle, self.min), self.max)
        return self.max

    def mean(self) -> float:
        return self.sum / self.count if self.count else 0.0

    def summary(self) -> dict[str, float]:
        return {
            "count": self.count,
            "mean": self.mean(),
            "p50": self.percentile(50),
            "p95": self.percentile(95),
            "p99": self.percentile(99),
            "max": self.max,
        }

    def __repr__(self) -> str:
        return f"Histogram(count={self.count}, p50={self.percentile(50):.4g})"


class Metrics:
    """The registry the pipeline reports to.

    >>> metrics = Metrics()
    >>> metrics.counter("overdrive_cache_hits_total", op="chat").inc()
    >>> metrics.value("overdrive_cache_hits_total", op="chat")
    1.0
    """

    __slots__ = ("_counters", "_histograms")

    def __init__(self) -> None:
        self._counters: dict[tuple[str, LabelKey], Counter] = {}
        self._histograms: dict[tuple[str, LabelKey], Histogram] = {}

    def counter(self, name: str, **labels: str) -> Counter:
        return _series(self._counters, Counter, name, labels)

    def histogram(self, name: str, **labels: str) -> Histogram:
        return _series(self._histograms, Histogram, name, labels)

    def value(self, name: str, **labels: str) -> float:
        """Sum of the counters named ``name`` whose labels include ``labels``."""
        wanted = set(labels.items())
        return sum(
            c.value for (n, key), c in self._counters.items() if n == name and wanted <= set(key)
        )

    def snapshot(self) -> dict[str, Any]:
        """Plain data: every counter value and histogram summary, labels as dicts."""
        return {
            "counters": [
                {"name": n, "labels": dict(k), "value": c.value}
                for (n, k), c in sorted(self._counters.items())
            ],
            "histograms": [
                {"name": n, "labels": dict(k), **h.summary()}
                for (n, k), h in sorted(self._histograms.items())
            ],
        }

    def __repr__(self) -> str:
        return f"Metrics(counters={len(self._counters)}, histograms={len(self._histograms)})"


def _series(
    table: dict[tuple[str, LabelKey], S], make: type[S], name: str, labels: dict[str, str]
) -> S:
    """The series ``name`` with ``labels`` in ``table``, created on first use."""
    key = (name, tuple(sorted(labels.items())))
    found = table.get(key)
    if found is None:
        found = table[key] = make()
    return found
