from __future__ import annotations

import asyncio

import pytest

from overdrive.coalesce import Coalescer


async def test_concurrent_identical_calls_run_once() -> None:
    flight: Coalescer[int] = Coalescer()
    runs = 0
    gate = asyncio.Event()

    async def work() -> int:
        nonlocal runs
        runs += 1
        await gate.wait()
        return 7

    tasks = [asyncio.create_task(flight.run("k", work)) for _ in range(20)]
    await asyncio.sleep(0)
    gate.set()
    results = await asyncio.gather(*tasks)
    assert runs == 1
    assert [value for value, _ in results] == [7] * 20
    assert sum(joined for _, joined in results) == 19
    assert len(flight) == 0


async def test_errors_reach_every_waiter_and_key_is_freed() -> None:
    flight: Coalescer[int] = Coalescer()

    async def boom() -> int:
        await asyncio.sleep(0)
        raise RuntimeError("upstream down")

    results = await asyncio.gather(
        *(flight.run("k", boom) for _ in range(3)), return_exceptions=True
    )
    assert all(isinstance(r, RuntimeError) for r in results)

    async def fine() -> int:
        return 1

    assert await flight.run("k", fine) == (1, False)


async def test_cancelled_leader_does_not_cancel_followers() -> None:
    flight: Coalescer[str] = Coalescer()
    gate = asyncio.Event()

    async def work() -> str:
        await gate.wait()
        return "done"

    leader = asyncio.create_task(flight.run("k", work))
    await asyncio.sleep(0)
    follower = asyncio.create_task(flight.run("k", work))
    await asyncio.sleep(0)
    leader.cancel()
    gate.set()
    assert await follower == ("done", True)
    with pytest.raises(asyncio.CancelledError):
        await leader


async def test_work_is_cancelled_when_every_caller_left() -> None:
    flight: Coalescer[int] = Coalescer()
    started = asyncio.Event()
    cancelled = asyncio.Event()

    async def work() -> int:
        started.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return 1

    callers = [asyncio.create_task(flight.run("k", work)) for _ in range(3)]
    await started.wait()
    for caller in callers[:2]:
        caller.cancel()
    await asyncio.sleep(0)
    assert not cancelled.is_set()  # one caller still wants it
    callers[2].cancel()
    await asyncio.wait_for(cancelled.wait(), 1.0)
    assert len(flight) == 0


async def test_a_key_every_caller_left_is_free_for_the_next_caller_at_once() -> None:
    flight: Coalescer[int] = Coalescer()

    async def stuck() -> int:
        await asyncio.Event().wait()  # never set: only a cancellation ends it
        return 0

    async def fresh() -> int:
        return 2

    caller = asyncio.create_task(flight.run("k", stuck))
    await asyncio.sleep(0)
    await asyncio.sleep(0)  # the shared work is under way
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    # The abandoned work may not have wound down yet; a new caller must not join it.
    assert len(flight) == 0
    assert await flight.run("k", fresh) == (2, False)
