"""The engine's parts, built from a config and wired to each other.

:class:`~overdrive.engine.Overdrive` runs a call through these parts; this
module only makes them: the send side (upstreams, router, dispatcher,
sender), the cache side (tiers, the on/off switch, the cache stage) and what
the optimizer tunes. Each part's own package documents it.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from ._calls import Result
from ._clock import Clock
from .cache import CacheStage, TieredCache, build_cache
from .config import Config
from .cost import Price, PriceTable, budgets_for, default_prices
from .flow import Backoff, EmbeddingBatches
from .monitor import Metrics, OpMeterBook, TierFaults
from .monitor.names import REVALIDATION_ERRORS
from .optimize import CacheSwitch, CacheTTL, Tunables, engine_tunables
from .resources import ResourceManager, build_resources
from .route import Alias, Router, aliases_of
from .upstream import CacheHints, Dispatcher, Sender, Upstream, build_router, limiters_for

__all__ = ["CacheParts", "Parts", "SendParts", "assemble"]


@dataclass(slots=True, frozen=True)
class SendParts:
    """What sends a call: the upstreams, the router over them, retries, the final read.

    ``aliases`` (``[[models]]`` by name) is looked up as a call enters; the
    sender tries the fallbacks a resolved call carries.
    """

    upstreams: list[Upstream]
    router: Router[Upstream]
    dispatcher: Dispatcher
    sender: Sender
    aliases: dict[str, Alias]


@dataclass(slots=True, frozen=True)
class CacheParts:
    """The cache's tiers, its run-time switch and TTL, and the stage that reads and fills it."""

    tiers: TieredCache
    switch: CacheSwitch
    ttl: CacheTTL
    stage: CacheStage[Result]


@dataclass(slots=True, frozen=True)
class Parts:
    """Every part of one engine."""

    metrics: Metrics
    meters: OpMeterBook
    send: SendParts
    cache: CacheParts
    batches: EmbeddingBatches
    tunables: Tunables
    resources: ResourceManager


def assemble(
    config: Config, clock: Clock, rng: random.Random, wall: Callable[[], float], *, probes: bool
) -> Parts:
    """The parts of an engine on ``config``.

    ``wall`` stamps stored answers; ``probes`` turns on the health probes by default.

    >>> config = Config.model_validate({"upstreams": [{"name": "a",
    ...     "base_url": "http://127.0.0.1:1/v1", "models": ["m"]}]})
    >>> from overdrive.testing import FakeClock
    >>> parts = assemble(config, FakeClock(), random.Random(1), lambda: 0.0, probes=False)
    >>> [u.name for u in parts.send.upstreams], parts.cache.switch.on
    (['a'], True)
    """
    metrics = Metrics(clock=clock)  # on the engine's clock, so windows move with it
    meters = OpMeterBook(metrics)
    send = _send_parts(config, clock, rng, wall, metrics, meters, probes)
    cache = _cache_parts(config, clock, rng, wall, metrics)
    batches = EmbeddingBatches(
        config.batching.embeddings,
        send.sender.send,
        metrics,
        clock,
        lambda model: shortest_backlog(send.upstreams, model),
    )
    tunables = engine_tunables(send.upstreams, batches, cache.ttl, clock, cache.switch)
    return Parts(metrics, meters, send, cache, batches, tunables, build_resources(config))


def shortest_backlog(upstreams: list[Upstream], model: str) -> float:
    """Seconds a call for ``model`` would likely queue: the shortest of its upstreams'."""
    waits = [u.queue(model).backlog() for u in upstreams if model in u.models]
    return min(waits, default=0.0)


def price_table(config: Config) -> PriceTable:
    """The shipped prices with ``[[prices]]`` over them."""
    prices = default_prices()
    for price in config.prices:
        prices[price.model] = Price(price.input, price.output, price.cached_input)
    return PriceTable(prices)


def _send_parts(
    config: Config,
    clock: Clock,
    rng: random.Random,
    wall: Callable[[], float],
    metrics: Metrics,
    meters: OpMeterBook,
    probes: bool,
) -> SendParts:
    upstreams = [
        Upstream(u, clock, limiters_for(u, clock, config.redis_url, config.namespace))
        for u in config.upstreams
    ]
    router = build_router(upstreams, config, clock, rng, probes_by_default=probes)
    backoff = Backoff(config.retry.base, config.retry.cap, rng)
    hints = CacheHints(config.routing.affinity)
    dispatcher = Dispatcher(router, config.retry, clock, metrics, backoff, hints, meters)
    budgets = budgets_for(config, wall, metrics)
    retries = config.retry.rate_limited_attempts
    sender = Sender(dispatcher, meters, retries, metrics, price_table(config), budgets)
    return SendParts(upstreams, router, dispatcher, sender, aliases_of(config.aliases))


def _cache_parts(
    config: Config, clock: Clock, rng: random.Random, wall: Callable[[], float], metrics: Metrics
) -> CacheParts:
    settings = config.cache
    if settings.enabled:
        tiers = build_cache(settings, clock, config.namespace, config.redis_url)
    else:  # memory only, so the cache.enabled tunable can still turn it on
        tiers = build_cache(settings.model_copy(update={"disk": None, "redis_url": None}), clock)
    # A failing disk or Redis tier is skipped; this makes sure it is seen.
    tiers.on_fault = TierFaults(metrics, clock).report
    stage: CacheStage[Result] = CacheStage(
        tiers,
        rng=rng,
        wall=wall,
        on_refresh_error=lambda _error: metrics.counter(REVALIDATION_ERRORS).inc(),
    )
    return CacheParts(tiers, CacheSwitch(settings.enabled), CacheTTL(settings.ttl), stage)
