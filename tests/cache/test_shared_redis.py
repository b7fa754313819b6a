"""The tiered cache, the decorator and the engine over a real redis-server."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from overdrive import cached
from overdrive.cache import MemoryCache, TieredCache
from overdrive.cache._codec import Codec
from overdrive.cache._redis import RedisTier
from overdrive.sim import SimConfig, SimServer
from overdrive.testing import FakeClock
from tests.redis_server import RedisServer

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
async def raw(redis_server: RedisServer) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_server.url)
    yield client
    await client.aclose()


async def run_children(raw: Redis, *args: str) -> list[str]:
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.cache.shared_child",
            *args,
            cwd=REPO,
            stdout=asyncio.subprocess.PIPE,
        )
        for _ in range(4)
    ]
    async with asyncio.timeout(30):
        for proc in procs:
            assert proc.stdout is not None
            assert await proc.stdout.readline() == b"ready\n"
        await raw.rpush("go", *[b"1"] * 4)
        outputs = [(await proc.communicate())[0].decode().strip() for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0, 0, 0]
    return outputs


async def test_four_processes_one_computation_through_the_decorator(
    redis_server: RedisServer, raw: Redis
) -> None:
    outputs = await run_children(raw, "decorated", redis_server.url)
    assert outputs == ["SHARED QUESTION"] * 4
    assert await raw.get("computes") == b"1"


async def test_four_engine_processes_send_one_upstream_request(
    redis_server: RedisServer, raw: Redis
) -> None:
    with SimServer(SimConfig(ttft_s=0.3, per_token_s=0.0)) as sim:
        outputs = await run_children(raw, "engine", redis_server.url, sim.base_url)
        requests = sim.stats()["requests"].get("/v1/chat/completions")
    assert len(set(outputs)) == 1
    assert requests == 1


def _tiered(url: str, clock: FakeClock) -> TieredCache:
    tier = RedisTier(url, clock=clock, timeout=0.25, backoff=1.0)
    return TieredCache(MemoryCache(1 << 20, clock), [tier], Codec())


async def test_redis_killed_mid_run_fails_open_and_sharing_resumes(
    redis_server: RedisServer,
) -> None:
    clock = FakeClock()
    writer, reader = _tiered(redis_server.url, clock), _tiered(redis_server.url, clock)
    computed: list[int] = []

    @cached(ttl=60, cache=writer)
    async def work(i: int) -> dict[str, Any]:
        computed.append(i)
        return {"i": i}

    assert await work(1) == {"i": 1}
    await writer.flush()
    redis_server.kill()
    results = [await work(i) for i in range(2, 40)]  # Redis is gone: every call still succeeds
    await writer.flush()
    assert results == [{"i": i} for i in range(2, 40)]
    assert writer.errors.get("redis", 0) >= 1
    assert await work(1) == {"i": 1}  # still served from memory

    redis_server.start()  # same port
    clock.advance(1.5)  # past the tier's back-off: it tries Redis again
    assert await work(100) == {"i": 100}
    await writer.flush()
    found = await reader.get(cached_key(work, 100))
    assert found is not None
    assert (found.value, found.source) == ({"i": 100}, "redis")
    await writer.aclose()
    await reader.aclose()


def cached_key(fn: Any, *args: Any) -> bytes:
    key: bytes = fn.cache.key_of(args, {})
    return key
