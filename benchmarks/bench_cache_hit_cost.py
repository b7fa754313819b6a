"""Cost of one cache hit through each library's decorator, in the same run.

    python benchmarks/bench_cache_hit_cost.py [--calls 20000] [--rounds 5]

Sync: functools.lru_cache, cachetools ``cached(TTLCache)``, overdrive ``cached``.
Async: aiocache memory, cashews memory, overdrive ``cached`` on an async function.
Each figure is the median over rounds of the mean time per hit on a warm key.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import statistics
import time
import warnings
from collections.abc import Awaitable, Callable

import cachetools

from overdrive.doors import cached


def sync_contenders() -> dict[str, Callable[[int], int]]:
    def compute(x: int) -> int:
        return x * 2

    return {
        "functools.lru_cache": functools.lru_cache(maxsize=1024)(compute),
        "cachetools cached(TTLCache)": cachetools.cached(cachetools.TTLCache(1024, 3600))(compute),
        "overdrive cached (sync)": cached(ttl=3600)(compute),
    }


def async_contenders() -> dict[str, Callable[[int], Awaitable[int]]]:
    async def compute(x: int) -> int:
        return x * 2

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import aiocache
        from cashews import cache as cashews_cache

    cashews_cache.setup("mem://")
    return {
        "aiocache cached (memory)": aiocache.cached(ttl=3600)(compute),
        "cashews cache (mem://)": cashews_cache(ttl="1h")(compute),
        "overdrive cached (async)": cached(ttl=3600)(compute),
    }


def time_sync(fn: Callable[[int], int], calls: int) -> float:
    fn(7)
    started = time.perf_counter()
    for _ in range(calls):
        fn(7)
    return (time.perf_counter() - started) / calls


async def time_async(fn: Callable[[int], Awaitable[int]], calls: int) -> float:
    await fn(7)
    started = time.perf_counter()
    for _ in range(calls):
        await fn(7)
    return (time.perf_counter() - started) / calls


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    results: dict[str, float] = {}
    for name, fn in sync_contenders().items():
        results[name] = statistics.median(time_sync(fn, args.calls) for _ in range(args.rounds))

    async def run_async() -> None:
        for name, afn in async_contenders().items():
            rounds = [await time_async(afn, args.calls // 4) for _ in range(args.rounds)]
            results[name] = statistics.median(rounds)

    asyncio.run(run_async())
    report(results)


def report(results: dict[str, float]) -> None:
    ours_sync = results["overdrive cached (sync)"]
    ours_async = results["overdrive cached (async)"]
    print(f"{'decorator':<30} {'us/hit':>8}  ratio to overdrive")
    for name, seconds in results.items():
        ours = (
            ours_async if "async" in name or "aiocache" in name or "cashews" in name else ours_sync
        )
        print(f"{name:<30} {seconds * 1e6:>8.2f}  {seconds / ours:>6.1f}x")


if __name__ == "__main__":
    main()
