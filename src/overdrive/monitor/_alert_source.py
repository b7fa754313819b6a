"""Where alert rules read their values: a small protocol, and its adapter over ``Metrics``."""

from __future__ import annotations

from typing import Any, Protocol

from .._errors import ConfigError
from ._alert_rules import DEFAULT_LOOKBACK, Selector
from ._series import Counter, Histogram

__all__ = ["MetricSource", "MetricsSource", "Registry"]


class MetricSource(Protocol):
    """What the evaluator reads at each evaluation; rates it computes itself.

    Implement it over any store: the evaluator samples counters each pass and
    derives ``rate``/``increase`` from successive samples, so a source only
    answers "what is it now".
    """

    def sample(self, selector: Selector) -> float | None:
        """The current value of a counter or gauge (summed over matching series)."""
        ...

    def percentile(self, selector: Selector, q: float, window: float | None) -> float | None:
        """The ``q``-th percentile of the matching histograms; None when they are empty.

        ``window`` is the lookback the rule asked for (seconds) or None; a
        source without windows may ignore it and answer over all time.
        """
        ...


class Registry(Protocol):
    """The parts of :class:`overdrive.monitor.Metrics` the adapter reads and counts with."""

    def value(self, name: str, **labels: str) -> float: ...

    def snapshot(self) -> dict[str, Any]: ...

    def histogram(self, name: str, **labels: str) -> Histogram: ...

    def counter(self, name: str, **labels: str) -> Counter: ...


class MetricsSource:
    """A :class:`MetricSource` over a :class:`~overdrive.monitor.Metrics` registry.

    Counters and gauges are summed over every series whose labels include the
    selector's; histograms are merged likewise. A percentile reads the
    registry's sliding window (the rule's ``[lookback]``, 1m by default) when
    the registry keeps windows, and all observations otherwise.

    >>> from overdrive.monitor import Metrics
    >>> metrics = Metrics()
    >>> metrics.histogram("latency_seconds", op="chat").observe(2.0)
    >>> MetricsSource(metrics).percentile(Selector.of("latency_seconds"), 50, None)
    2.0
    """

    __slots__ = ("_metrics",)

    def __init__(self, metrics: Registry) -> None:
        self._metrics = metrics

    def sample(self, selector: Selector) -> float | None:
        labels = dict(selector.labels)
        gauges = self._matching("gauges", selector)
        # A name is one kind in the registry, so at most one of these is non-zero.
        return self._metrics.value(selector.name, **labels) + sum(
            entry["value"] or 0.0 for entry in gauges
        )

    def percentile(self, selector: Selector, q: float, window: float | None) -> float | None:
        histogram = self._windowed(selector, window or DEFAULT_LOOKBACK)
        if histogram is None:
            found = [
                self._metrics.histogram(entry["name"], **entry["labels"])
                for entry in self._matching("histograms", selector)
            ]
            histogram = Histogram().merge(found)
        return None if histogram.count == 0 else histogram.percentile(q)

    def _windowed(self, selector: Selector, seconds: float) -> Histogram | None:
        """The last ``seconds`` of the histograms; None when the registry keeps no windows."""
        window = getattr(self._metrics, "window", None)
        if window is None:
            return None
        try:
            found = window(selector.name, seconds, **dict(selector.labels)).histogram
        except ConfigError:  # a registry built with horizon_seconds=0
            return None
        return found if isinstance(found, Histogram) else Histogram()

    def _matching(self, kind: str, selector: Selector) -> list[dict[str, Any]]:
        wanted = set(selector.labels)
        return [
            entry
            for entry in self._metrics.snapshot().get(kind, [])
            if entry["name"] == selector.name and wanted <= set(entry["labels"].items())
        ]

    def __repr__(self) -> str:
        return f"MetricsSource({self._metrics!r})"
