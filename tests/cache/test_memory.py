from __future__ import annotations

from overdrive import FakeClock
from overdrive.cache import MemoryCache


def test_hit_miss_and_ttl(clock: FakeClock) -> None:
    cache: MemoryCache[str] = MemoryCache(1000, clock)
    assert cache.set(b"a", "A", size=10, ttl=5)
    assert cache.get(b"a") == "A"
    clock.advance(5)
    assert cache.get(b"a") is None
    assert (cache.stats.hits, cache.stats.misses, cache.stats.expirations) == (1, 1, 1)
    assert cache.bytes_used == 0


def test_bounded_in_bytes_evicting_least_recently_used(clock: FakeClock) -> None:
    cache: MemoryCache[int] = MemoryCache(100, clock)
    for i in range(4):
        cache.set(bytes([i]), i, size=25, ttl=60)
    cache.get(bytes([0]))  # 0 is now the most recent; 1 is the coldest
    cache.set(b"new", 9, size=25, ttl=60)
    assert cache.bytes_used == 100
    assert cache.get(bytes([1])) is None
    assert cache.get(bytes([0])) == 0
    assert cache.stats.evictions == 1


def test_value_over_a_quarter_of_the_budget_is_rejected(clock: FakeClock) -> None:
    cache: MemoryCache[str] = MemoryCache(100, clock)
    assert not cache.set(b"big", "x", size=26, ttl=60)
    assert cache.stats.rejections == 1
    assert len(cache) == 0


def test_overwrite_keeps_byte_count_exact(clock: FakeClock) -> None:
    cache: MemoryCache[str] = MemoryCache(100, clock)
    cache.set(b"k", "one", size=10, ttl=60)
    cache.set(b"k", "two", size=20, ttl=60)
    assert cache.bytes_used == 20
    assert cache.delete(b"k")
    assert cache.bytes_used == 0
    assert "entries=0" in repr(cache)
