from __future__ import annotations

import zlib
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from overdrive import CacheError
from overdrive.cache._redis import RedisTier
from overdrive.cache._tier import Entry
from overdrive.testing import FakeClock
from tests.redis_server import RedisServer

from .conftest import FakeWall


def entry(wall: FakeWall, value: bytes = b"v", tags: tuple[str, ...] = ()) -> Entry:
    return Entry(value, expires_at=wall() + 10, stale_until=wall() + 20, tags=tags)


def entry_key(key: bytes, namespace: bytes = b"") -> bytes:
    """The layout, spelled out: the hash tag names the namespace and the key's shard."""
    return b"od:%s:k:{%s.%d}:%s" % (namespace, namespace, zlib.crc32(key) % 64, key)


def tag_key(tag: bytes, key: bytes, namespace: bytes = b"") -> bytes:
    """The set listing the entries of ``key``'s shard that carry ``tag``."""
    return b"od:%s:tag:{%s.%d}:%s" % (namespace, namespace, zlib.crc32(key) % 64, tag)


@pytest.fixture
async def tier(redis_server: RedisServer, wall: FakeWall) -> AsyncIterator[RedisTier]:
    tier = RedisTier(redis_server.url, wall=wall, clock=FakeClock(), timeout=2.0)
    yield tier
    await tier.aclose()


@pytest.fixture
async def raw(redis_server: RedisServer) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_server.url)
    yield client
    await client.aclose()


async def test_set_get_delete(tier: RedisTier, wall: FakeWall, raw: Redis) -> None:
    stored = entry(wall, b"\x00hello", tags=("a", "b\u00e9"))
    await tier.set(b"k", stored)
    assert await tier.get(b"k") == stored
    assert await tier.get(b"missing") is None
    assert await tier.delete(b"k")
    assert not await tier.delete(b"k")
    assert await tier.get(b"k") is None


async def test_redis_expires_entries_at_stale_until(
    tier: RedisTier, wall: FakeWall, raw: Redis
) -> None:
    await tier.set(b"k", entry(wall, tags=("t",)))
    entry_ttl = await raw.pttl(entry_key(b"k"))
    tag_ttl = await raw.pttl(tag_key(b"t", b"k"))
    assert 19_000 < entry_ttl <= 20_000
    assert 19_000 < tag_ttl <= 20_000
    # A longer-lived member stretches the tag set's life; a shorter one never shrinks it.
    long, short = b"k-1", b"k-16"
    assert zlib.crc32(long) % 64 == zlib.crc32(short) % 64  # one shard, one tag set
    await tier.set(long, Entry(b"v", wall() + 50, wall() + 100, ("t",)))
    await tier.set(short, Entry(b"v", wall() + 1, wall() + 2, ("t",)))
    assert await raw.pttl(tag_key(b"t", long)) > 99_000


async def test_our_clock_decides_staleness(tier: RedisTier, wall: FakeWall) -> None:
    await tier.set(b"k", entry(wall))
    wall.advance(15)
    got = await tier.get(b"k")
    assert got is not None
    assert not got.fresh(wall())
    wall.advance(5)
    assert await tier.get(b"k") is None
    await tier.set(b"dead", Entry(b"v", wall() - 2, wall() - 1))  # already unusable: not stored
    assert await tier.get(b"dead") is None


async def test_delete_tags_and_namespaced_clear(
    redis_server: RedisServer, tier: RedisTier, wall: FakeWall, raw: Redis
) -> None:
    other = RedisTier(redis_server.url, namespace="other", wall=wall)
    try:
        await tier.set(b"a", entry(wall, tags=("user:1", "doc:9")))
        await tier.set(b"b", entry(wall, tags=("user:1",)))
        await tier.set(b"c", entry(wall, tags=("user:2",)))
        await other.set(b"a", entry(wall, tags=("user:1",)))
        assert await tier.delete_tags(["user:1", "doc:9"]) == 2
        assert await tier.get(b"c") is not None
        assert await other.get(b"a") is not None
        await raw.set(b"od::lease:x", b"token")
        await tier.clear()
        expected = [b"od::lease:x", entry_key(b"a", b"other"), tag_key(b"user:1", b"a", b"other")]
        assert sorted(await raw.keys()) == sorted(expected)
    finally:
        await other.aclose()


async def test_malformed_entry_is_a_cache_error_not_an_outage(tier: RedisTier, raw: Redis) -> None:
    await raw.set(entry_key(b"bad"), b"\x07nonsense")
    with pytest.raises(CacheError, match="malformed"):
        await tier.get(b"bad")
    assert tier.errors == 0


async def test_namespace_with_separator_is_rejected() -> None:
    with pytest.raises(ValueError, match="':'"):
        RedisTier("redis://127.0.0.1:1/0", namespace="a:b")


async def test_unreachable_redis_fails_fast_then_skips_while_down(
    redis_server: RedisServer,
) -> None:
    clock = FakeClock()
    redis_server.stop()
    tier = RedisTier(redis_server.url, clock=clock, backoff=1.0)
    try:
        with pytest.raises(CacheError, match="ConnectionError"):
            await tier.get(b"k")
        for _ in range(50):
            with pytest.raises(CacheError, match="marked down"):
                await tier.get(b"k")
        assert (tier.errors, tier.skipped_while_down) == (1, 50)
        clock.advance(1.0)
        with pytest.raises(CacheError, match="ConnectionError"):
            await tier.get(b"k")  # tried again after the backoff
        assert tier.errors == 2
    finally:
        await tier.aclose()


async def test_kill_mid_run_then_recover_on_restart(
    redis_server: RedisServer, wall: FakeWall
) -> None:
    clock = FakeClock()
    tier = RedisTier(redis_server.url, wall=wall, clock=clock, backoff=1.0, timeout=2.0)
    try:
        await tier.set(b"k", entry(wall, b"before"))
        redis_server.kill()
        with pytest.raises(CacheError):
            await tier.get(b"k")  # pooled connection is dead: fails, does not hang
        with pytest.raises(CacheError, match="marked down"):
            await tier.set(b"k", entry(wall))
        assert "down=True" in repr(tier)
        redis_server.start()  # same port, empty (no persistence)
        clock.advance(1.0)
        assert await tier.get(b"k") is None
        await tier.set(b"k", entry(wall, b"after"))
        got = await tier.get(b"k")
        assert got is not None
        assert got.value == b"after"
        assert (tier.errors, tier.skipped_while_down) == (1, 1)
    finally:
        await tier.aclose()


async def test_slow_redis_is_bounded_by_timeout(
    redis_server: RedisServer, raw: Redis, wall: FakeWall
) -> None:
    tier = RedisTier(redis_server.url, wall=wall, timeout=0.05, clock=FakeClock())
    try:
        await tier.set(b"k", entry(wall))
        await raw.client_pause(300)  # Redis stops answering clients for 300 ms
        with pytest.raises(CacheError, match="Timeout"):
            await tier.get(b"k")
        assert tier.errors == 1
    finally:
        await tier.aclose()
