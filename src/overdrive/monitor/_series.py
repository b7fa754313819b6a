"""The three series kinds: counters, gauges and log-bucketed histograms.

A :class:`Histogram` keeps one count per fine logarithmic bucket, 64 buckets per
doubling (HDR-style), so any percentile is within 0.55% of the exact order
statistic at a cost of one ``log2`` and one dict update per observation.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence

__all__ = ["Counter", "Gauge", "Histogram"]

# 64 buckets per doubling: a bucket spans 2**(1/64) - 1 = 1.09%, and a percentile
# read from the bucket's geometric middle is within half of that (0.55%) of exact.
_PER_OCTAVE = 64
# Added before ``int()`` so truncation is ``floor`` for every positive double
# (log2 of the smallest subnormal is -1074) without calling ``math.floor``.
_OFFSET = 1 << 17
_TOP = _OFFSET + 1024 * _PER_OCTAVE  # where +inf lands
_INF = math.inf
_log2 = math.log2


class Counter:
    """A monotonically increasing count.

    >>> c = Counter()
    >>> c.inc(); c.inc(2)
    >>> c.value
    3.0
    """

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        if amount < 0:
            raise ValueError(f"a counter only goes up; got inc({amount!r})")
        self.value += amount

    def __repr__(self) -> str:
        return f"Counter({self.value:g})"


class Gauge:
    """A value that goes up and down, or a function read when the gauge is read.

    >>> g = Gauge()
    >>> g.set(4); g.dec()
    >>> g.value
    3.0
    >>> g.set_function(lambda: 7)
    >>> g.value
    7.0
    """

    __slots__ = ("_function", "_value")

    def __init__(self) -> None:
        self._value = 0.0
        self._function: Callable[[], float] | None = None

    @property
    def value(self) -> float:
        """The set value, or the callback's current answer."""
        return self._value if self._function is None else float(self._function())

    def set(self, value: float) -> None:
        self._value = float(value)

    def inc(self, amount: float = 1.0) -> None:
        self._value += amount

    def dec(self, amount: float = 1.0) -> None:
        self._value -= amount

    def set_function(self, function: Callable[[], float] | None) -> None:
        """Read ``function()`` at every read (scrape, snapshot); ``None`` goes back to ``set``."""
        self._function = function

    def __repr__(self) -> str:
        source = "callback" if self._function is not None else "set"
        return f"Gauge({self._value:g}, {source})"


class Histogram:
    """Distribution of non-negative observations in fine logarithmic buckets.

    Values ``<= 0`` are counted in a zero bucket; NaN is ignored.

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
        self.min = _INF
        self.max = 0.0

    def observe(self, value: float) -> None:
        if 0.0 < value < _INF:
            key = int(_log2(value) * _PER_OCTAVE + _OFFSET)
            buckets = self._buckets
            buckets[key] = buckets.get(key, 0) + 1
        elif not self._observe_odd(value):
            return
        self.count += 1
        self.sum += value
        if value < self.min:
            self.min = value
        if value > self.max:
            self.max = value

    def _observe_odd(self, value: float) -> bool:
        """Zero, negative or infinite values; False for NaN, which is dropped."""
        if value != value:
            return False
        if value <= 0:
            self.zeros += 1
        else:
            self._buckets[_TOP] = self._buckets.get(_TOP, 0) + 1
        return True

    def percentile(self, q: float) -> float:
        """The ``q``-th percentile (0-100), within 0.55% of exact; 0.0 when empty.

        The exact value is the order statistic of rank ``ceil(q / 100 * count)``.
        """
        if self.count == 0:
            return 0.0
        rank = max(1, math.ceil(q / 100 * self.count))
        # The extremes are kept exactly, so the smallest and largest ranks are exact.
        if rank == 1:
            return self.min
        if rank >= self.count:
            return self.max
        if rank <= self.zeros:
            return min(self.min, 0.0)
        seen = self.zeros
        for key in sorted(self._buckets):
            seen += self._buckets[key]
            if seen >= rank:
                return min(max(_middle(key), self.min), self.max)
        return self.max

    def cumulative(self, bounds: Sequence[float]) -> list[int]:
        """Observations ``<= b`` for each ascending bound ``b`` (Prometheus ``le`` buckets).

        A fine bucket counts as its geometric middle, so values within 0.55% of a
        bound may land on either side of it.

        >>> h = Histogram()
        >>> for v in (0.001, 0.01, 0.1):
        ...     h.observe(v)
        >>> h.cumulative([0.005, 0.05, 1.0])
        [1, 2, 3]
        """
        keys = sorted(self._buckets)
        counts: list[int] = []
        seen, i = 0, 0
        for bound in bounds:
            while i < len(keys) and _middle(keys[i]) <= bound:
                seen += self._buckets[keys[i]]
                i += 1
            counts.append(seen + (self.zeros if bound >= 0 else 0))
        return counts

    def merge(self, others: Iterable[Histogram]) -> Histogram:
        """Add every histogram of ``others`` into this one; returns ``self``."""
        buckets = self._buckets
        for other in others:
            for key, n in other._buckets.items():
                buckets[key] = buckets.get(key, 0) + n
            self.count += other.count
            self.zeros += other.zeros
            self.sum += other.sum
            self.min = min(self.min, other.min)
            self.max = max(self.max, other.max)
        return self

    def reset(self) -> None:
        """Forget every observation (keeps the object, so window slots are reused)."""
        self._buckets.clear()
        self.count = self.zeros = 0
        self.sum = 0.0
        self.min = _INF
        self.max = 0.0

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


def _middle(key: int) -> float:
    """The geometric middle of fine bucket ``key``: the value the bucket stands for."""
    if key >= _TOP:
        return _INF
    return math.exp2((key - _OFFSET + 0.5) / _PER_OCTAVE)
