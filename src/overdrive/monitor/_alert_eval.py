"""One evaluation pass: counter histories for rates, and expressions computed per label set.

The evaluator keeps no windows in the source: each pass samples the counters
a ``rate()`` or ``increase()`` reads into a :class:`History` (per selector,
per label set), and a rate is the rise over the samples inside its lookback.

>>> from overdrive.monitor._alert_rules import Selector
>>> history = History(keep=60, limit=10)
>>> history.record(Selector("x_total"), 0.0, {(("op", "chat"),): 5.0})
>>> history.record(Selector("x_total"), 10.0, {(("op", "chat"),): 25.0})
>>> history.increases(Selector("x_total"), 10.0, 60)
{(('op', 'chat'),): (20.0, 10.0)}
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Iterable

from ._alert_rules import BinaryOp, Expr, Increase, Number, Percentile, Rate, Selector, Value
from ._alert_source import MetricSource
from ._alert_vector import Labels, Sample, Vector, as_vector, combine

__all__ = ["History", "Reading", "counters", "lookbacks"]

EPSILON = 1e-9  # float slack when comparing clock differences with durations
# Samples kept per label set: a long lookback read every second keeps its newest
# ones, and the rate is taken over the span they cover.
MAX_SAMPLES = 1024

_Samples = deque[tuple[float, float]]


class History:
    """Recent counter samples per selector and label set, at most ``limit`` label sets each.

    A label set beyond the limit is not tracked (counted in ``dropped``); one
    whose samples all aged out of ``keep`` seconds is forgotten.
    """

    __slots__ = ("_keep", "_limit", "_samples", "dropped")

    def __init__(self, keep: float, limit: int) -> None:
        self._keep = keep
        self._limit = limit
        self._samples: dict[Selector, dict[Labels, _Samples]] = {}
        self.dropped = 0

    def record(self, selector: Selector, now: float, vector: Vector) -> None:
        series = self._samples.setdefault(selector, {})
        for labels, value in vector.items():
            samples = series.get(labels)
            if samples is None:
                if len(series) >= self._limit:
                    self.dropped += 1
                    continue
                samples = series[labels] = deque(maxlen=MAX_SAMPLES)
            if not samples or samples[-1][0] < now:
                samples.append((now, value))
        self._trim(series, now)

    def _trim(self, series: dict[Labels, _Samples], now: float) -> None:
        oldest = now - self._keep - EPSILON
        for labels in list(series):
            samples = series[labels]
            while samples and samples[0][0] < oldest:
                samples.popleft()
            if not samples:
                del series[labels]

    def increases(
        self, selector: Selector, now: float, window: float
    ) -> dict[Labels, tuple[float, float]]:
        """(rise, seconds spanned) per label set with at least 2 samples within ``window``."""
        found = {}
        for labels, samples in self._samples.get(selector, {}).items():
            rise = _increase(samples, now - window - EPSILON)
            if rise is not None:
                found[labels] = rise
        return found

    def tracked(self) -> int:
        """Label sets held over every selector (what the memory bound counts)."""
        return sum(len(series) for series in self._samples.values())


def _increase(samples: Iterable[tuple[float, float]], since: float) -> tuple[float, float] | None:
    recent = [sample for sample in samples if sample[0] >= since]
    if len(recent) < 2:
        return None
    rise = 0.0
    for (_, before), (_, after) in itertools.pairwise(recent):
        # A drop means the counter restarted from zero (a new process).
        rise += after - before if after >= before else after
    return rise, recent[-1][0] - recent[0][0]


class Reading:
    """One evaluation pass at one instant: histories recorded, expressions computed."""

    __slots__ = ("_history", "_limit", "_now", "_source")

    def __init__(self, source: MetricSource, history: History, now: float, limit: int) -> None:
        self._source = source
        self._history = history
        self._now = now
        self._limit = limit

    def record(self, selector: Selector) -> None:
        """Sample a counter that a rate() or increase() reads, into its history."""
        self._history.record(selector, self._now, as_vector(self._source.sample(selector)))

    def vector(self, expr: Expr) -> Vector:
        """``expr`` per label set; a scalar result is the one unlabelled set."""
        return as_vector(self.value(expr))

    def value(self, expr: Expr) -> Sample:
        match expr:
            case Number(value):
                return value
            case Value(selector):
                return as_vector(self._source.sample(selector))
            case Rate(selector, window):
                found = self._history.increases(selector, self._now, window)
                return {k: rise / span for k, (rise, span) in found.items() if span > 0}
            case Increase(selector, window):
                found = self._history.increases(selector, self._now, window)
                return {k: rise for k, (rise, _) in found.items()}
            case Percentile(q, selector, window):
                return as_vector(self._source.percentile(selector, q, window))
            case BinaryOp(op, left, right):
                return combine(op, self.value(left), self.value(right), self._limit)
        raise TypeError(f"not an alert expression: {expr!r}")


def counters(expr: Expr) -> set[Selector]:
    """The selectors of every rate() and increase() in ``expr``."""
    match expr:
        case Rate(selector) | Increase(selector):
            return {selector}
        case BinaryOp(_, left, right):
            return counters(left) | counters(right)
    return set()


def lookbacks(expr: Expr) -> list[float]:
    """The lookback of every rate() and increase() in ``expr`` (how long history is kept)."""
    match expr:
        case Rate(_, window) | Increase(_, window):
            return [window]
        case BinaryOp(_, left, right):
            return lookbacks(left) + lookbacks(right)
    return []
