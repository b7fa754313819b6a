"""A child process for the cross-process tests: ``python -m tests.cache.shared_child MODE URL ...``.

It prints ``ready``, waits for the parent's go signal in Redis, makes one
cached call and prints what it got.
"""

from __future__ import annotations

import asyncio
import sys

from redis.asyncio import Redis

from overdrive import Overdrive, cached
from overdrive._clock import SystemClock
from overdrive.cache._build import build_cache
from overdrive.config import CacheConfig


async def decorated(redis_url: str) -> str:
    raw = Redis.from_url(redis_url)
    cache = build_cache(CacheConfig(redis_url=redis_url), SystemClock())

    @cached(ttl=60, cache=cache)
    async def expensive(question: str) -> str:
        await raw.incr("computes")
        await asyncio.sleep(0.2)  # long enough for every process to arrive while in flight
        return question.upper()

    await go(raw)
    answer = await expensive("shared question")
    await cache.aclose()
    await raw.aclose()
    return answer


async def engine(redis_url: str, upstream_url: str) -> str:
    raw = Redis.from_url(redis_url)
    config = {
        "upstreams": [{"name": "sim", "base_url": upstream_url, "models": ["gpt-4o-mini"]}],
        "cache": {"redis_url": redis_url},
    }
    async with Overdrive.from_config(config) as od:
        await go(raw)
        reply = await od.chat(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    await raw.aclose()
    return str(reply["choices"][0]["message"]["content"]).replace(" ", "_")


async def go(raw: Redis) -> None:
    print("ready", flush=True)
    await raw.blpop(["go"], timeout=10)


if __name__ == "__main__":
    mode, *args = sys.argv[1:]
    print(asyncio.run(decorated(*args) if mode == "decorated" else engine(*args)))
