"""Caching: canonical keys, the memory tier and the shared tiers (disk, Redis)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._build import build_cache
from ._codec import Codec
from ._disk import DiskTier
from ._keys import call_key, request_key
from ._memory import ENTRY_OVERHEAD, CachedItem, CacheStats, MemoryCache
from ._sizeof import deep_sizeof
from ._stage import CacheStage, StoredAnswer
from ._tier import Entry, Tier
from ._tiered import Found, TieredCache

if TYPE_CHECKING:
    from ._redis import RedisTier

__all__ = [
    "ENTRY_OVERHEAD",
    "CacheStage",
    "CacheStats",
    "CachedItem",
    "Codec",
    "DiskTier",
    "Entry",
    "Found",
    "MemoryCache",
    "RedisTier",
    "StoredAnswer",
    "Tier",
    "TieredCache",
    "build_cache",
    "call_key",
    "deep_sizeof",
    "request_key",
]


def __getattr__(name: str) -> Any:
    """Load the Redis parts on first use: redis-py is the optional extra ``overdrive[redis]``."""
    if name != "RedisTier":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    try:
        from . import _redis
    except ImportError as exc:
        raise ImportError(
            f"{name} needs redis-py: pip install 'overdrive[redis]' ({exc})"
        ) from None
    return _redis.RedisTier
