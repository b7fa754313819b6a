"""Where alert rules read their values: a small protocol, and its adapter over ``Metrics``."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Protocol, TypeAlias

from .._errors import ConfigError
from ._alert_rules import DEFAULT_LOOKBACK, Selector
from ._alert_vector import Labels, Vector
from ._metrics import Family
from ._series import Counter, Gauge, Histogram
from ._window import WindowedHistogram

__all__ = ["MetricSource", "MetricsSource", "Registry", "Sampled"]

# One value per label set; a plain number stands for one unlabelled series, None for none.
Sampled: TypeAlias = float | Mapping[Labels, float] | None


class MetricSource(Protocol):
    """What the evaluator reads at each evaluation; rates it computes itself.

    Implement it over any store: the evaluator samples counters each pass and
    derives ``rate``/``increase`` from successive samples, so a source only
    answers "what is it now", per label set. A source that knows no labels
    may answer a plain number (one unlabelled series).
    """

    def sample(self, selector: Selector) -> Sampled:
        """The current value of each matching counter or gauge, by label set."""
        ...

    def percentile(self, selector: Selector, q: float, window: float | None) -> Sampled:
        """The ``q``-th percentile of each matching histogram with observations, by label set.

        ``window`` is the lookback the rule asked for (seconds) or None; a
        source without windows may ignore it and answer over all time.
        """
        ...


class Registry(Protocol):
    """The parts of :class:`overdrive.monitor.Metrics` the adapter reads and counts with."""

    def collect(self) -> list[Family]: ...

    def counter(self, name: str, **labels: str) -> Counter: ...


class MetricsSource:
    """A :class:`MetricSource` over a :class:`~overdrive.monitor.Metrics` registry.

    Each series whose labels include the selector's is one label set (its
    own labels); with ``by`` the series are summed (counters, gauges) or
    merged (histograms) per value of those labels. A percentile reads each
    histogram's sliding window (the rule's ``[lookback]``, 1m by default)
    when the registry keeps windows, and all observations otherwise.

    >>> from overdrive.monitor import Metrics
    >>> metrics = Metrics()
    >>> metrics.histogram("latency_seconds", op="chat", model="a").observe(2.0)
    >>> metrics.histogram("latency_seconds", op="chat", model="b").observe(4.0)
    >>> MetricsSource(metrics).percentile(Selector.of("latency_seconds"), 50, None)
    {(('model', 'a'), ('op', 'chat')): 2.0, (('model', 'b'), ('op', 'chat')): 4.0}
    >>> MetricsSource(metrics).percentile(Selector("latency_seconds", by=()), 100, None)
    {(): 4.0}
    """

    __slots__ = ("_metrics",)

    def __init__(self, metrics: Registry) -> None:
        self._metrics = metrics

    def sample(self, selector: Selector) -> Vector:
        found: Vector = {}
        for labels, series in self._series(selector):
            value = _read(series)
            if value is not None:
                group = selector.group(labels)
                found[group] = found.get(group, 0.0) + value
        return found

    def percentile(self, selector: Selector, q: float, window: float | None) -> Vector:
        merged: dict[Labels, Histogram] = {}
        for labels, series in self._series(selector):
            if isinstance(series, Histogram):
                recent = _recent(series, window or DEFAULT_LOOKBACK)
                merged.setdefault(selector.group(labels), Histogram()).merge([recent])
        return {labels: h.percentile(q) for labels, h in merged.items() if h.count}

    def _series(self, selector: Selector) -> Iterator[tuple[Labels, Counter | Gauge | Histogram]]:
        for family in self._metrics.collect():
            if family.name == selector.name:
                yield from ((k, s) for k, s in family.series if selector.matches(k))

    def __repr__(self) -> str:
        return f"MetricsSource({self._metrics!r})"


def _read(series: Counter | Gauge | Histogram) -> float | None:
    """A counter's or gauge's value; None for a histogram, or a gauge whose callback failed."""
    if isinstance(series, Histogram):
        return None
    try:
        return series.value
    except Exception:  # a gauge's callback: one broken gauge must not hide the others
        return None


def _recent(series: Histogram, seconds: float) -> Histogram:
    """The last ``seconds`` of a histogram; all of it when it keeps no windows that long."""
    if not isinstance(series, WindowedHistogram):
        return series
    try:
        found = series.window(seconds).histogram
    except ConfigError:  # a lookback past the registry's horizon
        return series
    return found if found is not None else Histogram()
