"""The L2 cache tier on a real Redis Cluster: entries spread over the masters, tags stay atomic."""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import AsyncIterator

import pytest
from redis.asyncio.cluster import RedisCluster

from overdrive.cache._redis import RedisTier
from overdrive.cache._tier import Entry
from overdrive.testing import FakeClock
from tests.cache.conftest import FakeWall
from tests.redis_server import RedisCluster as Cluster

from .util import keys_per_master, masters_of, slot_of

KEYS = [b"key-%d" % index for index in range(40)]


def entry(wall: FakeWall, value: bytes, tags: tuple[str, ...] = ()) -> Entry:
    return Entry(value, expires_at=wall() + 10, stale_until=wall() + 20, tags=tags)


@pytest.fixture
async def tier(
    redis_cluster: Cluster, raw: RedisCluster, wall: FakeWall
) -> AsyncIterator[RedisTier]:
    tier = RedisTier(redis_cluster.url, namespace="t", wall=wall, clock=FakeClock(), timeout=2.0)
    yield tier
    await tier.aclose()


async def test_entries_spread_over_every_master_and_read_back(
    tier: RedisTier, wall: FakeWall, raw: RedisCluster
) -> None:
    for key in KEYS:
        await tier.set(key, entry(wall, b"value of " + key))
    assert [(await tier.get(key)) for key in KEYS] == [
        entry(wall, b"value of " + key) for key in KEYS
    ]
    per_master = await keys_per_master(raw)
    assert sum(per_master.values()) == len(KEYS)
    assert all(count > 0 for count in per_master.values()), per_master  # not one slot
    assert await tier.delete(KEYS[0])
    assert not await tier.delete(KEYS[0])
    assert await tier.get(KEYS[0]) is None
    assert tier.errors == 0


async def test_an_entry_and_its_tag_sets_share_a_slot(
    tier: RedisTier, wall: FakeWall, raw: RedisCluster
) -> None:
    await tier.set(b"k", entry(wall, b"v", tags=("user:1", "doc:9")))
    stored = sorted(await raw.keys(target_nodes=RedisCluster.PRIMARIES))
    assert len(stored) == 3  # the entry and one set per tag
    assert len({await slot_of(raw, key) for key in stored}) == 1


async def test_delete_tags_reaches_entries_on_every_master(
    tier: RedisTier, wall: FakeWall, raw: RedisCluster
) -> None:
    tagged, spared = KEYS[:30], KEYS[30:]
    for key in tagged:
        await tier.set(key, entry(wall, b"v", tags=("user:1",)))
    for key in spared:
        await tier.set(key, entry(wall, b"v", tags=("user:2",)))
    stored = await raw.keys(target_nodes=RedisCluster.PRIMARIES)
    assert len(await masters_of(raw, stored)) == 3
    assert await tier.delete_tags(["user:1", "absent"]) == len(tagged)
    assert [await tier.get(key) for key in tagged] == [None] * len(tagged)
    assert all([await tier.get(key) is not None for key in spared])
    assert await tier.delete_tags(["user:1"]) == 0  # its sets went with their entries
    assert tier.errors == 0


async def test_clear_empties_the_namespace_on_every_master_and_nothing_else(
    redis_cluster: Cluster, tier: RedisTier, wall: FakeWall, raw: RedisCluster
) -> None:
    other = RedisTier(redis_cluster.url, namespace="other", wall=wall, timeout=2.0)
    try:
        for key in KEYS:
            await tier.set(key, entry(wall, b"v", tags=("x",)))
        await other.set(b"a", entry(wall, b"kept"))
        await raw.set(b"od:t:lease:x", b"token")
        await tier.clear()
        left = sorted(await raw.keys(target_nodes=RedisCluster.PRIMARIES))
        assert len(left) == 2
        assert left[0] == b"od:other:k:{other.%d}:a" % (zlib.crc32(b"a") % 64)
        assert left[1] == b"od:t:lease:x"
    finally:
        await other.aclose()


async def test_a_burst_wider_than_the_connections_waits_its_turn(
    tier: RedisTier, wall: FakeWall
) -> None:
    # 300 calls at once, more than the 65 connections a node may have: without
    # the breaker's gate the cluster client refuses the excess outright.
    await tier.set(b"hot", entry(wall, b"v"))
    found = await asyncio.gather(*(tier.get(b"hot") for _ in range(300)))
    assert all(got is not None for got in found)
    assert (tier.errors, tier.breaker.state) == (0, "closed")
