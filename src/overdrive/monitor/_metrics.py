"""The registry every pipeline stage reports to: series keyed by name and labels.

The series kinds live in ``_series`` and are re-exported here.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple, TypeVar, cast

from .._clock import Clock, SystemClock
from .._errors import ConfigError
from ._measure import Measure
from ._series import Counter, Gauge, Histogram
from ._window import Window, WindowedCounter, WindowedHistogram, merge_windows
from .names import METRIC_HELP, Kind, check_kind, check_labels, check_name

__all__ = ["Counter", "Family", "Gauge", "Histogram", "LabelKey", "Metrics", "sum_by"]

LabelKey = tuple[tuple[str, str], ...]
S = TypeVar("S")


class Family(NamedTuple):
    """Every series of one name, as the exposition and exporters read them."""

    name: str
    kind: Kind
    help: str
    buckets: Sequence[float] | None
    series: list[tuple[LabelKey, Counter | Gauge | Histogram]]


class Metrics:
    """The registry the pipeline reports to.

    Counters and histograms keep sliding windows (``slot_seconds`` slots over
    ``horizon_seconds``; ``horizon_seconds=0`` turns them off) on ``clock``.

    >>> metrics = Metrics()
    >>> metrics.counter("overdrive_cache_hits_total", op="chat").inc()
    >>> metrics.value("overdrive_cache_hits_total", op="chat")
    1.0
    >>> metrics.window("overdrive_cache_hits_total", seconds=60).count
    1.0
    """

    __slots__ = (
        "_clock",
        "_counters",
        "_described",
        "_fast_counters",
        "_fast_gauges",
        "_fast_histograms",
        "_gauges",
        "_histograms",
        "_horizon",
        "_kinds",
        "_slot",
    )

    def __init__(
        self,
        clock: Clock | None = None,
        *,
        slot_seconds: float = 10.0,
        horizon_seconds: float = 300.0,
    ) -> None:
        self._clock: Clock = clock or SystemClock()
        self._slot = slot_seconds
        self._horizon = horizon_seconds
        self._counters: dict[tuple[str, LabelKey], Counter] = {}
        self._gauges: dict[tuple[str, LabelKey], Gauge] = {}
        self._histograms: dict[tuple[str, LabelKey], Histogram] = {}
        # Hot-path index: a frozenset of labels needs no sort, so lookups skip it.
        self._fast_counters: dict[tuple[str, frozenset[tuple[str, str]]], Counter] = {}
        self._fast_gauges: dict[tuple[str, frozenset[tuple[str, str]]], Gauge] = {}
        self._fast_histograms: dict[tuple[str, frozenset[tuple[str, str]]], Histogram] = {}
        self._kinds: dict[str, Kind] = {}
        self._described: dict[str, tuple[str, Sequence[float] | None]] = {}

    @property
    def clock(self) -> Clock:
        return self._clock

    # -- series ------------------------------------------------------------------

    def counter(self, name: str, **labels: str) -> Counter:
        found = self._fast_counters.get((name, frozenset(labels.items())))
        if found is None:
            found = self._add(self._counters, self._fast_counters, name, "counter", labels)
        return found

    def gauge(self, name: str, **labels: str) -> Gauge:
        """A gauge; ``.set_function(fn)`` makes it read ``fn()`` at every scrape."""
        found = self._fast_gauges.get((name, frozenset(labels.items())))
        if found is None:
            found = self._add(self._gauges, self._fast_gauges, name, "gauge", labels)
        return found

    def histogram(self, name: str, **labels: str) -> Histogram:
        found = self._fast_histograms.get((name, frozenset(labels.items())))
        if found is None:
            found = self._add(self._histograms, self._fast_histograms, name, "histogram", labels)
        return found

    def describe(self, name: str, text: str, *, buckets: Sequence[float] | None = None) -> None:
        """Set the HELP text of ``name`` and, for a histogram, its exposition ``le`` bounds."""
        if buckets is not None and list(buckets) != sorted(buckets):
            raise ValueError(f"buckets of {name} must ascend: {list(buckets)}")
        self._described[name] = (text, None if buckets is None else tuple(buckets))

    def measure(self, name: str, **labels: str) -> Measure:
        """Time a block or a function into the histogram ``name`` (see :class:`Measure`)."""
        return Measure(self, name, labels)

    def _add(
        self,
        table: dict[tuple[str, LabelKey], S],
        fast: dict[tuple[str, frozenset[tuple[str, str]]], S],
        name: str,
        kind: Kind,
        labels: dict[str, str],
    ) -> S:
        """Find or create a series on the slow path; index it for the fast one."""
        key = (name, tuple(sorted(labels.items())))
        found = table.get(key)
        if found is None:
            # Checked once per series, never on the hot path of an existing one.
            check_kind(name, kind, self._kinds.get(name))
            check_name(name, kind)
            check_labels(name, kind, labels)
            self._kinds[name] = kind
            found = table[key] = cast(S, self._make(kind))
        fast[(name, frozenset(labels.items()))] = found
        return found

    def _make(self, kind: Kind) -> Counter | Gauge | Histogram:
        if kind == "gauge":
            return Gauge()
        if self._horizon <= 0:
            return Counter() if kind == "counter" else Histogram()
        # The system clock is read directly: a method call per observation costs ~40 ns.
        now = time.monotonic if isinstance(self._clock, SystemClock) else self._clock.now
        if kind == "counter":
            return WindowedCounter(now, self._slot, self._horizon)
        return WindowedHistogram(now, self._slot, self._horizon)

    # -- reading -----------------------------------------------------------------

    def value(self, name: str, **labels: str) -> float:
        """Sum of the counters named ``name`` whose labels include ``labels``."""
        return sum(c.value for c in _matching(self._counters, name, labels))

    def window(self, name: str, seconds: float = 60.0, **labels: str) -> Window:
        """The last ``seconds`` of the counters or histograms ``name`` whose labels include ``labels``.

        >>> from overdrive.testing import FakeClock
        >>> clock = FakeClock()
        >>> m = Metrics(clock)
        >>> m.histogram("x_seconds", op="a").observe(0.2)
        >>> m.histogram("x_seconds", op="b").observe(0.4)
        >>> w = m.window("x_seconds", seconds=60)
        >>> w.count, round(w.percentile(100), 2)
        (2, 0.4)
        """  # noqa: E501
        table: dict[tuple[str, LabelKey], Any] = (
            self._histograms if self._kinds.get(name) == "histogram" else self._counters
        )
        windows = [_window_of(s, name, seconds) for s in _matching(table, name, labels)]
        return merge_windows(windows)

    def collect(self) -> list[Family]:
        """Every family, sorted by name, each series sorted by labels."""
        grouped: dict[str, list[tuple[LabelKey, Counter | Gauge | Histogram]]] = {}
        tables: list[dict[tuple[str, LabelKey], Any]] = [
            self._counters,
            self._gauges,
            self._histograms,
        ]
        for table in tables:
            for (name, key), series in table.items():
                grouped.setdefault(name, []).append((key, series))
        families = []
        for name in sorted(grouped):
            # Described here, else from the catalogue: a name means the same in every registry.
            text, buckets = self._described.get(name, (METRIC_HELP.get(name, ""), None))
            items = sorted(grouped[name], key=lambda item: item[0])
            families.append(Family(name, self._kinds[name], text, buckets, items))
        return families

    def snapshot(self) -> dict[str, Any]:
        """Plain data: every counter and gauge value and histogram summary, labels as dicts."""
        return {
            "counters": [
                {"name": n, "labels": dict(k), "value": c.value}
                for (n, k), c in sorted(self._counters.items())
            ],
            "gauges": [
                {"name": n, "labels": dict(k), "value": _read(g)}
                for (n, k), g in sorted(self._gauges.items(), key=lambda item: item[0])
            ],
            "histograms": [
                {"name": n, "labels": dict(k), **h.summary()}
                for (n, k), h in sorted(self._histograms.items(), key=lambda item: item[0])
            ],
        }

    def __repr__(self) -> str:
        return (
            f"Metrics(counters={len(self._counters)}, gauges={len(self._gauges)}, "
            f"histograms={len(self._histograms)})"
        )


def sum_by(counters: Iterable[Mapping[str, Any]], name: str, label: str) -> dict[str, float]:
    """The counters ``name`` of a :meth:`Metrics.snapshot` summed per value of ``label``.

    Series without the label are left out; the values come sorted.

    >>> sum_by([{"name": "c", "labels": {"model": "m"}, "value": 0.5}] * 2, "c", "model")
    {'m': 1.0}
    """
    found: dict[str, float] = {}
    for c in counters:
        value = c["labels"].get(label)
        if c["name"] == name and value is not None:
            found[value] = found.get(value, 0.0) + float(c["value"])
    return dict(sorted(found.items()))


def _matching(table: dict[tuple[str, LabelKey], S], name: str, labels: dict[str, str]) -> list[S]:
    wanted = set(labels.items())
    return [s for (n, key), s in table.items() if n == name and wanted <= set(key)]


def _window_of(series: Counter | Histogram, name: str, seconds: float) -> Window:
    if not isinstance(series, WindowedCounter | WindowedHistogram):
        raise ConfigError(f"metrics.{name}", "this registry keeps no windows (horizon_seconds=0)")
    return series.window(seconds)


def _read(gauge: Gauge) -> float | None:
    """A gauge's value; ``None`` when its callback fails (a scrape must not crash)."""
    try:
        return gauge.value
    except Exception:
        return None
