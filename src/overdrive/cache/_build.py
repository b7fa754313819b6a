"""Build the tiered cache a ``[cache]`` config section describes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._codec import Codec
from ._disk import DiskTier
from ._memory import MemoryCache
from ._tiered import TieredCache

if TYPE_CHECKING:
    from .._clock import Clock
    from ..config import CacheConfig
    from ._tier import Tier

__all__ = ["build_cache", "exact_memory"]


def build_cache(
    config: CacheConfig, clock: Clock, namespace: str = "", shared_redis: str | None = None
) -> TieredCache:
    """Memory, then the SQLite file if ``disk`` is set, then Redis if a URL is known.

    The Redis URL is ``[cache] redis_url``, else ``shared_redis`` (the
    top-level ``redis_url`` every part of the engine shares).

    With Redis, identical misses in different processes also compute once
    (a Redis lease whose waiters are woken by pub/sub).
    """
    memory: MemoryCache[Any] = MemoryCache(exact_memory(config), clock, policy=config.policy)
    tiers: list[Tier] = []
    lease = None
    if config.disk:
        tiers.append(DiskTier(config.disk, namespace=namespace))
    redis_url = config.redis_url or shared_redis
    if redis_url:
        from ..coalesce import RedisLease
        from ._redis import RedisTier

        tiers.append(RedisTier(redis_url, namespace=namespace))
        lease = RedisLease(redis_url, namespace=namespace)
    return TieredCache(memory, tiers, Codec(config.secret()), lease=lease)


def exact_memory(config: CacheConfig) -> int:
    """The memory tier's bytes: ``[cache] memory``, less the semantic tier's share when it is on.

    >>> from overdrive.config import CacheConfig
    >>> exact_memory(CacheConfig(memory="256MB", semantic={"enabled": True, "memory": "32MB"}))
    224000000
    """
    semantic = config.semantic
    return config.memory - (semantic.memory if semantic.enabled else 0)
