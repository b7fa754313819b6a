"""Coalescing leases on a real Redis Cluster: the notice crosses masters to wake a waiter."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import cast

import pytest
from redis.asyncio.cluster import RedisCluster

from overdrive.coalesce._lease import RedisLease
from tests.redis_server import RedisCluster as Cluster

from .util import masters_of

RESULT = b"result"


@pytest.fixture
async def leases(redis_cluster: Cluster) -> AsyncIterator[list[RedisLease]]:
    """Two independent leases, as two processes hold them: own clients, own pub/sub."""
    pair = [RedisLease(redis_cluster.url, lease_ttl=30, timeout=2.0) for _ in range(2)]
    yield pair
    for lease in pair:
        await lease.aclose()


async def cross_node_key(raw: RedisCluster) -> bytes:
    """A key whose lease and notice channel hash to different masters.

    The waiter subscribes on the channel's master; the leader's PUBLISH runs
    on the lease's: only the cluster forwarding the notice can wake it.
    """
    for index in range(100):
        key = b"cold-%d" % index
        lease_master = await masters_of(raw, [b"od::lease:" + key])
        if lease_master != await masters_of(raw, [b"od::done:" + key]):
            return key
    raise AssertionError("no key in 100 spans two masters")


class Store:
    """The shared result, kept in the cluster as a cache tier would, counting computes."""

    def __init__(self, raw: RedisCluster) -> None:
        self.raw = raw
        self.computes = 0
        self.reads = 0
        self.started = asyncio.Event()
        self.read_twice = asyncio.Event()

    def compute(self, gate: asyncio.Event | None = None) -> Callable[[], Awaitable[bytes]]:
        async def compute() -> bytes:
            self.computes += 1
            self.started.set()
            if gate is not None:
                await gate.wait()
            await self.raw.set(RESULT, b"answer")
            return b"answer"

        return compute

    async def read(self) -> bytes | None:
        value = cast("bytes | None", await self.raw.get(RESULT))
        self.reads += 1
        if self.reads >= 2:
            self.read_twice.set()
        return value


async def test_a_waiter_is_woken_through_pubsub_across_masters(
    leases: list[RedisLease], raw: RedisCluster
) -> None:
    key = await cross_node_key(raw)
    leader, follower = leases
    store = Store(raw)
    gate = asyncio.Event()
    leading = asyncio.create_task(leader.run(key, store.compute(gate), store.read))
    await store.started.wait()
    following = asyncio.create_task(follower.run(key, store.compute(), store.read))
    await store.read_twice.wait()  # the leader's re-check, then the follower found no value
    assert await raw.exists(b"od::lease:" + key) == 1
    gate.set()
    # lease_ttl is 30 s: done within 5 s, the wake-up came from the notice.
    async with asyncio.timeout(5):
        assert list(await asyncio.gather(leading, following)) == [b"answer", b"answer"]
    assert store.computes == 1
    assert (leader.leads, follower.reads, follower.leads, follower.fallbacks) == (1, 1, 0, 0)
    assert await raw.exists(b"od::lease:" + key) == 0  # released by the finishing script


class Counter:
    """Counts events and lets a test await a count: no polling."""

    def __init__(self) -> None:
        self.count = 0
        self._changed = asyncio.Condition()

    async def add(self) -> None:
        async with self._changed:
            self.count += 1
            self._changed.notify_all()

    async def reach(self, count: int) -> None:
        async with self._changed:
            await self._changed.wait_for(lambda: self.count >= count)


async def test_many_keys_waited_on_at_once_across_masters(
    leases: list[RedisLease], raw: RedisCluster
) -> None:
    leader, follower = leases
    keys = [b"many-%d" % index for index in range(12)]
    assert len(await masters_of(raw, [b"od::lease:" + key for key in keys])) == 3
    gate = asyncio.Event()
    computing, missed = Counter(), Counter()

    async def compute(key: bytes) -> bytes:
        await computing.add()
        await gate.wait()
        await raw.set(b"value:" + key, key)
        return key

    async def read(key: bytes, miss: Counter | None = None) -> bytes | None:
        value = cast("bytes | None", await raw.get(b"value:" + key))
        if value is None and miss is not None:
            await miss.add()  # subscribed already: a notice from now on wakes it
        return value

    async def lead(key: bytes) -> bytes:
        return await leader.run(key, lambda: compute(key), lambda: read(key))

    async def follow(key: bytes) -> bytes:
        return await follower.run(key, lambda: compute(key), lambda: read(key, missed))

    async with asyncio.timeout(5):
        leading = [asyncio.create_task(lead(key)) for key in keys]
        await computing.reach(len(keys))  # every lease is held
        following = [asyncio.create_task(follow(key)) for key in keys]
        await missed.reach(len(keys))
        assert f"channels={len(keys)}, waiting={len(keys)}" in repr(follower)
        gate.set()
        assert await asyncio.gather(*following) == keys
        assert await asyncio.gather(*leading) == keys
    assert computing.count == len(keys)  # once each, all by the leader
    assert (follower.reads, follower.leads, follower.fallbacks) == (len(keys), 0, 0)
