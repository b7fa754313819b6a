"""The metrics registry as an OTLP ``ExportMetricsServiceRequest`` (opentelemetry-proto).

Every value is cumulative since the exporter started, as the registry keeps
it: counters are monotonic Sums, gauges Gauges, histograms explicit-bucket
Histograms. A histogram's fine logarithmic buckets are collapsed into the
bounds the Prometheus exposition uses (a family's described ones, else 1-2-5
per decade), so both read alike and the bounds never change between exports
(a backend cannot add up cumulative buckets whose bounds move).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import (
    AggregationTemporality,
    Gauge,
    Histogram,
    HistogramDataPoint,
    Metric,
    NumberDataPoint,
    ResourceMetrics,
    ScopeMetrics,
    Sum,
)
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from .. import monitor

__all__ = ["MAX_BOUNDS", "SECONDS_BOUNDS", "SIZE_BOUNDS", "export_request", "histogram_bounds"]

_CUMULATIVE = AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
_SCOPE = "overdrive"
# Bounds per histogram at most: a family described with more has adjacent buckets merged.
MAX_BOUNDS = 64

LabelKey = tuple[tuple[str, str], ...]
Series = monitor.Counter | monitor.Gauge | monitor.Histogram


def _one_two_five(low: int, high: int) -> tuple[float, ...]:
    return tuple(float(f"{m}e{e}") for e in range(low, high + 1) for m in (1, 2, 5))


# The Prometheus exposition's defaults (monitor/_prometheus.py; a test keeps them equal).
SECONDS_BOUNDS: tuple[float, ...] = (*_one_two_five(-3, 1), 60.0)
SIZE_BOUNDS: tuple[float, ...] = _one_two_five(0, 6)


class Family(Protocol):
    """What the export reads of a registry family (``Metrics.collect()`` yields them)."""

    @property
    def name(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def help(self) -> str: ...
    @property
    def buckets(self) -> Sequence[float] | None: ...
    @property
    def series(self) -> Sequence[tuple[LabelKey, Series]]: ...


def export_request(
    families: Iterable[Family], resource: Mapping[str, str], start_ns: int, now_ns: int
) -> ExportMetricsServiceRequest:
    """One request holding every family with at least one point, under ``resource``."""
    metrics = [metric for family in families if (metric := _metric(family, start_ns, now_ns))]
    scope = ScopeMetrics(scope=InstrumentationScope(name=_SCOPE), metrics=metrics)
    owner = Resource(attributes=_attributes(resource.items()))
    return ExportMetricsServiceRequest(
        resource_metrics=[ResourceMetrics(resource=owner, scope_metrics=[scope])]
    )


def _metric(family: Family, start_ns: int, now_ns: int) -> Metric | None:
    metric = Metric(name=family.name, description=family.help, unit=_unit(family.name))
    if family.kind == "histogram":
        bounds = histogram_bounds(family)
        points = [
            _histogram_point(labels, series, bounds, start_ns, now_ns)
            for labels, series in family.series
            if isinstance(series, monitor.Histogram)
        ]
        metric.histogram.CopyFrom(
            Histogram(data_points=points, aggregation_temporality=_CUMULATIVE)
        )
        return metric if points else None
    numbers = [_number_point(labels, series, start_ns, now_ns) for labels, series in family.series]
    points = [point for point in numbers if point is not None]
    if family.kind == "counter":
        metric.sum.CopyFrom(
            Sum(data_points=points, aggregation_temporality=_CUMULATIVE, is_monotonic=True)
        )
    else:
        metric.gauge.CopyFrom(Gauge(data_points=points))
    return metric if points else None


def _number_point(
    labels: LabelKey, series: Series, start_ns: int, now_ns: int
) -> NumberDataPoint | None:
    """A counter's or gauge's point; None when a gauge's callback fails (left out, as a scrape)."""
    if isinstance(series, monitor.Histogram):
        return None
    try:
        value = series.value
    except Exception:
        return None
    return NumberDataPoint(
        attributes=_attributes(labels),
        start_time_unix_nano=start_ns,
        time_unix_nano=now_ns,
        as_double=value,
    )


def _histogram_point(
    labels: LabelKey,
    histogram: monitor.Histogram,
    bounds: Sequence[float],
    start_ns: int,
    now_ns: int,
) -> HistogramDataPoint:
    count = histogram.count
    cumulative = histogram.cumulative(bounds)
    # OTLP counts per bucket, not up to a bound; the last bucket is above every bound.
    counts = [high - low for low, high in zip([0, *cumulative], cumulative, strict=False)]
    counts.append(max(0, count - (cumulative[-1] if cumulative else 0)))
    point = HistogramDataPoint(
        attributes=_attributes(labels),
        start_time_unix_nano=start_ns,
        time_unix_nano=now_ns,
        count=count,
        bucket_counts=counts,
        explicit_bounds=bounds,
    )
    if count:
        point.min, point.max = histogram.min, histogram.max
    if histogram.min >= 0:  # the data model leaves sum out when values were negative
        point.sum = histogram.sum
    return point


def histogram_bounds(family: Family) -> tuple[float, ...]:
    """The family's bounds, at most :data:`MAX_BOUNDS` (every k-th kept: buckets merged).

    >>> from overdrive.monitor import Metrics
    >>> metrics = Metrics()
    >>> metrics.describe("job_seconds", "", buckets=[float(b) for b in range(1, 201)])
    >>> metrics.histogram("job_seconds").observe(3)
    >>> bounds = histogram_bounds(metrics.collect()[0])
    >>> len(bounds), bounds[:2], bounds[-1]
    (50, (4.0, 8.0), 200.0)
    """
    described = family.buckets
    default = SECONDS_BOUNDS if family.name.endswith("_seconds") else SIZE_BOUNDS
    bounds = tuple(described) if described else default
    if len(bounds) <= MAX_BOUNDS:
        return bounds
    step = math.ceil(len(bounds) / MAX_BOUNDS)
    # Counted from the top, so the largest bound (where +Inf begins) is kept.
    return bounds[::-1][::step][::-1]


def _unit(name: str) -> str:
    """The UCUM unit a name's suffix says (OpenTelemetry spells seconds ``s``, bytes ``By``)."""
    if name.endswith("_seconds"):
        return "s"
    return "By" if name.endswith("_bytes") else ""


def _attributes(pairs: Iterable[tuple[str, str]]) -> list[KeyValue]:
    return [KeyValue(key=key, value=AnyValue(string_value=value)) for key, value in pairs]
