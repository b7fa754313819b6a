"""The rules that turn where request time goes into named findings.

:class:`Stages` (in :mod:`._stages`) splits the wall time between the
admission queue, the upstream, the rest, and the tools. Each rule reads
a sample and its stages and returns findings with evidence, a recommendation
and, when one knob fixes it, the tunable and a suggested value. A finding's
``explains`` is the share of wall time behind it; the analyser ranks by it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from ..apis import named
from ..monitor.names import (
    BATCH_SIZE,
    CACHE_HITS,
    COALESCED,
    REQUEST_DURATION,
    REQUESTS,
    RETRIES,
    UPSTREAM_DURATION,
    UPSTREAM_RATE_LIMITED,
    UPSTREAM_REQUESTS,
)
from ._stages import Stages

if TYPE_CHECKING:
    from ._analyser import Sample

__all__ = ["RULES", "Finding", "Severity", "Stages"]

Severity = Literal["critical", "warning", "info"]

_REQUESTS = REQUESTS
_DURATION = REQUEST_DURATION
_SENT = UPSTREAM_REQUESTS
_UPSTREAM = UPSTREAM_DURATION
_HITS = CACHE_HITS
_COALESCED = COALESCED

# Below these a finding is noise, not a bottleneck.
MIN_SHARE = 0.10
MIN_RATIO = 0.05
# Sending at this share of the configured rpm means the limit is what holds calls.
SATURATED = 0.8


@dataclass(frozen=True, slots=True)
class Finding:
    """One named problem: what shows it, what to do, which knob (if one) and to what."""

    name: str
    severity: Severity
    explains: float
    summary: str
    recommendation: str
    evidence: dict[str, float | str] = field(default_factory=dict)
    tunable: str | None = None
    suggested: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "severity": self.severity,
            "explains": round(self.explains, 4),
            "summary": self.summary,
            "recommendation": self.recommendation,
            "evidence": dict(self.evidence),
            "tunable": self.tunable,
            "suggested": self.suggested,
        }


def severity(explains: float) -> Severity:
    return "critical" if explains >= 0.4 else "warning" if explains >= 0.15 else "info"


def per_minute(sample: Sample, count: float) -> float:
    return count / sample.seconds * 60 if sample.seconds > 0 else 0.0


# -- rules ---------------------------------------------------------------------


def queueing(sample: Sample, stages: Stages) -> Iterator[Finding]:
    """Time queued at an upstream: behind its rate limit, or for a concurrency slot."""
    for name, seconds in stages.queue.items():
        share = stages.share(seconds)
        if share < MIN_SHARE:
            continue
        sent = per_minute(sample, sample.total(_SENT, upstream=name))
        rpm = sample.tunables.get(f"upstream.{name}.rpm")
        if rpm and sent >= SATURATED * rpm:
            yield _rate_limit(name, share, sent, rpm)
        else:
            yield _concurrency(sample, name, share, sent)


def _rate_limit(name: str, share: float, sent: float, rpm: float) -> Finding:
    return Finding(
        "rate_limit",
        severity(share),
        share,
        f"{share:.0%} of time queued behind deployment {name}'s RPM limit "
        f"({sent:.0f} of {rpm:.0f} requests/min sent)",
        "add a deployment or raise the limit",
        {
            "upstream": name,
            "queue_share": round(share, 4),
            "sent_per_min": round(sent, 1),
            "rpm": rpm,
        },
        f"upstream.{name}.rpm",
        float(round(rpm * 1.5)),
    )


def _concurrency(sample: Sample, name: str, share: float, sent: float) -> Finding:
    knob = f"upstream.{name}.concurrency"
    limit = sample.tunables.get(knob)
    slots = f" {limit:.0f}" if limit else ""
    return Finding(
        "concurrency",
        severity(share),
        share,
        f"{share:.0%} of time queued for one of deployment {name}'s{slots} concurrency slots "
        f"({sent:.0f} requests/min sent, below any rate limit)",
        "raise the concurrency limit or add a deployment",
        {
            "upstream": name,
            "queue_share": round(share, 4),
            "sent_per_min": round(sent, 1),
            "concurrency": limit or 0.0,
            "in_flight": sample.in_flight.get(name, 0.0),
        },
        knob,
        limit * 2 if limit else None,
    )


def caching(sample: Sample, stages: Stages) -> Iterator[Finding]:
    """Calls that repeat one already made or in flight, while the cache could serve them."""
    ttl = sample.tunables.get("cache.ttl")
    for op in sample.label_values(_REQUESTS, "op"):
        requests = sample.total(_REQUESTS, op=op)
        repeats = sample.total(_HITS, op=op) + sample.total(_COALESCED, op=op)
        if not requests or repeats / requests < MIN_SHARE or (ttl is not None and ttl >= 600):
            continue
        # Coalesced repeats still waited a whole call; a cache would have answered at once.
        waited = sample.total(_COALESCED, op=op) * sample.dist(_DURATION, op=op).mean
        yield _cache_finding(op, repeats / requests, stages.share(waited), ttl)


def _cache_finding(op: str, ratio: float, share: float, ttl: float | None) -> Finding:
    enable = ttl is None
    return Finding(
        "caching",
        severity(share),
        share,
        f"{ratio:.0%} of {op} calls repeat one already made or in flight"
        + (": caching is off" if enable else f": cache TTL is only {ttl:.0f}s"),
        "enable caching ([cache] in the config)" if enable else "raise cache.ttl",
        {"op": op, "repeat_ratio": round(ratio, 4)},
        None if enable else "cache.ttl",
        None if enable or ttl is None else max(600.0, ttl * 4),
    )


def batching(sample: Sample, stages: Stages) -> Iterator[Finding]:
    """Embeddings sent one text per upstream call."""
    p50 = _unbatched(sample)
    if p50 is None:
        return
    sent = sample.total(_SENT, op="embeddings")
    share = stages.share(
        stages.queue_by_op.get("embeddings", 0.0) + stages.upstream.get("embeddings", 0.0)
    )
    enabled = sample.tunables.get("batching.embeddings.enabled", 0.0) >= 1
    wait = sample.tunables.get("batching.embeddings.max_wait_ms", 0.0)
    yield Finding(
        "batching",
        severity(share),
        share,
        f"embedding batch size p50 = {p50:.0f} ({sent:.0f} upstream embedding calls)",
        "wait longer for a batch to fill" if enabled else "enable batching",
        {"batch_p50": round(p50, 2), "upstream_calls": sent, "enabled": float(enabled)},
        "batching.embeddings.max_wait_ms" if enabled else "batching.embeddings.enabled",
        max(2 * wait, 5.0) if enabled else 1.0,
    )


def _unbatched(sample: Sample) -> float | None:
    """The embedding batch size p50 when embeddings go out one text per call, else None."""
    if sample.total(_SENT, op="embeddings") < 10:
        return None
    sizes = sample.dist(BATCH_SIZE, op="embeddings")
    p50 = sizes.p50 if sizes.count else 1.0
    return p50 if round(p50) <= 1 else None


def _batches(op: str) -> bool:
    """Whether calls of ``op`` (a metric's label) are of an API whose calls may be batched."""
    api = named(op)
    return api is not None and api.batches


def rejections(sample: Sample, stages: Stages) -> Iterator[Finding]:
    """429s and retries: attempts the upstream refused or failed."""
    upstream_share = stages.share(sum(stages.upstream.values()))
    for name in sample.label_values(_SENT, "upstream"):
        sent = sample.total(_SENT, upstream=name)
        for counter, what in (
            (UPSTREAM_RATE_LIMITED, "429"),
            (RETRIES, "retry"),
        ):
            ratio = sample.total(counter, upstream=name) / sent if sent else 0.0
            if ratio >= MIN_RATIO:
                yield _rejection(sample, name, what, ratio, ratio * upstream_share)


def _rejection(sample: Sample, name: str, what: str, ratio: float, share: float) -> Finding:
    if what == "429":
        sent = per_minute(sample, sample.total(_SENT, upstream=name) * (1 - ratio))
        return Finding(
            "rate_limited",
            severity(share),
            share,
            f"{ratio:.0%} of calls to deployment {name} got 429 (too many requests)",
            "lower the rpm to what the provider really allows",
            {"upstream": name, "ratio": round(ratio, 4)},
            f"upstream.{name}.rpm",
            float(round(sent * 0.9)) if sent else None,
        )
    return Finding(
        "retries",
        severity(share),
        share,
        f"{ratio:.0%} of calls to deployment {name} were retried after an error",
        "check the deployment's health, or add one to fail over to",
        {"upstream": name, "ratio": round(ratio, 4)},
    )


def latency(sample: Sample, stages: Stages) -> Iterator[Finding]:
    """The upstream answering is the time itself: nothing to tune, only to avoid."""
    # Unbatched embedding time is the batching finding's, not counted twice.
    ops = {
        op: s
        for op, s in stages.upstream.items()
        if not (_batches(op) and _unbatched(sample) is not None)
    }
    share = stages.share(sum(ops.values()))
    if share < MIN_SHARE:
        return
    slowest = max(ops, key=lambda op: ops[op])
    p50 = sample.dist(_UPSTREAM, op=slowest).p50
    yield Finding(
        "upstream_latency",
        severity(share),
        share,
        f"{share:.0%} of time is the upstream answering ({slowest} p50 {p50:.2f}s)",
        "serve more from cache, ask for fewer tokens, or add a faster deployment",
        {"op": slowest, "upstream_share": round(share, 4), "p50_s": round(p50, 4)},
    )


RULES: tuple[Callable[[Sample, Stages], Iterator[Finding]], ...] = (
    queueing,
    caching,
    batching,
    rejections,
    latency,
)
