"""The tunables of one engine: concurrency and rates per upstream, batching, the cache.

Bounds come from the configuration, so nothing (the optimizer included) can
push a knob past what the operator allowed: a rate never above the configured
rpm/tpm (the provider's limit), concurrency within [min, max]_concurrency.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..flow import AdmissionQueue, ConcurrencyLimit, EmbeddingBatches, LimitSpec
from ._tunables import Tunable, Tunables

if TYPE_CHECKING:
    from .._clock import Clock
    from ..tools import ToolRunner
    from ..upstream import Upstream

__all__ = ["CacheSwitch", "CacheTTL", "engine_tunables", "tool_tunables"]

# Longest batching wait the optimizer may choose; past it latency suffers more
# than throughput gains.
_MAX_BATCH_WAIT_MS = 200.0
_MAX_TTL = 30 * 86400.0


class CacheTTL:
    """The engine's cache TTL as a settable holder (the config itself is frozen)."""

    __slots__ = ("seconds",)

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def __repr__(self) -> str:
        return f"CacheTTL({self.seconds:g}s)"


class CacheSwitch:
    """Whether the engine's cache stage is used (the tiers exist either way)."""

    __slots__ = ("on",)

    def __init__(self, on: bool) -> None:
        self.on = on

    def __repr__(self) -> str:
        return f"CacheSwitch({'on' if self.on else 'off'})"


def engine_tunables(
    upstreams: list[Upstream],
    batches: EmbeddingBatches,
    ttl: CacheTTL | None,
    clock: Clock,
    cache: CacheSwitch | None = None,
) -> Tunables:
    """Register every knob of the engine's parts under dotted names."""
    knobs = Tunables(clock)
    for upstream in upstreams:
        knobs.add(_concurrency(upstream))
        for queue in upstream.queues().values():
            for tunable in _rates(queue):
                knobs.add(tunable)
    for tunable in _batching(batches):
        knobs.add(tunable)
    if cache is not None:
        knobs.add(_cache_switch(cache))
    if ttl is not None:
        knobs.add(_ttl(ttl))
    return knobs


def _concurrency(upstream: Upstream) -> Tunable:
    config = upstream.config
    return _concurrency_knob(
        f"upstream.{upstream.name}.concurrency",
        upstream.concurrency,
        (config.min_concurrency, config.max_concurrency),
        "calls in flight at once (adaptive limits keep moving from here)",
    )


def _concurrency_knob(
    name: str, limit: ConcurrencyLimit, bounds: tuple[int, int], description: str
) -> Tunable:
    def write(value: float) -> None:
        limit.limit = int(value)

    low, high = bounds
    return Tunable(
        name,
        lambda: float(limit.limit),
        write,
        low=low,
        high=high,
        step=max(1.0, high / 32),
        integer=True,
        description=description,
    )


def tool_tunables(runner: ToolRunner) -> list[Tunable]:
    """A tool's concurrency (within its bounds) and rpm (never above the one given)."""
    found = [] if runner.queue is None else _rates(runner.queue, f"tool.{runner.name}")
    bounds = runner.options.concurrency_bounds
    if runner.limit is None or bounds is None:
        return found
    knob = _concurrency_knob(
        f"tool.{runner.name}.concurrency", runner.limit, bounds, "calls of the tool running at once"
    )
    return [knob, *found]


def _rates(queue: AdmissionQueue, prefix: str | None = None) -> list[Tunable]:
    """rpm and tpm of one limiter, only those configured, never above the configured value."""
    limiter = queue.limiter
    ceiling = limiter.spec
    found = []
    for dimension, configured in (("rpm", ceiling.rpm), ("tpm", ceiling.tpm)):
        if configured is not None:
            found.append(_rate(queue, dimension, configured, prefix or f"upstream.{queue.name}"))
    return found


def _rate(queue: AdmissionQueue, dimension: str, configured: int, prefix: str) -> Tunable:
    limiter = queue.limiter

    def read() -> float:
        return float(getattr(limiter.spec, dimension) or configured)

    async def write(value: float) -> None:
        spec = limiter.spec
        rpm, tpm = (int(value), spec.tpm) if dimension == "rpm" else (spec.rpm, int(value))
        await limiter.set_spec(LimitSpec(rpm, tpm, spec.burst))

    return Tunable(
        f"{prefix}.{dimension}",
        read,
        write,
        low=1,
        high=configured,
        step=max(1.0, configured / 20),
        integer=True,
        description=f"{'requests' if dimension == 'rpm' else 'tokens'} per minute sent",
    )


def _batching(batches: EmbeddingBatches) -> list[Tunable]:
    def set_enabled(value: float) -> None:
        batches.enabled = bool(value)

    def set_size(value: float) -> None:
        batches.max_batch = int(value)

    def set_wait(value: float) -> None:
        batches.max_wait = value / 1000

    prefix = "batching.embeddings"
    return [
        Tunable(f"{prefix}.enabled", lambda: float(batches.enabled), set_enabled, 0, 1, 1,
                integer=True, description="combine single-text embedding calls (1) or not (0)"),
        Tunable(f"{prefix}.max_batch", lambda: float(batches.max_batch), set_size, 1, 2048, 8,
                integer=True, description="texts per upstream embeddings call, at most"),
        Tunable(f"{prefix}.max_wait_ms", lambda: batches.max_wait * 1000, set_wait,
                0, _MAX_BATCH_WAIT_MS, 2, unit="ms",
                description="how long the first text of a batch waits for company"),
    ]  # fmt: skip


def _ttl(ttl: CacheTTL) -> Tunable:
    def write(value: float) -> None:
        ttl.seconds = value

    return Tunable(
        "cache.ttl",
        lambda: ttl.seconds,
        write,
        low=1.0,
        high=_MAX_TTL,
        step=60.0,
        unit="s",
        description="how long a cached answer is served fresh",
    )


def _cache_switch(cache: CacheSwitch) -> Tunable:
    def write(value: float) -> None:
        cache.on = bool(value)

    return Tunable(
        "cache.enabled",
        lambda: float(cache.on),
        write,
        low=0,
        high=1,
        step=1,
        integer=True,
        description="answer repeated calls from the cache (1) or always call upstream (0)",
    )
