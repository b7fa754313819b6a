"""L1: an in-process cache bounded in bytes, with per-entry TTL and LRU eviction."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Generic, TypeVar

from .._clock import Clock, SystemClock

__all__ = ["CacheStats", "MemoryCache"]

V = TypeVar("V")

# A share of the budget above which a single value is refused: one huge
# value must not flush the whole cache.
_MAX_ENTRY_SHARE = 0.25


@dataclass(slots=True)
class CacheStats:
    hits: int = 0
    misses: int = 0
    evictions: int = 0
    expirations: int = 0
    rejections: int = 0

    def hit_ratio(self) -> float:
        lookups = self.hits + self.misses
        return self.hits / lookups if lookups else 0.0


class MemoryCache(Generic[V]):
    """Maps keys to values of a known byte size; the least recently used go first.

    Expiry is lazy: an entry past its TTL is dropped when read or when it
    reaches the cold end, so there is no timer per key and no full scan.

    >>> cache: MemoryCache[bytes] = MemoryCache(max_bytes=1024)
    >>> cache.set(b"k", b"value", size=5, ttl=60)
    True
    >>> cache.get(b"k")
    b'value'
    """

    __slots__ = ("_clock", "_entries", "bytes_used", "max_bytes", "stats")

    def __init__(self, max_bytes: int, clock: Clock | None = None) -> None:
        self.max_bytes = max_bytes
        self.bytes_used = 0
        self.stats = CacheStats()
        self._clock = clock or SystemClock()
        self._entries: OrderedDict[bytes, tuple[V, int, float]] = OrderedDict()

    def get(self, key: bytes) -> V | None:
        entry = self._entries.get(key)
        if entry is None:
            self.stats.misses += 1
            return None
        value, _, expires = entry
        if expires <= self._clock.now():
            self._drop(key)
            self.stats.expirations += 1
            self.stats.misses += 1
            return None
        self._entries.move_to_end(key)
        self.stats.hits += 1
        return value

    def set(self, key: bytes, value: V, size: int, ttl: float) -> bool:
        """Store ``value``; False when it is too large to admit."""
        if size > self.max_bytes * _MAX_ENTRY_SHARE or ttl <= 0:
            self.stats.rejections += 1
            return False
        self._drop(key)
        self._entries[key] = (value, size, self._clock.now() + ttl)
        self.bytes_used += size
        self._evict_to_fit()
        return True

    def delete(self, key: bytes) -> bool:
        return self._drop(key)

    def clear(self) -> None:
        self._entries.clear()
        self.bytes_used = 0

    def __len__(self) -> int:
        return len(self._entries)

    def summary(self) -> dict[str, float]:
        return {
            "entries": len(self),
            "bytes": self.bytes_used,
            "max_bytes": self.max_bytes,
            "hits": self.stats.hits,
            "misses": self.stats.misses,
            "hit_ratio": self.stats.hit_ratio(),
        }

    def _drop(self, key: bytes) -> bool:
        entry = self._entries.pop(key, None)
        if entry is None:
            return False
        self.bytes_used -= entry[1]
        return True

    def _evict_to_fit(self) -> None:
        now = self._clock.now()
        while self.bytes_used > self.max_bytes:
            key, (_, _, expires) = next(iter(self._entries.items()))
            self._drop(key)
            if expires <= now:
                self.stats.expirations += 1
            else:
                self.stats.evictions += 1

    def __repr__(self) -> str:
        return (
            f"MemoryCache(entries={len(self)}, bytes={self.bytes_used}/{self.max_bytes}, "
            f"hit_ratio={self.stats.hit_ratio():.2f})"
        )
