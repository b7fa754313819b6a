"""What the tool door costs a call, beside a bare function and the hand-built stack.

    python benchmarks/bench_tool_overhead.py [--calls 200000] [--rounds 5]

Each way awaits one trivial async tool ``calls`` times in a row on one event
loop, ``rounds`` times interleaved; printed is the median CPU per call:

* ``bare``: the function itself;
* ``@tool()``: no option (only its metrics);
* ``@tool(concurrency=64)``: a slot taken and given back per call;
* ``@tool(rpm=..., concurrency=64)``: the GCRA pace too (a rate no call waits for);
* ``semaphore + aiolimiter``: the hand-built equivalent of the last one, unmeasured.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable

from aiolimiter import AsyncLimiter

from overdrive.tools import tool

Call = Callable[[int], Awaitable[int]]
_NEVER_WAITS_RPM = 10**9


async def bare(x: int) -> int:
    return x


def ways() -> dict[str, Call]:
    semaphore = asyncio.Semaphore(64)
    limiter = AsyncLimiter(_NEVER_WAITS_RPM, 60)

    async def hand_built(x: int) -> int:
        async with semaphore, limiter:
            return await bare(x)

    return {
        "bare": bare,
        "@tool()": tool("plain")(bare),
        "@tool(concurrency=64)": tool("bounded", concurrency=64)(bare),
        "@tool(rpm, concurrency=64)": tool("paced", rpm=_NEVER_WAITS_RPM, concurrency=64)(bare),
        "semaphore + aiolimiter": hand_built,
    }


async def cpu_per_call(call: Call, calls: int) -> float:
    started = time.process_time()
    for i in range(calls):
        await call(i)
    return (time.process_time() - started) / calls


async def measure(calls: int, rounds: int) -> dict[str, float]:
    contenders = ways()
    samples: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, call in contenders.items():
            samples[name].append(await cpu_per_call(call, calls))
    return {name: statistics.median(values) for name, values in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    medians = asyncio.run(measure(args.calls, args.rounds))
    base = medians["bare"]
    print(f"median CPU per call over {args.rounds} rounds of {args.calls:,} calls")
    for name, seconds in medians.items():
        print(f"  {name:<28} {seconds * 1e6:8.2f} µs   +{(seconds - base) * 1e6:7.2f} µs")


if __name__ == "__main__":
    main()
