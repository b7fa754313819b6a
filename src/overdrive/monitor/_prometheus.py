"""Prometheus text exposition (format 0.0.4) of a :class:`Metrics` registry.

Histograms keep 64 fine buckets per doubling; the exposition collapses them
into a fixed set of cumulative ``le`` bounds (1-2-5 per decade), so dashboards
can aggregate across replicas with ``histogram_quantile``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from ._metrics import Family, LabelKey, Metrics
from ._series import Counter, Gauge, Histogram

__all__ = ["CONTENT_TYPE", "SECONDS_BUCKETS", "SIZE_BUCKETS", "prometheus_text"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _one_two_five(low: int, high: int) -> tuple[float, ...]:
    # Built from decimal strings so bounds print as 0.002, not 0.0020000000000000005.
    return tuple(float(f"{m}e{e}") for e in range(low, high + 1) for m in (1, 2, 5))


# Durations: 1 ms to 50 s, then 60 s (a minute is a common deadline).
SECONDS_BUCKETS: tuple[float, ...] = (*_one_two_five(-3, 1), 60.0)
# Sizes, counts, tokens: 1 to 5 million.
SIZE_BUCKETS: tuple[float, ...] = _one_two_five(0, 6)


def prometheus_text(metrics: Metrics) -> str:
    """The registry in Prometheus text format 0.0.4 (serve with :data:`CONTENT_TYPE`).

    >>> m = Metrics()
    >>> m.counter("jobs_total", queue="a").inc(2)
    >>> print(prometheus_text(m), end="")
    # HELP jobs_total jobs total
    # TYPE jobs_total counter
    jobs_total{queue="a"} 2.0
    """
    lines: list[str] = []
    for family in metrics.collect():
        lines.extend(_family_lines(family))
    return "\n".join(lines) + "\n" if lines else ""


def _family_lines(family: Family) -> list[str]:
    name = family.name
    # The registry has the catalogue's text for overdrive's own names; others read as their name.
    text = family.help or name.replace("_", " ")
    lines = [f"# HELP {name} {_escape_help(text)}", f"# TYPE {name} {family.kind}"]
    for labels, series in family.series:
        if isinstance(series, Histogram):
            bounds = family.buckets or _default_buckets(name)
            lines.extend(_histogram_lines(name, labels, series, bounds))
        else:
            value = _value(series)
            if value is not None:
                lines.append(f"{name}{_labels(labels)} {_number(value)}")
    return lines


def _histogram_lines(
    name: str, labels: LabelKey, histogram: Histogram, bounds: Sequence[float]
) -> list[str]:
    counts = histogram.cumulative(bounds)
    lines = [
        f"{name}_bucket{_labels(labels, ('le', _number(b)))} {n}"
        for b, n in zip(bounds, counts, strict=True)
    ]
    lines.append(f"{name}_bucket{_labels(labels, ('le', '+Inf'))} {histogram.count}")
    lines.append(f"{name}_sum{_labels(labels)} {_number(histogram.sum)}")
    lines.append(f"{name}_count{_labels(labels)} {histogram.count}")
    return lines


def _default_buckets(name: str) -> Sequence[float]:
    return SECONDS_BUCKETS if name.endswith("_seconds") else SIZE_BUCKETS


def _value(series: Counter | Gauge) -> float | None:
    """The sample value; ``None`` (sample left out) when a gauge callback fails."""
    try:
        return series.value
    except Exception:
        return None


def _labels(labels: LabelKey, *extra: tuple[str, str]) -> str:
    pairs = [*labels, *extra]
    if not pairs:
        return ""
    return "{" + ",".join(f'{k}="{_escape_value(str(v))}"' for k, v in pairs) + "}"


def _escape_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))
