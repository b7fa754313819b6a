"""The optimizer on an engine whose tool calls queue: more concurrency, within its bounds."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from overdrive import Overdrive
from overdrive.optimize._loop import Optimizer
from overdrive.testing import FakeClock

WINDOW = 10.0
KNOB = "tool.search.concurrency"
# Never called: the workload only calls the tool.
CONFIG = {"upstreams": [{"name": "a", "base_url": "http://127.0.0.1:9/v1", "models": ["m"]}]}


@contextlib.asynccontextmanager
async def tool_bound_agents(clock: FakeClock, agents: int) -> AsyncIterator[Overdrive]:
    """An engine whose ``search`` tool (1 s a call, 2 at once, at most 32) ``agents`` keep busy."""
    async with Overdrive.from_config(CONFIG, clock=clock) as od:

        @od.tool("search", concurrency=2, max_concurrency=32)
        async def search(query: str) -> str:
            await clock.sleep(1.0)
            return query

        async def agent(n: int) -> None:
            for turn in range(10_000):
                await search(f"{n}-{turn}")

        workers = [asyncio.ensure_future(agent(n)) for n in range(agents)]
        try:
            yield od
        finally:
            for worker in workers:
                worker.cancel()
            await asyncio.gather(*workers, return_exceptions=True)


async def run_windows(clock: FakeClock, optimizer: Optimizer, windows: int) -> list[float]:
    """Step the optimizer once a window; the tool's concurrency after each step."""
    seen = []
    for _ in range(windows):
        await clock.run_for(WINDOW, step=0.05)
        await optimizer.step()
        seen.append(optimizer.tunables[KNOB].value)
    return seen


async def test_queued_tool_calls_get_more_concurrency_never_past_its_max(clock: FakeClock) -> None:
    async with tool_bound_agents(clock, agents=48) as od:
        knob = od.tunables[KNOB]
        assert (knob.value, knob.low, knob.high) == (2, 1, 32)
        optimizer = Optimizer(od, clock=clock, window=WINDOW)
        seen = await run_windows(clock, optimizer, 8)
    assert seen[:4] == [4, 8, 16, 32]  # doubled while the calls queued and throughput rose
    assert max(seen) == 32  # the bound: 2x of 32 is asked for, 32 is kept
    tried = [(d.old, d.new, d.outcome) for d in optimizer.decisions]
    assert tried[:3] == [(2, 4, "kept"), (4, 8, "kept"), (8, 16, "kept")]
    assert {d.finding for d in optimizer.decisions} == {"tool_concurrency"}


async def test_a_tool_that_does_not_queue_is_left_alone(clock: FakeClock) -> None:
    async with tool_bound_agents(clock, agents=2) as od:  # two agents, two slots: no wait
        optimizer = Optimizer(od, clock=clock, window=WINDOW)
        seen = await run_windows(clock, optimizer, 3)
    assert seen == [2, 2, 2]
    assert optimizer.decisions == []
