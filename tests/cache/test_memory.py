from __future__ import annotations

import math

import pytest

from overdrive.cache._memory import ENTRY_OVERHEAD, CachedItem, MemoryCache
from overdrive.cache._sizeof import deep_sizeof
from overdrive.testing import FakeClock


def test_hit_miss_and_ttl(clock: FakeClock) -> None:
    cache: MemoryCache[str] = MemoryCache(1000, clock)
    assert cache.set(b"a", "A", size=10, ttl=5)
    assert cache.get(b"a") == "A"
    clock.advance(5)
    assert cache.get(b"a") is None
    assert (cache.stats.hits, cache.stats.misses, cache.stats.expirations) == (1, 1, 1)
    assert cache.bytes_used == 0


def test_positional_size_and_ttl_still_work(clock: FakeClock) -> None:
    cache: MemoryCache[str] = MemoryCache(1000, clock)
    assert cache.set(b"k", "v", 10, 60)
    assert cache.bytes_used == 10


def test_lru_policy_evicts_least_recently_used(clock: FakeClock) -> None:
    cache: MemoryCache[int] = MemoryCache(100, clock, policy="lru")
    for i in range(4):
        cache.set(bytes([i]), i, size=25, ttl=60)
    cache.get(bytes([0]))  # 0 is now the most recent; 1 is the coldest
    cache.set(b"new", 9, size=25, ttl=60)
    assert cache.bytes_used == 100
    assert cache.get(bytes([1])) is None
    assert cache.get(bytes([0])) == 0
    assert cache.stats.evictions == 1


def test_lru_keeps_recency_order_across_many_reads(clock: FakeClock) -> None:
    cache: MemoryCache[int] = MemoryCache(1000, clock, policy="lru")
    for i in range(10):
        cache.set(i, i, size=100)
    for i in (3, 1, 4, 1, 5, 9, 2, 6):
        cache.get(i)
    for i in range(10, 15):  # five newcomers push out the five least recent
        cache.set(i, i, size=100)
    # Coldest first: 0, 7, 8 (never read), then 3 and 4; the second read of 1 saved it.
    assert sorted(k for k in range(10) if k in cache) == [1, 2, 5, 6, 9]


def test_unknown_policy_is_refused() -> None:
    with pytest.raises(ValueError, match="policy"):
        MemoryCache(100, policy="fifo")  # type: ignore[arg-type]


@pytest.mark.parametrize("policy", ["tinylfu", "lru"])
def test_value_over_the_entry_share_is_rejected(clock: FakeClock, policy: str) -> None:
    cache: MemoryCache[str] = MemoryCache(100, clock, policy=policy)  # type: ignore[arg-type]
    assert not cache.set(b"big", "x", size=26, ttl=60)
    assert cache.set(b"ok", "x", size=25, ttl=60)
    assert cache.stats.rejections == 1
    assert len(cache) == 1


def test_entry_share_is_configurable(clock: FakeClock) -> None:
    cache: MemoryCache[str] = MemoryCache(100, clock, max_entry_share=0.5)
    assert cache.set(b"half", "x", size=50)
    assert not cache.set(b"more", "x", size=51)


def test_refused_write_drops_the_old_value(clock: FakeClock) -> None:
    cache: MemoryCache[str] = MemoryCache(100, clock)
    cache.set(b"k", "old", size=10, ttl=60)
    assert not cache.set(b"k", "new", size=10, ttl=0)
    assert cache.get(b"k") is None
    assert cache.bytes_used == 0
    assert cache.stats.rejections == 1


def test_overwrite_and_delete_keep_byte_count_exact(clock: FakeClock) -> None:
    cache: MemoryCache[str] = MemoryCache(100, clock)
    cache.set(b"k", "one", size=10, ttl=60)
    cache.set(b"k", "two", size=20, ttl=60)
    assert cache.bytes_used == 20
    assert cache.get(b"k") == "two"
    assert cache.delete(b"k")
    assert not cache.delete(b"k")
    assert cache.bytes_used == 0
    assert "entries=0" in repr(cache)


@pytest.mark.parametrize("policy", ["tinylfu", "lru"])
def test_eviction_keeps_bytes_within_budget(clock: FakeClock, policy: str) -> None:
    cache: MemoryCache[int] = MemoryCache(1000, clock, policy=policy)  # type: ignore[arg-type]
    for i in range(200):
        cache.set(i, i, size=10 + i % 90)
        cache.get(i // 2)
    assert cache.bytes_used <= 1000
    assert cache.bytes_used == sum(10 + i % 90 for i in range(200) if cache.get_entry(i))
    assert cache.stats.evictions > 0


def test_size_defaults_to_deep_size_plus_overhead(clock: FakeClock) -> None:
    cache: MemoryCache[dict[str, list[float]]] = MemoryCache(1 << 20, clock)
    value = {"scores": [0.5, 1.5, 2.5]}
    cache.set("key", value)
    assert cache.bytes_used == deep_sizeof(value) + deep_sizeof("key") + ENTRY_OVERHEAD


def test_stale_window_serves_entries_past_their_ttl(clock: FakeClock) -> None:
    cache: MemoryCache[str] = MemoryCache(1000, clock)
    cache.set("k", "v", size=10, ttl=10, stale=5, tags=("t",))
    entry = cache.get_entry("k")
    assert isinstance(entry, CachedItem)
    assert (entry.value, entry.expires_at, entry.stale_until, entry.tags) == ("v", 10, 15, ("t",))
    assert entry.fresh(clock.now())
    clock.advance(12)
    assert cache.get("k") is None  # get serves fresh values only
    assert "k" not in cache
    stale = cache.get_entry("k")
    assert stale is not None
    assert not stale.fresh(cache.now())
    assert stale.usable(cache.now())
    assert cache.bytes_used == 10  # still held for stale-while-revalidate
    clock.advance(3)
    assert cache.get_entry("k") is None
    assert cache.bytes_used == 0
    assert cache.stats.stale_hits == 1
    assert cache.stats.expirations == 1


def test_default_ttl_never_expires(clock: FakeClock) -> None:
    cache: MemoryCache[str] = MemoryCache(1000, clock)
    cache.set("k", "v", size=10)
    clock.advance(1e9)
    assert cache.get("k") == "v"
    entry = cache.get_entry("k")
    assert entry is not None
    assert entry.expires_at == math.inf


def test_expired_entries_at_the_cold_end_go_first(clock: FakeClock) -> None:
    cache: MemoryCache[int] = MemoryCache(1000, clock)
    for i in range(9):
        cache.set(i, i, size=100, ttl=5 if i < 3 else 100)
    clock.advance(10)
    for i in range(9, 12):
        cache.set(i, i, size=100)
    assert cache.bytes_used <= 1000
    assert cache.stats.expirations >= 2
    assert all(cache.get(i) == i for i in range(3, 12) if i in cache)


def test_delete_tags_removes_every_tagged_entry(clock: FakeClock) -> None:
    cache: MemoryCache[str] = MemoryCache(1000, clock)
    cache.set("a", "A", size=10, tags=("model:x", "user:1"))
    cache.set("b", "B", size=10, tags=("model:x",))
    cache.set("c", "C", size=10, tags=("user:2",))
    cache.set("d", "D", size=10)
    assert cache.delete_tags(["model:x", "user:1"]) == 2
    assert ("a" in cache, "b" in cache, "c" in cache, "d" in cache) == (False, False, True, True)
    assert cache.delete_tags(["model:x"]) == 0
    assert cache.bytes_used == 20


def test_overwrite_replaces_tags(clock: FakeClock) -> None:
    cache: MemoryCache[str] = MemoryCache(1000, clock)
    cache.set("a", "A", size=10, tags=("old",))
    cache.set("a", "A2", size=10, tags=("new",))
    assert cache.delete_tags(["old"]) == 0
    assert cache.delete_tags(["new"]) == 1


def test_clear_empties_and_forgets_buffered_reads(clock: FakeClock) -> None:
    cache: MemoryCache[str] = MemoryCache(1000, clock)
    cache.set("a", "A", size=10, tags=("t",))
    cache.get("a")
    cache.clear()
    assert (len(cache), cache.bytes_used) == (0, 0)
    assert cache.delete_tags(["t"]) == 0
    cache.set("b", "B", size=10)  # drains the buffer: must skip the cleared node
    assert cache.get("b") == "B"


def test_summary_reports_counts_and_bytes(clock: FakeClock) -> None:
    cache: MemoryCache[str] = MemoryCache(100, clock)
    cache.set("a", "A", size=10)
    cache.get("a")
    cache.get("b")
    cache.set("big", "B", size=90)
    summary = cache.summary()
    assert summary["entries"] == 1
    assert summary["bytes"] == 10
    assert summary["max_bytes"] == 100
    assert (summary["hits"], summary["misses"], summary["rejections"]) == (1, 1, 1)
    assert summary["hit_ratio"] == 0.5
    assert cache.clock is clock
