"""W-TinyLFU admission: a hot set survives a scan that flushes plain LRU."""

from __future__ import annotations

import pytest

from overdrive.cache._memory import MemoryCache, Policy
from overdrive.testing import FakeClock

_BUDGET = 100_000
_SIZE = 1000  # 100 entries fit
_HOT = 50


def _hot_hits_after_scan(policy: Policy, clock: FakeClock) -> float:
    """Warm a hot set, interleave it with a long scan, then count how much of it stayed."""
    cache: MemoryCache[int] = MemoryCache(_BUDGET, clock, policy=policy)
    for _ in range(5):
        for key in range(_HOT):
            if cache.get(key) is None:
                cache.set(key, key, size=_SIZE)
    scan = range(10_000, 12_000)  # 20x the cache in one-pass keys
    for i, key in enumerate(scan):
        if cache.get(key) is None:
            cache.set(key, key, size=_SIZE)
        if i % 100 == 0:  # the hot set is still used, but rarely during the scan
            cache.get(i % _HOT)
    return sum(key in cache for key in range(_HOT)) / _HOT


def test_scan_does_not_flush_the_hot_set_unlike_lru(clock: FakeClock) -> None:
    tinylfu = _hot_hits_after_scan("tinylfu", clock)
    lru = _hot_hits_after_scan("lru", clock)
    assert tinylfu >= 0.9
    assert lru <= 0.1


def test_frequent_newcomer_is_admitted_over_cold_residents(clock: FakeClock) -> None:
    cache: MemoryCache[int] = MemoryCache(_BUDGET, clock)
    for key in range(100):
        cache.set(key, key, size=_SIZE)
    for _ in range(4):  # a key seen often, but evicted each time it is written
        cache.get("popular")
        cache.set("popular", 0, size=_SIZE)
        for key in range(1000, 1003):
            cache.set(key, key, size=_SIZE)
    assert "popular" in cache


def test_hits_in_probation_promote_to_protected(clock: FakeClock) -> None:
    cache: MemoryCache[int] = MemoryCache(_BUDGET, clock)
    for key in range(100):
        cache.set(key, key, size=_SIZE)
    for key in range(10):
        cache.get(key)
    cache.set("w", 0, size=_SIZE)  # drains the read buffer
    assert all(key in cache._protected for key in range(10))


@pytest.mark.parametrize("policy", ["tinylfu", "lru"])
def test_read_buffer_drains_when_full(clock: FakeClock, policy: Policy) -> None:
    cache: MemoryCache[int] = MemoryCache(_BUDGET, clock, policy=policy)
    cache.set("a", 1, size=10)
    for _ in range(1000):
        assert cache.get("a") == 1
    assert len(cache._reads) < 1000
    assert cache.stats.hits == 1000


def test_sketch_grows_with_the_entry_count(clock: FakeClock) -> None:
    cache: MemoryCache[int] = MemoryCache(10_000_000, clock)
    for key in range(5000):
        cache.set(key, key, size=100)
    assert cache._sketch is not None
    assert cache._sketch.capacity >= 5000


def test_statistics_include_reads_not_yet_drained(clock: FakeClock) -> None:
    cache: MemoryCache[int] = MemoryCache(_BUDGET, clock)
    cache.set("a", 1, size=10, ttl=5, stale=5)
    cache.get("a")
    cache.get_entry("a")
    clock.advance(6)
    assert cache.get_entry("a") is not None  # stale, still served
    assert cache.get("a") is None  # not fresh: a miss for get
    assert len(cache._reads) == 3  # all three reads still buffered
    assert (cache.stats.hits, cache.stats.stale_hits, cache.stats.misses) == (2, 1, 1)
    cache._drain()
    assert (cache.stats.hits, cache.stats.stale_hits, cache.stats.misses) == (2, 1, 1)


def test_resident_hits_are_counted_on_the_entry_and_age_with_the_sketch(
    clock: FakeClock,
) -> None:
    cache: MemoryCache[int] = MemoryCache(_BUDGET, clock)
    cache.set("a", 1, size=10)
    for _ in range(12):
        cache.get("a")
    cache._drain()
    node, sketch = cache._data["a"], cache._sketch
    assert sketch is not None
    assert sketch.frequency(node.hash) == 1  # the write; the hits live on the entry
    assert cache._frequency(node) == 13
    sketch.age()
    assert cache._own_count(node) == 6  # halved lazily, without walking the entries
    assert cache._frequency(node) == 6


def test_a_leaving_entry_hands_its_hits_to_the_sketch(clock: FakeClock) -> None:
    cache: MemoryCache[int] = MemoryCache(_BUDGET, clock)
    cache.set("a", 1, size=10)
    for _ in range(5):
        cache.get("a")
    h = cache._data["a"].hash
    cache.delete("a")  # reads still buffered: counted at the next drain
    cache._drain()
    assert cache._sketch is not None
    assert cache._sketch.frequency(h) == 6
    cache.set("a", 1, size=10)  # comes back with its history
    assert cache._frequency(cache._data["a"]) == 7
