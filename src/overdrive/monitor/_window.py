"""Sliding windows: a ring of per-interval slots behind each counter and histogram.

Time is cut into slots of ``slot_seconds`` (10 s by default) aligned on the
clock; a series keeps the last ``horizon / slot`` of them. An observation adds
to the running total *and* to the current slot; the ring rotates when the clock
passes the slot's end, so the hot path only compares one timestamp and never
allocates (histogram slots are reset and reused).

A window of ``seconds`` merges the newest ``ceil(seconds / slot)`` slots, the
current one included: a 60 s window covers between the last 50 and 60 seconds.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from .._validate import check_duration
from ._series import _INF, _OFFSET, _PER_OCTAVE, Counter, Histogram, _log2

__all__ = ["Ring", "Window", "WindowedCounter", "WindowedHistogram", "merge_windows"]


class Ring:
    """Slot arithmetic shared by the windowed series: which slot is current, and since when."""

    __slots__ = ("born", "end", "index", "now", "size", "slot")

    def __init__(self, now: Callable[[], float], slot: float, horizon: float) -> None:
        self.now = now
        self.slot = slot
        self.size = max(1, math.ceil(horizon / slot))
        self.index = 0
        start = self.now()
        self.born = start
        self.end = (math.floor(start / slot) + 1) * slot

    def advance(self, now: float) -> Iterable[int]:
        """Move to the slot holding ``now``; yields each slot index that must be cleared."""
        steps = int((now - self.end) // self.slot) + 1
        self.end += steps * self.slot
        for _ in range(min(steps, self.size)):
            self.index = (self.index + 1) % self.size
            yield self.index

    def newest(self, seconds: float) -> tuple[list[int], float]:
        """Indexes of the slots a ``seconds`` window merges, and the span they cover."""
        # A hair over the horizon still fits: it is the float sum of the slots.
        check_duration("seconds", seconds, positive=True, high=self.size * self.slot + 1e-9)
        count = min(self.size, math.ceil(seconds / self.slot - 1e-9))
        indexes = [(self.index - i) % self.size for i in range(count)]
        now = self.now()
        span = now - (self.end - count * self.slot)
        return indexes, max(0.0, min(span, now - self.born))


class WindowedCounter(Counter):
    """A :class:`Counter` that also keeps its increase per slot.

    >>> from overdrive.testing import FakeClock
    >>> clock = FakeClock()
    >>> c = WindowedCounter(clock.now, slot=10, horizon=300)
    >>> c.inc(5); clock.advance(70); c.inc()
    >>> c.value, c.window(60).count
    (6.0, 1.0)
    """

    __slots__ = ("_ring", "_slots")

    def __init__(self, now: Callable[[], float], slot: float, horizon: float) -> None:
        super().__init__()
        self._ring = Ring(now, slot, horizon)
        self._slots = [0.0] * self._ring.size

    def inc(self, amount: float = 1.0) -> None:
        if amount < 0:
            raise ValueError(f"a counter only goes up; got inc({amount!r})")
        self.value += amount
        ring = self._ring
        now = ring.now()
        if now >= ring.end:
            self._rotate(now)
        self._slots[ring.index] += amount

    def _rotate(self, now: float) -> None:
        for index in self._ring.advance(now):
            self._slots[index] = 0.0

    def window(self, seconds: float) -> Window:
        """The increase over the last ``seconds`` (slot granularity)."""
        now = self._ring.now()
        if now >= self._ring.end:
            self._rotate(now)
        indexes, span = self._ring.newest(seconds)
        total = sum(self._slots[i] for i in indexes)
        return Window(span, total, total, None)


class WindowedHistogram(Histogram):
    """A :class:`Histogram` that also keeps one sub-histogram per slot.

    >>> from overdrive.testing import FakeClock
    >>> clock = FakeClock()
    >>> h = WindowedHistogram(clock.now, slot=10, horizon=300)
    >>> h.observe(9.0); clock.advance(60); h.observe(1.0)
    >>> h.count, h.window(60).count, round(h.window(60).percentile(50), 2)
    (2, 1, 1.0)
    """

    __slots__ = ("_current", "_ring", "_slots")

    def __init__(self, now: Callable[[], float], slot: float, horizon: float) -> None:
        super().__init__()
        self._ring = Ring(now, slot, horizon)
        self._slots = [Histogram() for _ in range(self._ring.size)]
        self._current = self._slots[0]

    def observe(self, value: float) -> None:
        ring = self._ring
        now = ring.now()
        if now >= ring.end:
            self._rotate(now)
        slot = self._current
        if 0.0 < value < _INF:
            # Inlined (not two ``Histogram.observe`` calls): this is the hot path.
            key = int(_log2(value) * _PER_OCTAVE + _OFFSET)
            buckets = self._buckets
            buckets[key] = buckets.get(key, 0) + 1
            buckets = slot._buckets
            buckets[key] = buckets.get(key, 0) + 1
        elif value == 0.0:  # a queue wait of nothing, the usual one: no call for it
            self.zeros += 1
            slot.zeros += 1
        elif not (self._observe_odd(value) and slot._observe_odd(value)):
            return
        self.count += 1
        self.sum += value
        slot.count += 1
        slot.sum += value
        if value > self.max:
            self.max = value
        if value > slot.max:
            slot.max = value
        if value < slot.min:
            slot.min = value
            if value < self.min:
                self.min = value

    def _rotate(self, now: float) -> None:
        for index in self._ring.advance(now):
            self._slots[index].reset()
        self._current = self._slots[self._ring.index]

    def window(self, seconds: float) -> Window:
        """The observations of the last ``seconds``, merged into one histogram."""
        now = self._ring.now()
        if now >= self._ring.end:
            self._rotate(now)
        indexes, span = self._ring.newest(seconds)
        merged = Histogram().merge(self._slots[i] for i in indexes)
        return Window(span, merged.count, merged.sum, merged)


@dataclass(frozen=True, slots=True)
class Window:
    """What a series did over a recent span.

    ``count`` is a counter's increase or a histogram's number of observations;
    ``seconds`` is the span actually covered (shorter while the series is young).
    """

    seconds: float
    count: float
    sum: float
    histogram: Histogram | None

    @property
    def rate(self) -> float:
        """``count`` per second over the covered span."""
        return self.count / self.seconds if self.seconds > 0 else 0.0

    @property
    def mean(self) -> float:
        return self.sum / self.count if self.count else 0.0

    def percentile(self, q: float) -> float:
        """A histogram window's ``q``-th percentile; 0.0 for a counter or an empty window."""
        return self.histogram.percentile(q) if self.histogram is not None else 0.0


def merge_windows(windows: list[Window]) -> Window:
    """One window summing several series' windows (e.g. every ``op`` of a name)."""
    histograms = [w.histogram for w in windows if w.histogram is not None]
    merged = Histogram().merge(histograms) if histograms else None
    return Window(
        max((w.seconds for w in windows), default=0.0),
        sum(w.count for w in windows),
        sum(w.sum for w in windows),
        merged,
    )
