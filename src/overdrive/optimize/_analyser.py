"""The analyser: from metric windows, where request time goes and what holds it up.

``analyse`` reads a :class:`Sample` (the engine's metric windows and state, live
or saved by ``overdrive demo``), splits the requests' wall time by stage and
ranks :class:`Finding` s by the share of it they explain; the first is the
bottleneck. ``overdrive report`` prints it (:func:`render`, in :mod:`._report`).

>>> from overdrive.monitor import Metrics
>>> metrics = Metrics()
>>> metrics.counter("overdrive_requests_total", op="chat").inc(3)
>>> sample = Sample.from_metrics(metrics, {"tunables": {"cache.ttl": 60.0}})
>>> sample.total("overdrive_requests_total", op="chat"), sample.tunables["cache.ttl"]
(3.0, 60.0)
>>> Sample.from_dict(sample.to_dict()) == sample
True
>>> analyse(sample).bottleneck is None  # three calls that took no time hold nothing up
True
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from .._errors import ConfigError
from .._json import dumps, loads
from ..monitor import Metrics
from ..monitor.names import CACHE_HITS, COALESCED, REQUESTS, SEMANTIC_LOOKUPS
from ._findings import RULES, Finding
from ._report import render
from ._stages import Stages
from ._tool_findings import TOOL_RULES, tool_breakdown

__all__ = [
    "LAST_RUN",
    "Analysis",
    "Dist",
    "Point",
    "Sample",
    "analyse",
    "load_sample",
    "render",
    "save_run",
]

Labels = tuple[tuple[str, str], ...]
# Where ``overdrive demo`` leaves its run and ``overdrive report`` looks for it.
LAST_RUN = Path(".overdrive") / "last-run.json"


@dataclass(frozen=True, slots=True)
class Point:
    """One counter series: its increase over the sample's span."""

    name: str
    labels: Labels
    value: float


@dataclass(frozen=True, slots=True)
class Dist:
    """One histogram series summarised: count, sum and a few percentiles."""

    name: str
    labels: Labels
    count: float
    sum: float
    p50: float = 0.0
    p95: float = 0.0
    max: float = 0.0

    @property
    def mean(self) -> float:
        return self.sum / self.count if self.count else 0.0


@dataclass(frozen=True, slots=True)
class Sample:
    """Counters and histograms over ``seconds``, plus the engine state that explains them."""

    seconds: float
    counters: tuple[Point, ...] = ()
    histograms: tuple[Dist, ...] = ()
    tunables: Mapping[str, float] = field(default_factory=dict)
    in_flight: Mapping[str, float] = field(default_factory=dict)
    waiting: Mapping[str, float] = field(default_factory=dict)

    # -- building ----------------------------------------------------------------

    @classmethod
    def from_metrics(
        cls, metrics: Metrics, stats: Mapping[str, Any] | None = None, *, seconds: float = 300.0
    ) -> Sample:
        """The last ``seconds`` of ``metrics`` (all time if it keeps no windows)."""
        try:
            return _windowed(metrics, stats or {}, seconds)
        except ConfigError:  # no windows, or fewer seconds than asked: totals serve
            return cls.from_dict({**metrics.snapshot(), **_state(stats or {})})

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Sample:
        """Read :meth:`to_dict`'s shape; a ``Metrics.snapshot()`` (plus stats) reads too."""
        return cls(
            float(data.get("seconds") or 0.0),
            tuple(_point(item) for item in data.get("counters", ())),
            tuple(_dist(item) for item in data.get("histograms", ())),
            **_state(data),
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data (labels as objects)."""
        return {
            "seconds": self.seconds,
            "counters": [
                {"name": p.name, "labels": dict(p.labels), "value": p.value} for p in self.counters
            ],
            "histograms": [_dist_dict(d) for d in self.histograms],
            "tunables": dict(self.tunables),
            "in_flight": dict(self.in_flight),
            "waiting": dict(self.waiting),
        }

    # -- reading -----------------------------------------------------------------

    def total(self, name: str, **labels: str) -> float:
        """Sum of the counters ``name`` whose labels include ``labels``."""
        return sum(p.value for p in self.counters if p.name == name and _has(p.labels, labels))

    def dist(self, name: str, **labels: str) -> Dist:
        """The histograms ``name`` matching ``labels``, merged (percentiles: the busiest one's)."""
        found = [d for d in self.histograms if d.name == name and _has(d.labels, labels)]
        if not found:
            return Dist(name, (), 0.0, 0.0)
        busiest = max(found, key=lambda d: d.count)
        count, total = sum(d.count for d in found), sum(d.sum for d in found)
        return Dist(name, (), count, total, busiest.p50, busiest.p95, max(d.max for d in found))

    def label_values(self, name: str, label: str) -> list[str]:
        """Every value ``label`` takes in the series ``name``, sorted."""
        series: list[Point | Dist] = [*self.counters, *self.histograms]
        return sorted(
            {dict(s.labels)[label] for s in series if s.name == name and label in dict(s.labels)}
        )


def _windowed(metrics: Metrics, stats: Mapping[str, Any], seconds: float) -> Sample:
    counters, histograms, span = [], [], 0.0
    for family in metrics.collect():
        for labels, _ in family.series:
            if family.kind == "gauge":
                continue
            window = metrics.window(family.name, seconds, **dict(labels))
            span = max(span, window.seconds)
            if family.kind == "counter":
                counters.append(Point(family.name, labels, window.count))
            else:
                p50, p95, top = (window.percentile(q) for q in (50, 95, 100))
                histograms.append(
                    Dist(family.name, labels, window.count, window.sum, p50, p95, top)
                )
    return Sample(span, tuple(counters), tuple(histograms), **_state(stats))


def _state(data: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    """The engine state an analysis uses, from ``od.stats()`` or a saved sample."""
    return {
        key: {str(k): float(v) for k, v in (data.get(key) or {}).items() if v is not None}
        for key in ("tunables", "in_flight", "waiting")
    }


def _labels(raw: Mapping[str, Any]) -> Labels:
    return tuple(sorted((str(k), str(v)) for k, v in raw.items()))


def _point(item: Mapping[str, Any]) -> Point:
    return Point(str(item["name"]), _labels(item.get("labels", {})), float(item["value"]))


def _dist(item: Mapping[str, Any]) -> Dist:
    count = float(item.get("count", 0))
    # ``Metrics.snapshot()`` gives a mean, a saved sample the sum.
    total = float(item["sum"]) if "sum" in item else float(item.get("mean", 0.0)) * count
    return Dist(
        str(item["name"]),
        _labels(item.get("labels", {})),
        count,
        total,
        *(float(item.get(key, 0.0)) for key in ("p50", "p95", "max")),
    )


def _dist_dict(dist: Dist) -> dict[str, Any]:
    return {
        "name": dist.name,
        "labels": dict(dist.labels),
        "count": dist.count,
        "sum": dist.sum,
        "p50": dist.p50,
        "p95": dist.p95,
        "max": dist.max,
    }


def _has(labels: Labels, wanted: Mapping[str, str]) -> bool:
    return set(wanted.items()) <= set(labels)


# -- the analysis --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Analysis:
    """Where the requests' time went, and the findings ranked by how much of it they explain.

    ``stages`` are shares of wall time (summing to 1 when there was any): the
    model requests' ``queue``, ``upstream`` and ``other``, and, when a tool
    was called, the tools' ``tool_queue`` and ``tool_running``.
    ``served_locally`` is the share of requests answered by the cache or by
    joining an identical call in flight (with the semantic tier on, also the
    share of ``semantic`` hits, which the cache's share includes); ``tools``
    breaks the tools down, one row per tool (see
    :func:`._tool_findings.tool_breakdown`).
    """

    seconds: float
    requests: float
    wall_seconds: float
    stages: dict[str, float]
    served_locally: dict[str, float]
    findings: tuple[Finding, ...]
    tools: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def bottleneck(self) -> Finding | None:
        """The finding that explains the most time, if any."""
        return self.findings[0] if self.findings else None

    def to_dict(self) -> dict[str, Any]:
        found = {
            "seconds": round(self.seconds, 3),
            "requests": self.requests,
            "wall_seconds": round(self.wall_seconds, 3),
            "stages": {k: round(v, 4) for k, v in self.stages.items()},
            "served_locally": {k: round(v, 4) for k, v in self.served_locally.items()},
            "bottleneck": None if self.bottleneck is None else self.bottleneck.name,
            "findings": [f.to_dict() for f in self.findings],
        }
        if self.tools:  # a run without tools reads as it did before tools were measured
            found["tools"] = {
                name: {k: round(v, 4) for k, v in row.items()} for name, row in self.tools.items()
            }
        return found


class _Engine(Protocol):
    metrics: Metrics

    def stats(self) -> dict[str, Any]: ...


def analyse(
    source: Sample | Metrics | Mapping[str, Any],
    stats: Mapping[str, Any] | None = None,
    *,
    seconds: float = 300.0,
) -> Analysis:
    """Analyse a sample, a live registry (its last ``seconds``) or a saved/snapshot dict.

    ``stats`` is ``od.stats()`` (tunables, in-flight and waiting counts). On a
    live engine: ``analyse(od.metrics, od.stats())``.
    """
    sample = _sample_of(source, stats, seconds)
    stages = Stages.of(sample)
    findings = [f for rule in (*RULES, *TOOL_RULES) for f in rule(sample, stages)]
    # Ties keep rule order (models' queueing first): deterministic for the same sample.
    findings.sort(key=lambda f: -f.explains)
    return Analysis(
        sample.seconds,
        sample.total(REQUESTS),
        stages.wall,
        stages.shares(),
        _served_locally(sample),
        tuple(findings),
        tool_breakdown(sample, stages),
    )


def _sample_of(
    source: Sample | Metrics | Mapping[str, Any], stats: Mapping[str, Any] | None, seconds: float
) -> Sample:
    if isinstance(source, Sample):
        return source
    if isinstance(source, Metrics):
        return Sample.from_metrics(source, stats, seconds=seconds)
    return Sample.from_dict({**source, **_state(stats)} if stats else source)


def _served_locally(sample: Sample) -> dict[str, float]:
    requests = sample.total(REQUESTS)
    if not requests:
        return {"cache": 0.0, "coalesced": 0.0}
    served = {
        "cache": sample.total(CACHE_HITS) / requests,
        "coalesced": sample.total(COALESCED) / requests,
    }
    if sample.total(SEMANTIC_LOOKUPS):  # of the cache's share: questions asked in other words
        served["semantic"] = sample.total(SEMANTIC_LOOKUPS, outcome="hit") / requests
    return served


# -- a run saved for `overdrive report` ----------------------------------------


def save_run(
    engine: _Engine, path: Path | str = LAST_RUN, extra: Mapping[str, Any] | None = None
) -> Path | None:
    """Write ``engine``'s sample where ``overdrive report`` reads it; None if it cannot.

    ``extra`` adds fields beside the sample's (the engine adds its dashboard
    snapshot, which ``overdrive top --file`` shows); a reader ignores them.

    >>> save_run(od)  # doctest: +SKIP
    PosixPath('.overdrive/last-run.json')
    """
    target = Path(path)
    sample = Sample.from_metrics(engine.metrics, engine.stats())
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(dumps({**sample.to_dict(), **(extra or {})}))
    except OSError:  # a read-only directory must not fail the run that measured
        return None
    return target


def load_sample(path: Path | str = LAST_RUN) -> Sample:
    """Read a sample :func:`save_run` wrote.

    FileNotFoundError if there is none; a ValueError naming the file and what
    is wrong with it if it is not a saved run (truncated, edited, another file).
    """
    data = Path(path).read_bytes()
    try:
        return sample_of(loads(data))
    except ValueError as exc:
        raise ValueError(f"{path} is not a saved run: {exc}") from None


def sample_of(data: Any) -> Sample:
    """A :class:`Sample` from parsed JSON; a ValueError saying what does not fit."""
    if not isinstance(data, Mapping):
        raise ValueError(f"expected a JSON object, got {type(data).__name__}")
    try:
        return Sample.from_dict(data)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ValueError(f"{type(exc).__name__}: {exc}") from None
