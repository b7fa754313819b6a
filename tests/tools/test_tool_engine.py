"""Tools on an engine: limits shared through a real Redis, knobs in ``od.tunables``, other loops."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable

from overdrive import Overdrive
from overdrive.monitor.names import TOOL_CALLS
from overdrive.testing import FakeClock
from overdrive.tools import runner_of, tool
from tests.redis_server import RedisServer

UPSTREAM = {"name": "a", "base_url": "http://127.0.0.1:1/v1", "models": ["m"]}


def engine_on(clock: FakeClock | None = None, **config: object) -> Overdrive:
    return Overdrive.from_config({"upstreams": [UPSTREAM], **config}, clock=clock)


async def test_two_engines_on_one_redis_share_a_tools_rate(redis_server: RedisServer) -> None:
    engines = [engine_on(redis_url=redis_server.url) for _ in range(2)]
    apart = engine_on(
        redis_url=redis_server.url, tools=[{"name": "search", "shared_limits": False}]
    )

    def search_in(od: Overdrive) -> Callable[[], Awaitable[None]]:
        @od.tool("search", rpm=1)
        async def search() -> None: ...

        return search

    try:
        first, second, own = (search_in(od) for od in (*engines, apart))
        await first()  # takes the one shared slot of this minute
        # Redis keeps the time (its TIME), so ask the other engine's limiter what it would wait.
        queue = runner_of(second).queue
        assert queue is not None
        # About 60 s; far above any time the calls between could take on a slow machine.
        assert await queue.limiter.try_acquire(1, 0) > 30.0
        await own()  # shared_limits = false: a limit of its own, nothing to wait for
        own_queue = runner_of(own).queue
        assert own_queue is not None
        assert own_queue.limiter.spec.rpm == 1
        assert type(own_queue.limiter).__name__ == "LocalLimiter"
    finally:
        for od in (*engines, apart):
            await od.aclose()


async def test_a_tools_knobs_join_the_engines_tunables_within_bounds() -> None:
    od = engine_on(FakeClock())
    try:

        @od.tool("fetch", concurrency=2, max_concurrency=8, rpm=120)
        async def fetch() -> None: ...

        knob = od.tunables["tool.fetch.concurrency"]
        assert (knob.low, knob.high, knob.value) == (1, 8, 2.0)
        await od.tunables.set("tool.fetch.concurrency", 6)
        limit = runner_of(fetch).limit
        assert limit is not None
        assert limit.limit == 6
        rate = od.tunables["tool.fetch.rpm"]
        assert (rate.high, rate.value) == (120, 120.0)  # never above the rate given
    finally:
        await od.aclose()


def test_a_tool_called_from_another_loop_runs_there_while_its_limits_stay_home() -> None:
    od = engine_on()
    home = asyncio.new_event_loop()
    thread = threading.Thread(target=home.run_forever, daemon=True)
    thread.start()
    ran_on: list[asyncio.AbstractEventLoop] = []

    @od.tool("where", concurrency=1)
    async def where() -> None:
        ran_on.append(asyncio.get_running_loop())

    try:
        asyncio.run_coroutine_threadsafe(where(), home).result(5)  # home is now that loop

        async def elsewhere() -> asyncio.AbstractEventLoop:
            await asyncio.gather(where(), where())
            return asyncio.get_running_loop()

        caller = asyncio.run(elsewhere())
        assert ran_on[0] is home
        assert ran_on[1:] == [caller, caller]  # the coroutine ran on its caller's loop
        assert od.metrics.value(TOOL_CALLS, tool="where", outcome="ok") == 3
    finally:
        asyncio.run_coroutine_threadsafe(od.aclose(), home).result(5)
        home.call_soon_threadsafe(home.stop)
        thread.join(5)
        home.close()


def test_a_standalone_paced_tool_survives_one_asyncio_run_after_another() -> None:
    @tool("again", rpm=6000, concurrency=2)
    async def again(x: int) -> int:
        return x

    async def burst() -> list[int]:
        return list(await asyncio.gather(*(again(i) for i in range(4))))

    assert asyncio.run(burst()) == [0, 1, 2, 3]
    assert asyncio.run(burst()) == [0, 1, 2, 3]  # a new loop: the old one's waiters forgotten


async def test_stats_show_each_tools_calls_running_and_waiting() -> None:
    clock = FakeClock()
    od = engine_on(clock)
    gate = asyncio.Event()
    try:

        @od.tool("slow", concurrency=2, rpm=6000)
        async def slow() -> None:
            await gate.wait()

        calls = [asyncio.ensure_future(slow()) for _ in range(3)]
        for _ in range(3):  # each admission is a GCRA slot 10 ms after the last
            await asyncio.sleep(0)
            clock.advance(0.01)
            await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert od.stats()["tools"]["slow"] == {"waiting": 1, "in_flight": 2, "concurrency": 2}
        gate.set()
        await asyncio.gather(*calls)
        assert od.stats()["tools"]["slow"] == {"waiting": 0, "in_flight": 0, "concurrency": 2}
    finally:
        await od.aclose()
