"""A child process for the shared-limit test: ``python -m tests.flow.limiter_child URL NAME ...``.

Arguments after the name: rpm, burst (seconds), run time (seconds). The child
warms its limiter up (a zero-cost call loads the script and books nothing),
prints ``ready``, then takes the start moment (wall clock) from the parent's
``go`` list in Redis, so every child runs the same window. It acquires greedily
until the window closes, sleeping exactly the wait it is told, and prints how
many grants it got and how many Redis errors its limiter saw.
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import cast

from redis.asyncio import Redis

from overdrive.flow import LimitSpec, RedisLimiter


async def run(url: str, name: str, rpm: int, burst: float, seconds: float) -> str:
    limiter = RedisLimiter(LimitSpec(rpm=rpm, tpm=None, burst=burst), name=name, url=url)
    raw = Redis.from_url(url)
    assert await limiter.try_acquire(0, 0) == 0.0
    print("ready", flush=True)
    reply = cast("list[bytes]", await raw.blpop(["go"], timeout=10))
    start = float(reply[1])
    await asyncio.sleep(start - time.time())
    grants = await acquire_until(limiter, start + seconds)
    await limiter.aclose()
    await raw.aclose()
    return f"{grants} {limiter.errors}"


async def acquire_until(limiter: RedisLimiter, end: float) -> int:
    grants = 0
    while (now := time.time()) < end:
        wait = await limiter.try_acquire(1, 0)
        if wait == 0.0:
            grants += 1
        else:
            await asyncio.sleep(min(wait, end - now))
    return grants


if __name__ == "__main__":
    url, name, rpm, burst, seconds = sys.argv[1:]
    print(asyncio.run(run(url, name, int(rpm), float(burst), float(seconds))))
