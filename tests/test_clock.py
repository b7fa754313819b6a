from __future__ import annotations

import asyncio

from overdrive.testing import FakeClock


async def test_sleepers_wake_in_deadline_order(clock: FakeClock) -> None:
    woke: list[str] = []

    async def sleeper(name: str, seconds: float) -> None:
        await clock.sleep(seconds)
        woke.append(name)

    tasks = [asyncio.create_task(sleeper(n, s)) for n, s in (("late", 2.0), ("early", 1.0))]
    await asyncio.sleep(0)
    assert clock.sleepers == 2
    clock.advance(1.5)
    await asyncio.sleep(0)
    assert woke == ["early"]
    clock.advance(0.5)
    await asyncio.gather(*tasks)
    assert woke == ["early", "late"]


async def test_cancelled_sleeper_is_not_woken(clock: FakeClock) -> None:
    task = asyncio.create_task(clock.sleep(1.0))
    await asyncio.sleep(0)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    clock.advance(2.0)
    assert clock.sleepers == 0
