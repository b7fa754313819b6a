from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from overdrive import ConfigError, QueueFullError, QueueTimeoutError
from overdrive.flow import AdmissionQueue, LimitSpec, LocalLimiter
from overdrive.testing import FakeClock


def one_per_second(clock: FakeClock, **options: int) -> AdmissionQueue:
    limiter = LocalLimiter(LimitSpec(rpm=60, tpm=None, burst=1.0), clock)
    return AdmissionQueue(limiter, clock, name="test", **options)


async def admit_in_order(queue: AdmissionQueue, order: list[str], name: str, **kw: int) -> None:
    await queue.admit(**kw)
    order.append(name)


async def test_a_call_that_fits_goes_at_once(clock: FakeClock) -> None:
    queue = one_per_second(clock)
    assert await queue.admit() == 0.0
    assert queue.admitted == 1
    assert clock.sleepers == 0


async def test_waiters_go_in_arrival_order_one_timer_at_a_time(clock: FakeClock) -> None:
    queue = one_per_second(clock)
    order: list[str] = []
    tasks = [asyncio.create_task(admit_in_order(queue, order, str(i))) for i in range(4)]
    await clock.run_for(0.1)
    assert order == ["0"]
    assert clock.sleepers == 1  # the pump's timer, nothing polling
    await clock.run_for(1.0)
    assert order == ["0", "1"]
    await clock.run_for(2.0)
    await asyncio.gather(*tasks)
    assert order == ["0", "1", "2", "3"]


async def test_higher_priority_overtakes_waiting_calls(clock: FakeClock) -> None:
    queue = one_per_second(clock)
    await queue.admit()
    order: list[str] = []
    low = [asyncio.create_task(admit_in_order(queue, order, f"low{i}")) for i in range(2)]
    await clock.run_for(0.1)
    urgent = asyncio.create_task(admit_in_order(queue, order, "urgent", priority=5))
    await clock.run_for(3.0)
    await asyncio.gather(*low, urgent)
    assert order == ["urgent", "low0", "low1"]


async def test_deadline_raises_and_frees_the_turn(clock: FakeClock) -> None:
    queue = one_per_second(clock)
    await queue.admit()
    impatient = asyncio.create_task(queue.admit(max_wait=0.5))
    patient = asyncio.create_task(queue.admit())
    await clock.run_for(0.6)
    with pytest.raises(QueueTimeoutError) as caught:
        await impatient
    assert caught.value.queue == "test"
    assert isinstance(caught.value, TimeoutError)
    await clock.run_for(0.5)
    # The expired call booked nothing: the patient one goes at t=1, not t=2.
    assert await patient == pytest.approx(1.0, abs=0.02)


async def test_cancelled_waiter_loses_no_capacity(clock: FakeClock) -> None:
    queue = one_per_second(clock)
    await queue.admit()
    gone = asyncio.create_task(queue.admit())
    stays = asyncio.create_task(queue.admit())
    await clock.run_for(0.2)
    gone.cancel()
    await clock.run_for(0.9)
    assert stays.done()
    assert gone.cancelled()
    assert queue.waiting == 0
    assert queue.admitted == 2


async def test_full_queue_refuses_with_a_clear_error(clock: FakeClock) -> None:
    queue = one_per_second(clock, max_waiting=2)
    await queue.admit()
    waiting = [asyncio.create_task(queue.admit()) for _ in range(2)]
    await clock.run_for(0.01)
    with pytest.raises(QueueFullError, match="max_waiting=2"):
        await queue.admit()
    await clock.run_for(2.1)
    await asyncio.gather(*waiting)


async def test_hold_pushes_back_the_queue(clock: FakeClock) -> None:
    queue = one_per_second(clock)
    await queue.admit()
    task = asyncio.create_task(queue.admit())
    await clock.run_for(0.1)
    await queue.limiter.hold(3.0)
    await clock.run_for(2.5)
    assert not task.done()  # its first timer fired at t=1 and found the hold
    await clock.run_for(0.6)
    assert task.done()


async def test_a_big_call_at_the_head_is_not_starved(clock: FakeClock) -> None:
    limiter = LocalLimiter(LimitSpec(rpm=None, tpm=600, burst=1.0), clock)  # 10 tokens/s
    queue = AdmissionQueue(limiter, clock)
    await queue.admit(tokens=10)
    order: list[str] = []
    big = asyncio.create_task(admit_in_order(queue, order, "big", tokens=30))
    await clock.run_for(0.05)
    small = [asyncio.create_task(admit_in_order(queue, order, f"s{i}", tokens=1)) for i in range(3)]
    await clock.run_for(6.0)
    await asyncio.gather(big, *small)
    assert order[0] == "big"


async def test_a_failing_limiter_fails_the_head_only(clock: FakeClock) -> None:
    class Flaky(LocalLimiter):
        failures = 1

        async def try_acquire(self, requests: int, tokens: int) -> float:
            if tokens == 99 and self.failures:
                self.failures -= 1
                raise RuntimeError("limit store down")
            return await super().try_acquire(requests, tokens)

    limiter = Flaky(LimitSpec(rpm=60, tpm=None, burst=1.0), clock)
    queue = AdmissionQueue(limiter, clock)
    await queue.admit()
    doomed = asyncio.create_task(queue.admit(tokens=99))
    fine = asyncio.create_task(queue.admit())
    await clock.run_for(1.5)
    with pytest.raises(RuntimeError, match="limit store down"):
        await doomed
    assert await fine > 0


def test_max_waiting_is_checked(clock: FakeClock) -> None:
    limiter = LocalLimiter(LimitSpec(rpm=60, tpm=None, burst=1.0), clock)
    with pytest.raises(ConfigError, match="max_waiting"):
        AdmissionQueue(limiter, clock, max_waiting=-1)


@settings(max_examples=30, deadline=None)
@given(
    rpm=st.integers(60, 6000),
    arrivals=st.lists(
        st.tuples(st.floats(0, 0.5), st.integers(-2, 2), st.booleans()), min_size=1, max_size=40
    ),
)
def test_every_patient_call_is_admitted_within_the_rate(
    rpm: int, arrivals: list[tuple[float, int, bool]]
) -> None:
    async def scenario() -> None:
        clock = FakeClock()
        burst = 0.5
        limiter = LocalLimiter(LimitSpec(rpm=rpm, tpm=None, burst=burst), clock)
        queue = AdmissionQueue(limiter, clock)
        granted: list[float] = []

        async def call(priority: int, cancel_me: bool) -> None:
            await queue.admit(priority=priority)
            granted.append(clock.now())

        tasks = []
        for gap, priority, cancel_me in arrivals:
            await clock.run_for(gap, step=0.01) if gap >= 0.01 else None
            task = asyncio.create_task(call(priority, cancel_me))
            tasks.append((task, cancel_me))
            await asyncio.sleep(0)
            if cancel_me:
                task.cancel()
        await clock.run_for(len(arrivals) * 60 / rpm + 1.0, step=0.005)
        kept = [t for t, cancelled in tasks if not t.cancelled()]
        assert all(t.done() for t in kept)
        # Never more than rate * window + burst grants in any window.
        allowance = max(burst, 60 / rpm) * rpm / 60 + 1
        for i, start in enumerate(granted):
            inside = [g for g in granted[i:] if g - start <= 1.0]
            assert len(inside) <= rpm / 60 * 1.0 + allowance

    asyncio.run(scenario())
