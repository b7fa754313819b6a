"""Caching: canonical keys and the cache tiers."""

from __future__ import annotations

from ._keys import request_key
from ._memory import CacheStats, MemoryCache

__all__ = ["CacheStats", "MemoryCache", "request_key"]
