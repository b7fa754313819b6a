"""One JSON-ready picture of an engine: what the dashboard (and ``overdrive top``) show.

:func:`snapshot` reads the registry, ``stats()`` and the optimizer once and
returns a :class:`Snapshot`: plain dicts, lists and numbers, so it goes over
SSE as it is. Figures are totals since the engine started (counters) or all
time (histogram percentiles); a *rate* is the difference of two snapshots'
``totals`` over the difference of their ``at``, worked out by the reader (the
page keeps the last minutes of snapshots, ``overdrive top`` the last two).

>>> from overdrive.monitor import Metrics
>>> metrics = Metrics()
>>> metrics.counter("overdrive_requests_total", op="chat").inc(3)
>>> shot = snapshot(Source(metrics, {}))
>>> shot["totals"]["requests"], shot["hit_ratio"]["exact"]
(3.0, 0.0)
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple, Protocol, TypedDict

from ..monitor import Histogram, Metrics, sum_by
from ..monitor.names import (
    CACHE_HITS,
    CACHE_MISSES,
    COALESCED,
    COST,
    GATEWAY_REQUESTS,
    QUEUE_WAIT,
    REQUEST_DURATION,
    REQUESTS,
    RETRIES,
    SEMANTIC_DURATION,
    SEMANTIC_LOOKUPS,
    TOKENS,
    TOOL_DURATION,
    TOOL_QUEUE_WAIT,
    UPSTREAM_DURATION,
    UPSTREAM_ERRORS,
    UPSTREAM_RATE_LIMITED,
    UPSTREAM_REQUESTS,
)
from ..optimize import Optimizer, analyse

__all__ = [
    "SNAPSHOT_VERSION",
    "Decision",
    "KeyUsage",
    "Latency",
    "Snapshot",
    "Source",
    "Totals",
    "UpstreamRow",
    "snapshot",
]

# Bumped when a field changes meaning or goes away (adding one does not).
SNAPSHOT_VERSION = 1
# The optimizer keeps every decision; the dashboard shows the latest few.
_DECISIONS_SHOWN = 20
_Counters = list[dict[str, Any]]


class Engine(Protocol):
    """What a snapshot reads of an engine (an :class:`~overdrive.Overdrive` is one)."""

    @property
    def metrics(self) -> Metrics: ...

    @property
    def optimizer(self) -> Optimizer | None: ...

    def stats(self) -> dict[str, Any]: ...


class Source(NamedTuple):
    """A registry and stats without an engine around them (tests, saved figures)."""

    metrics: Metrics
    stats_: Mapping[str, Any]
    optimizer: Optimizer | None = None

    def stats(self) -> dict[str, Any]:
        return dict(self.stats_)


class Totals(TypedDict):
    """Counters summed over every label: the figures a rate is taken of."""

    requests: float
    prompt_tokens: float
    completion_tokens: float
    cache_hits: float
    cache_misses: float
    coalesced: float
    semantic_hits: float
    semantic_lookups: float
    upstream_requests: float
    rate_limited: float
    retries: float
    upstream_errors: float
    gateway_requests: float
    cost_usd: float


class Latency(TypedDict):
    """One histogram's (or several merged) percentiles, in seconds."""

    name: str
    count: int
    p50: float
    p95: float
    p99: float
    max: float


class UpstreamRow(TypedDict):
    """An upstream's traffic, its 429s, retries and errors, and its health."""

    name: str
    requests: float
    rate_limited: float
    retries: float
    errors: float
    in_flight: float
    waiting: float
    state: str
    health: dict[str, Any]


class KeyUsage(TypedDict):
    """A gateway key's requests by status and its spend (when cost is booked per key)."""

    key: str
    requests: float
    errors: float
    codes: dict[str, float]
    cost_usd: float | None


class Decision(TypedDict):
    """An optimizer decision: the change, why, and the figures before and after it."""

    at: float
    tunable: str
    old: float
    new: float
    reason: str
    finding: str
    before: dict[str, float]
    after: dict[str, float] | None
    outcome: str


class Snapshot(TypedDict):
    """Everything the dashboard shows, at one instant.

    * ``at``: the engine clock (monotonic seconds), for rates; ``wall``: Unix time.
    * ``stages``: seconds spent per stage since start (``other`` is the
      requests' wall time left after queue, upstream and semantic lookups:
      the cache, coalescing, batching and overhead);
      ``analysis``: :meth:`Overdrive.analyse`'s shares of the last 5 minutes.
    * ``latency``: percentiles ``by_op`` (whole requests), ``by_upstream``
      (upstream exchanges), ``by_model`` (empty: no histogram has a model label).
    * ``alerts``: ``stats()["alerts"]`` when the engine judges alert rules, else [].
    """

    version: int
    at: float
    wall: float
    totals: Totals
    hit_ratio: dict[str, float | None]
    stages: dict[str, float]
    analysis: dict[str, Any]
    latency: dict[str, list[Latency]]
    upstreams: list[UpstreamRow]
    tunables: dict[str, float]
    decisions: list[Decision]
    alerts: list[dict[str, Any]]
    keys: list[KeyUsage]
    spend: dict[str, float]


def snapshot(engine: Engine, wall: Callable[[], float] = time.time) -> Snapshot:
    """Read ``engine`` once into a :class:`Snapshot` (cheap: no percentile over a window)."""
    metrics = engine.metrics
    stats = engine.stats()
    counters: _Counters = (stats.get("metrics") or metrics.snapshot())["counters"]
    families = _histograms(metrics)
    return {
        "version": SNAPSHOT_VERSION,
        "at": metrics.clock.now(),
        "wall": wall(),
        "totals": totals(counters),
        "hit_ratio": hit_ratio(counters),
        "stages": stage_seconds(families),
        "analysis": _analysis(metrics, stats),
        "latency": latency(families),
        "upstreams": upstreams(counters, stats),
        "tunables": {k: float(v) for k, v in stats.get("tunables", {}).items()},
        "decisions": decisions(engine.optimizer),
        "alerts": alerts(stats),
        "keys": keys(counters),
        "spend": sum_by(counters, COST, "model"),
    }


# -- counters ----------------------------------------------------------------------


def _sum(counters: _Counters, name: str, **labels: str) -> float:
    """The counters ``name`` whose labels include ``labels``, summed."""
    wanted = labels.items()
    return float(
        sum(c["value"] for c in counters if c["name"] == name and wanted <= c["labels"].items())
    )


def totals(counters: _Counters) -> Totals:
    """The counters a rate or a ratio is made of, summed over their labels."""
    return {
        "requests": _sum(counters, REQUESTS),
        "prompt_tokens": _sum(counters, TOKENS, kind="prompt"),
        "completion_tokens": _sum(counters, TOKENS, kind="completion"),
        "cache_hits": _sum(counters, CACHE_HITS),
        "cache_misses": _sum(counters, CACHE_MISSES),
        "coalesced": _sum(counters, COALESCED),
        "semantic_hits": _sum(counters, SEMANTIC_LOOKUPS, outcome="hit"),
        "semantic_lookups": _sum(counters, SEMANTIC_LOOKUPS),
        "upstream_requests": _sum(counters, UPSTREAM_REQUESTS),
        "rate_limited": _sum(counters, UPSTREAM_RATE_LIMITED),
        "retries": _sum(counters, RETRIES),
        "upstream_errors": _sum(counters, UPSTREAM_ERRORS),
        "gateway_requests": _sum(counters, GATEWAY_REQUESTS),
        "cost_usd": _sum(counters, COST),
    }


def hit_ratio(counters: _Counters) -> dict[str, float | None]:
    """Shares of requests: answered by the exact cache, by joining a call in flight.

    ``semantic`` is the share of semantic lookups that hit, None when the tier never ran.
    """
    requests = _sum(counters, REQUESTS)
    lookups = _sum(counters, SEMANTIC_LOOKUPS)
    semantic_hits = _sum(counters, SEMANTIC_LOOKUPS, outcome="hit")
    return {
        "exact": _ratio(_sum(counters, CACHE_HITS), requests),
        "coalesced": _ratio(_sum(counters, COALESCED), requests),
        "semantic": _ratio(semantic_hits, lookups) if lookups else None,
    }


def _ratio(part: float, whole: float) -> float:
    return part / whole if whole > 0 else 0.0


def upstreams(counters: _Counters, stats: Mapping[str, Any]) -> list[UpstreamRow]:
    """One row per upstream seen in the metrics or the router's health."""
    health: Mapping[str, dict[str, Any]] = stats.get("health", {})
    in_flight: Mapping[str, float] = stats.get("in_flight", {})
    waiting: Mapping[str, float] = stats.get("waiting", {})
    names = sorted({*health, *sum_by(counters, UPSTREAM_REQUESTS, "upstream")})
    return [
        {
            "name": name,
            "requests": _sum(counters, UPSTREAM_REQUESTS, upstream=name),
            "rate_limited": _sum(counters, UPSTREAM_RATE_LIMITED, upstream=name),
            "retries": _sum(counters, RETRIES, upstream=name),
            "errors": _sum(counters, UPSTREAM_ERRORS, upstream=name),
            "in_flight": float(in_flight.get(name, 0)),
            "waiting": _waiting_at(waiting, name),
            "state": str(health.get(name, {}).get("state", "unknown")),
            "health": _plain(health.get(name, {})),
        }
        for name in names
    ]


def _waiting_at(waiting: Mapping[str, float], upstream: str) -> float:
    """Calls queued at ``upstream``: its queues are named after it (``name`` or ``name/model``)."""
    return float(
        sum(n for q, n in waiting.items() if q == upstream or q.startswith(f"{upstream}/"))
    )


def keys(counters: _Counters) -> list[KeyUsage]:
    """Per gateway key: requests by status code, errors (4xx and 5xx) and spend."""
    spend = sum_by(counters, COST, "key")
    rows: dict[str, dict[str, float]] = {}
    for c in counters:
        if c["name"] == GATEWAY_REQUESTS:
            codes = rows.setdefault(c["labels"].get("key", ""), {})
            code = c["labels"].get("code", "")
            codes[code] = codes.get(code, 0.0) + c["value"]
    return [
        {
            "key": key,
            "requests": sum(codes.values()),
            "errors": sum(n for code, n in codes.items() if code[:1] in ("4", "5")),
            "codes": dict(sorted(codes.items())),
            "cost_usd": spend.get(key) if spend else None,
        }
        for key, codes in sorted(rows.items())
    ]


# -- histograms --------------------------------------------------------------------

_Families = dict[str, list[tuple[dict[str, str], Histogram]]]


def _histograms(metrics: Metrics) -> _Families:
    """Every histogram series by name, with its labels (the live objects: merged below)."""
    found: _Families = {}
    for family in metrics.collect():
        if family.kind == "histogram":
            found[family.name] = [
                (dict(labels), series)
                for labels, series in family.series
                if isinstance(series, Histogram)
            ]
    return found


def _merged(series: Iterable[Histogram]) -> Histogram:
    return Histogram().merge(series)


def _seconds(families: _Families, name: str) -> float:
    return sum(h.sum for _, h in families.get(name, ()))


def stage_seconds(families: _Families) -> dict[str, float]:
    """Seconds spent per stage since start, across every call (see :class:`Snapshot`)."""
    queue = _seconds(families, QUEUE_WAIT)
    upstream = _seconds(families, UPSTREAM_DURATION)
    semantic = _seconds(families, SEMANTIC_DURATION)
    wall = _seconds(families, REQUEST_DURATION)
    return {
        "queue": queue,
        "upstream": upstream,
        "semantic": semantic,
        "other": max(0.0, wall - queue - upstream - semantic),
        "tool_queue": _seconds(families, TOOL_QUEUE_WAIT),
        "tool_running": _seconds(families, TOOL_DURATION),
    }


def latency(families: _Families) -> dict[str, list[Latency]]:
    """Percentiles of whole requests per op, of upstream exchanges per upstream and per op."""
    return {
        "by_op": _grouped(families.get(REQUEST_DURATION, []), "op"),
        "by_upstream": _grouped(families.get(UPSTREAM_DURATION, []), "upstream"),
        # No histogram carries a model label: the row stays empty until one does.
        "by_model": _grouped(families.get(REQUEST_DURATION, []), "model"),
        "tools": _grouped(families.get(TOOL_DURATION, []), "tool"),
    }


def _grouped(series: list[tuple[dict[str, str], Histogram]], label: str) -> list[Latency]:
    groups: dict[str, list[Histogram]] = {}
    for labels, histogram in series:
        if label in labels:
            groups.setdefault(labels[label], []).append(histogram)
    return [_latency(name, _merged(found)) for name, found in sorted(groups.items())]


def _latency(name: str, histogram: Histogram) -> Latency:
    return {
        "name": name,
        "count": histogram.count,
        "p50": histogram.percentile(50),
        "p95": histogram.percentile(95),
        "p99": histogram.percentile(99),
        "max": histogram.max,
    }


# -- the optimizer, alerts, analysis -------------------------------------------------


def decisions(optimizer: Optimizer | None) -> list[Decision]:
    """The optimizer's latest decisions, newest first, with their before and after figures."""
    if optimizer is None:
        return []
    latest = optimizer.decisions[-_DECISIONS_SHOWN:]
    rows: list[Decision] = []
    for decision in reversed(latest):
        d = decision.to_dict()
        rows.append(
            {
                "at": float(d["at"]),
                "tunable": str(d["tunable"]),
                "old": float(d["old"]),
                "new": float(d["new"]),
                "reason": str(d["reason"]),
                "finding": str(d["finding"]),
                "before": _figures(d["before"]),
                "after": None if d["after"] is None else _figures(d["after"]),
                "outcome": str(d["outcome"]),
            }
        )
    return rows


def _figures(figures: Mapping[str, Any]) -> dict[str, float]:
    return {k: _finite(float(v)) for k, v in figures.items()}


def alerts(stats: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The alert states ``stats()`` carries (one per rule and label set), else none."""
    found = stats.get("alerts")
    if not isinstance(found, list):
        return []
    return [_plain(a) for a in found if isinstance(a, Mapping)]


def _analysis(metrics: Metrics, stats: Mapping[str, Any]) -> dict[str, Any]:
    """Shares of wall time by stage over the last 5 minutes, and the bottleneck's name."""
    found = analyse(metrics, stats).to_dict()
    return {
        "stages": found["stages"],
        "served_locally": found["served_locally"],
        "bottleneck": found["bottleneck"],
    }


def _plain(value: Any) -> Any:
    """``value`` with only JSON types inside (a float NaN or inf becomes None)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, str | int | bool):
        return value
    return str(value)


def _finite(value: float) -> float:
    return value if math.isfinite(value) else 0.0
