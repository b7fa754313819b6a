"""Caching: canonical keys, the memory tier, shared tiers, and the ``cached`` decorator."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._codec import Codec
from ._decorator import CacheInfo, cached
from ._disk import DiskTier
from ._keys import request_key
from ._memory import ENTRY_OVERHEAD, CachedItem, CacheStats, MemoryCache
from ._sizeof import deep_sizeof
from ._tier import Entry, Tier
from ._tiered import Found, TieredCache

if TYPE_CHECKING:
    from ._lease import RedisLease
    from ._redis import RedisTier

__all__ = [
    "ENTRY_OVERHEAD",
    "CacheInfo",
    "CacheStats",
    "CachedItem",
    "Codec",
    "DiskTier",
    "Entry",
    "Found",
    "MemoryCache",
    "RedisLease",
    "RedisTier",
    "Tier",
    "TieredCache",
    "cached",
    "deep_sizeof",
    "request_key",
]


def __getattr__(name: str) -> Any:
    """Load the Redis parts on first use: redis-py is the optional extra ``overdrive[redis]``."""
    if name not in ("RedisLease", "RedisTier"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    try:
        from . import _lease, _redis
    except ImportError as exc:
        raise ImportError(
            f"{name} needs redis-py: pip install 'overdrive[redis]' ({exc})"
        ) from None
    return getattr(_lease if name == "RedisLease" else _redis, name)
