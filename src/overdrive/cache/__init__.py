"""Caching: canonical keys, the cache stage, and the tiers under it (memory, disk, Redis).

The tiers are built from ``[cache]`` by :func:`build_cache`; the Redis tier
loads redis-py only when a ``redis_url`` asks for it.
"""

from __future__ import annotations

from ._build import build_cache
from ._keys import call_key, semantic_scope
from ._memory import CachedItem, MemoryCache
from ._stage import CacheStage, StoredAnswer
from ._tiered import TieredCache

__all__ = [
    "CacheStage",
    "CachedItem",
    "MemoryCache",
    "StoredAnswer",
    "TieredCache",
    "build_cache",
    "call_key",
    "semantic_scope",
]
