from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import cast

import pytest
from redis.asyncio import Redis
from redis.exceptions import RedisError

from overdrive.coalesce._lease import RedisLease
from overdrive.testing import FakeClock
from tests.redis_server import RedisServer

REPO = Path(__file__).resolve().parents[2]
KEY = b"cold"


@pytest.fixture
async def raw(redis_server: RedisServer) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_server.url)
    yield client
    await client.aclose()


@pytest.fixture
async def leases(redis_server: RedisServer) -> AsyncIterator[list[RedisLease]]:
    """Two independent leases: as two processes would hold them (own pools, own pub/sub)."""
    pair = [RedisLease(redis_server.url, lease_ttl=30, timeout=2.0) for _ in range(2)]
    yield pair
    for lease in pair:
        await lease.aclose()


class Shared:
    """A result store in Redis, as a cache tier would provide, that counts computes and reads."""

    def __init__(self, raw: Redis) -> None:
        self.raw = raw
        self.computes = 0
        self.reads = 0
        self.started = asyncio.Event()
        self._read_done = asyncio.Condition()

    def compute(
        self, gate: asyncio.Event | None = None, fail: bool = False
    ) -> Callable[[], Awaitable[bytes]]:
        async def compute() -> bytes:
            self.computes += 1
            self.started.set()
            if gate is not None:
                await gate.wait()
            if fail:
                raise RuntimeError("upstream broke")
            await self.raw.set(b"result", b"answer")
            return b"answer"

        return compute

    async def read(self) -> bytes | None:
        value = cast("bytes | None", await self.raw.get(b"result"))
        async with self._read_done:
            self.reads += 1
            self._read_done.notify_all()
        return value

    async def reads_done(self, count: int) -> None:
        """Until ``count`` reads have returned (each run reads before it waits)."""
        async with self._read_done:
            await self._read_done.wait_for(lambda: self.reads >= count)


async def test_waiter_is_woken_by_the_leaders_notice(leases: list[RedisLease], raw: Redis) -> None:
    leader, follower = leases
    shared = Shared(raw)
    gate = asyncio.Event()
    leading = asyncio.create_task(leader.run(KEY, shared.compute(gate), shared.read))
    await shared.started.wait()
    following = asyncio.create_task(follower.run(KEY, shared.compute(), shared.read))
    await shared.reads_done(2)  # the follower found the lease taken and no value yet
    gate.set()
    # lease_ttl is 30 s: finishing well inside 5 s proves the wake-up came from the notice.
    async with asyncio.timeout(5):
        assert list(await asyncio.gather(leading, following)) == [b"answer", b"answer"]
    assert shared.computes == 1
    assert (leader.leads, follower.reads, follower.leads) == (1, 1, 0)
    assert await raw.exists(b"od::lease:" + KEY) == 0


async def test_waiters_in_one_process_share_the_subscription(
    redis_server: RedisServer, raw: Redis
) -> None:
    lease = RedisLease(redis_server.url, namespace="t", timeout=2.0)
    shared = Shared(raw)
    gate = asyncio.Event()
    try:
        runs = [lease.run(KEY, shared.compute(gate), shared.read) for _ in range(5)]
        tasks = [asyncio.create_task(run) for run in runs]
        await shared.reads_done(5)  # the leader's re-check and the four waiters' first reads
        assert "channels=1, waiting=5" in repr(lease)
        gate.set()
        async with asyncio.timeout(5):
            assert await asyncio.gather(*tasks) == [b"answer"] * 5
        assert shared.computes == 1
        assert "waiting=0" in repr(lease)
    finally:
        await lease.aclose()


async def test_a_dead_leaders_lease_expires_and_a_waiter_takes_over(
    redis_server: RedisServer, raw: Redis
) -> None:
    await raw.set(b"od::lease:" + KEY, b"crashed-process", px=100)
    lease = RedisLease(redis_server.url, lease_ttl=0.2, timeout=2.0)
    shared = Shared(raw)
    try:
        async with asyncio.timeout(5):
            assert await lease.run(KEY, shared.compute(), shared.read) == b"answer"
        assert (shared.computes, lease.leads) == (1, 1)
    finally:
        await lease.aclose()


async def test_only_our_own_lease_is_released(leases: list[RedisLease], raw: Redis) -> None:
    lease_key = b"od::lease:" + KEY

    async def compute() -> bytes:
        # Our lease expired mid-compute and another process took it over.
        await raw.set(lease_key, b"other-token")
        return b"mine"

    assert await leases[0].run(KEY, compute, Shared(raw).read) == b"mine"
    assert await raw.get(lease_key) == b"other-token"


async def test_failed_compute_wakes_a_waiter_who_takes_over(
    leases: list[RedisLease], raw: Redis
) -> None:
    leader, follower = leases
    shared = Shared(raw)
    gate = asyncio.Event()
    leading = asyncio.create_task(leader.run(KEY, shared.compute(gate, fail=True), shared.read))
    await shared.started.wait()
    following = asyncio.create_task(follower.run(KEY, shared.compute(), shared.read))
    await shared.reads_done(2)
    gate.set()
    with pytest.raises(RuntimeError, match="upstream broke"):
        await leading
    async with asyncio.timeout(5):
        assert await following == b"answer"
    assert (shared.computes, follower.leads) == (2, 1)


async def test_redis_down_computes_locally_and_skips_while_down(
    redis_server: RedisServer,
) -> None:
    redis_server.stop()
    clock = FakeClock()
    lease = RedisLease(redis_server.url, clock=clock)
    calls = 0

    async def compute() -> bytes:
        nonlocal calls
        calls += 1
        return b"local"

    async def read() -> bytes | None:
        return None

    try:
        assert await lease.run(KEY, compute, read) == b"local"
        assert await lease.run(KEY, compute, read) == b"local"
        assert (calls, lease.fallbacks) == (2, 2)
        assert (lease.breaker.errors, lease.breaker.skipped_while_down) == (1, 1)
        redis_server.start()
        clock.advance(1.0)
        assert await lease.run(KEY, compute, read) == b"local"
        assert (lease.leads, lease.fallbacks) == (1, 2)
    finally:
        await lease.aclose()


async def test_redis_dying_mid_wait_falls_back_without_hanging(
    redis_server: RedisServer, leases: list[RedisLease], raw: Redis
) -> None:
    leader, follower = leases
    shared = Shared(raw)
    gate = asyncio.Event()
    leading = asyncio.create_task(leader.run(KEY, shared.compute(gate), shared.read))
    await shared.started.wait()

    async def compute_locally() -> bytes:
        return b"local"

    following = asyncio.create_task(follower.run(KEY, compute_locally, shared.read))
    await shared.reads_done(2)
    redis_server.kill()
    async with asyncio.timeout(5):
        assert await following == b"local"  # the broken pub/sub woke it: no lease_ttl wait
        gate.set()
        with pytest.raises(RedisError):
            await leading  # its compute stores into the dead Redis: the caller's error to handle
    assert follower.fallbacks == 1


_CHILD = """
import asyncio, sys
from redis.asyncio import Redis
from redis.exceptions import RedisError
from overdrive.coalesce._lease import RedisLease

async def main(url):
    client = Redis.from_url(url)
    lease = RedisLease(url, lease_ttl=10)

    async def compute():
        await client.incr(b"computes")
        await asyncio.sleep(0.2)  # long enough that every process arrives while it runs
        await client.set(b"result", b"answer")
        return b"answer"

    async def read():
        return await client.get(b"result")

    print("ready", flush=True)
    await client.blpop([b"go"], timeout=10)
    value = await lease.run(b"cold", compute, read)
    print(value.decode(), lease.leads, lease.reads, lease.fallbacks, flush=True)
    await lease.aclose()
    await client.aclose()

asyncio.run(main(sys.argv[1]))
"""


async def test_four_processes_compute_a_cold_key_exactly_once(
    redis_server: RedisServer, raw: Redis
) -> None:
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _CHILD,
            redis_server.url,
            cwd=REPO,
            stdout=asyncio.subprocess.PIPE,
        )
        for _ in range(4)
    ]
    async with asyncio.timeout(15):
        for proc in procs:  # every process has started and is about to await the signal
            assert proc.stdout is not None
            assert await proc.stdout.readline() == b"ready\n"
        await raw.rpush(b"go", *[b"1"] * 4)
        outputs = [(await proc.communicate())[0].decode().split() for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0, 0, 0]
    assert await raw.get(b"computes") == b"1"
    assert [out[0] for out in outputs] == ["answer"] * 4
    leads, reads, fallbacks = (sum(int(out[i]) for out in outputs) for i in (1, 2, 3))
    assert (leads + reads, fallbacks) == (4, 0)
