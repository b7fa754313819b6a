from __future__ import annotations

import asyncio
from typing import Any

import pytest

from overdrive import ConfigError, PoolClosedError, PoolError, PoolTimeoutError
from overdrive.resources import ResourcePool
from overdrive.resources._pool import Lease
from overdrive.testing import FakeClock
from tests.resources.things import Boom, Maker, Thing, settle


def pool_of(maker: Maker, clock: FakeClock, **options: Any) -> ResourcePool[Thing]:
    options.setdefault("close", maker.close)
    return ResourcePool(maker.make, clock=clock, name="things", **options)


async def hold(pool: ResourcePool[Thing], log: list[str], tag: str) -> Lease[Thing]:
    """Acquire, note who got in, and keep the lease for the test to release."""
    lease = await pool.acquire()
    log.append(tag)
    return lease


# -- handing out -------------------------------------------------------------------------


async def test_reuses_the_most_recently_returned_resource(clock: FakeClock) -> None:
    maker = Maker()
    pool = pool_of(maker, clock)
    async with pool.acquire() as a, pool.acquire() as b:
        assert (a.number, b.number) == (1, 2)
    async with pool.acquire() as c:
        assert c is a  # b went back first, a last: a is the hottest
    s = pool.stats()
    assert (s.size, s.idle, s.in_use, s.created, s.acquired) == (2, 2, 0, 2, 3)
    await pool.aclose()


async def test_never_more_than_max_size_and_waiters_served_first_come(clock: FakeClock) -> None:
    pool = pool_of(Maker(), clock, max_size=2)
    first, second = await pool.acquire(), await pool.acquire()
    log: list[str] = []
    waiters = [asyncio.create_task(hold(pool, log, f"w{i}")) for i in range(3)]
    await settle()
    assert log == []
    assert (pool.stats().size, pool.stats().waiting) == (2, 3)

    second.release()
    await settle()
    assert log == ["w0"]
    first.release()
    await settle()
    assert log == ["w0", "w1"]
    (await waiters[0]).release()
    await settle()
    assert log == ["w0", "w1", "w2"]
    assert pool.stats().created == 2
    for task in waiters[1:]:
        (await task).release()
    await pool.aclose()


async def test_a_newcomer_does_not_overtake_a_waiter(clock: FakeClock) -> None:
    pool = pool_of(Maker(), clock, max_size=1)
    held = await pool.acquire()
    log: list[str] = []
    waiter = asyncio.create_task(hold(pool, log, "waiter"))
    await settle()
    held.release()  # handed straight to the waiter, not left idle for anyone
    newcomer = asyncio.create_task(hold(pool, log, "newcomer"))
    await settle()
    assert log == ["waiter"]
    (await waiter).release()
    await settle()
    assert log == ["waiter", "newcomer"]
    (await newcomer).release()
    await pool.aclose()


# -- timeouts ----------------------------------------------------------------------------


async def test_acquire_timeout_runs_on_the_injected_clock(clock: FakeClock) -> None:
    pool = pool_of(Maker(), clock, max_size=1, acquire_timeout=5)
    held = await pool.acquire()
    waiter = asyncio.create_task(pool.acquire()._take())
    await settle()
    clock.advance(4.9)
    await settle()
    assert not waiter.done()
    clock.advance(0.2)
    await settle()
    with pytest.raises(PoolTimeoutError) as caught:
        await waiter
    assert (caught.value.pool, caught.value.timeout) == ("things", 5.0)
    assert isinstance(caught.value, TimeoutError)
    assert (pool.stats().timeouts, pool.stats().waiting) == (1, 0)

    held.release()  # nobody is waiting any more: it goes idle, not to the gone waiter
    assert (pool.stats().idle, pool.stats().in_use) == (1, 0)
    await pool.aclose()


async def test_per_call_timeout_overrides_the_default(clock: FakeClock) -> None:
    pool = pool_of(Maker(), clock, max_size=1, acquire_timeout=5)
    held = await pool.acquire()
    quick = asyncio.create_task(pool.acquire(timeout=1)._take())
    patient = asyncio.create_task(pool.acquire(timeout=None)._take())
    await clock.run_for(60, step=1)
    assert quick.done()
    assert isinstance(quick.exception(), PoolTimeoutError)
    assert not patient.done()
    held.release()
    (await patient).release()
    await pool.aclose()


async def test_timeout_bounds_a_slow_factory_and_cancels_it(clock: FakeClock) -> None:
    gate: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    cancelled: list[bool] = []

    async def slow() -> Thing:
        try:
            await gate
        except asyncio.CancelledError:
            cancelled.append(True)
            raise
        return Thing(1)

    pool = ResourcePool(slow, clock=clock, acquire_timeout=1)
    acquiring = asyncio.create_task(pool.acquire()._take())
    await clock.run_for(1.5, step=0.1)
    with pytest.raises(PoolTimeoutError):
        await acquiring
    await settle()
    assert cancelled == [True]
    assert pool.stats().size == 0  # the permit came back
    await pool.aclose()


# -- failures ----------------------------------------------------------------------------


async def test_factory_failure_reaches_the_caller_and_frees_the_slot(clock: FakeClock) -> None:
    maker = Maker()
    maker.fail_next = 1
    pool = pool_of(maker, clock, max_size=1)
    with pytest.raises(Boom):
        await pool.acquire()
    assert (pool.stats().size, pool.stats().failed) == (0, 1)
    async with pool.acquire() as thing:
        assert thing.number == 1
    await pool.aclose()


async def test_factory_failure_of_a_served_waiter_passes_the_slot_on(clock: FakeClock) -> None:
    maker = Maker()
    pool = pool_of(maker, clock, max_size=1)
    held = await pool.acquire()
    log: list[str] = []
    unlucky = asyncio.create_task(hold(pool, log, "unlucky"))
    lucky = asyncio.create_task(hold(pool, log, "lucky"))
    await settle()
    maker.fail_next = 1
    held.discard()  # the slot goes to `unlucky` as a permit; its factory call fails
    await settle()
    assert isinstance(unlucky.exception(), Boom)
    assert log == ["lucky"]
    (await lucky).release()
    assert pool.stats().size == 1
    await pool.aclose()


async def test_a_failed_health_check_closes_and_replaces(clock: FakeClock) -> None:
    maker = Maker()
    pool = pool_of(maker, clock, check=maker.check)
    async with pool.acquire() as first:
        pass
    first.healthy = False
    async with pool.acquire() as second:
        assert second is not first
    assert first.closed
    s = pool.stats()
    assert (s.size, s.idle, s.unhealthy, s.created, s.closed) == (1, 1, 1, 2, 1)
    await pool.aclose()


@pytest.mark.parametrize("verdict", ["async-false", "raises"])
async def test_async_and_raising_checks(clock: FakeClock, verdict: str) -> None:
    maker = Maker()

    async def check(thing: Thing) -> bool:
        await asyncio.sleep(0)
        if verdict == "raises":
            raise Boom("check blew up")
        return thing.number != 1

    pool = pool_of(maker, clock, check=check)
    async with pool.acquire():
        pass
    async with pool.acquire() as thing:
        assert thing.number == 2
    assert maker.made[0].closed
    assert pool.stats().unhealthy == 1
    await pool.aclose()


async def test_a_check_cut_short_discards_the_resource(clock: FakeClock) -> None:
    maker = Maker()
    hang: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

    async def check(thing: Thing) -> bool:
        return await hang

    pool = pool_of(maker, clock, check=check, acquire_timeout=2)
    async with pool.acquire():
        pass
    acquiring = asyncio.create_task(pool.acquire()._take())
    await clock.run_for(3, step=0.1)
    with pytest.raises(PoolTimeoutError):
        await acquiring
    assert maker.made[0].closed  # its state after an interrupted check is unknown
    assert pool.stats().size == 0
    await pool.aclose()


# -- giving back ---------------------------------------------------------------------------


async def test_a_raising_block_still_returns_the_resource(clock: FakeClock) -> None:
    maker = Maker()
    pool = pool_of(maker, clock)
    with pytest.raises(Boom):
        async with pool.acquire():
            raise Boom("holder failed")
    assert (pool.stats().idle, pool.stats().in_use) == (1, 0)
    assert maker.open == maker.made
    await pool.aclose()


async def test_discard_on_and_discard_close_the_resource(clock: FakeClock) -> None:
    maker = Maker()
    pool = pool_of(maker, clock, discard_on=(ConnectionError,))
    with pytest.raises(ConnectionError):
        async with pool.acquire():
            raise ConnectionError("peer went away")
    assert maker.made[0].closed
    lease = pool.acquire()
    async with lease:
        lease.discard()
        assert not lease.held
    assert maker.made[1].closed
    s = pool.stats()
    assert (s.size, s.created, s.closed) == (0, 2, 2)
    await pool.aclose()


async def test_a_cancelled_holder_returns_the_resource(clock: FakeClock) -> None:
    pool = pool_of(Maker(), clock)
    entered = asyncio.Event()

    async def holder() -> None:
        async with pool.acquire():
            entered.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(holder())
    await entered.wait()
    task.cancel()
    await settle()
    assert (pool.stats().idle, pool.stats().in_use) == (1, 0)
    await pool.aclose()


async def test_max_uses_retires_a_resource(clock: FakeClock) -> None:
    maker = Maker()
    pool = pool_of(maker, clock, max_uses=2)
    numbers = []
    for _ in range(5):
        async with pool.acquire() as thing:
            numbers.append(thing.number)
    assert numbers == [1, 1, 2, 2, 3]
    assert [t.closed for t in maker.made] == [True, True, False]
    await pool.aclose()


# -- cancellation while waiting ------------------------------------------------------------


async def test_a_waiter_cancelled_as_it_is_served_passes_the_resource_on(
    clock: FakeClock,
) -> None:
    maker = Maker()
    pool = pool_of(maker, clock, max_size=1)
    held = await pool.acquire()
    log: list[str] = []
    doomed = asyncio.create_task(hold(pool, log, "doomed"))
    next_in_line = asyncio.create_task(hold(pool, log, "next"))
    await settle()
    held.release()  # resolves doomed's future ...
    doomed.cancel()  # ... and doomed is cancelled before it can run
    await settle()
    assert doomed.cancelled()
    assert log == ["next"]
    (await next_in_line).release()
    assert pool.stats().created == 1
    await pool.aclose()


async def test_a_waiter_cancelled_with_a_permit_passes_the_permit_on(clock: FakeClock) -> None:
    maker = Maker()
    pool = pool_of(maker, clock, max_size=1)
    held = await pool.acquire()
    log: list[str] = []
    doomed = asyncio.create_task(hold(pool, log, "doomed"))
    next_in_line = asyncio.create_task(hold(pool, log, "next"))
    await settle()
    held.discard()  # the freed slot goes to doomed as a permit to create
    doomed.cancel()
    await settle()
    assert log == ["next"]
    (await next_in_line).release()
    assert (pool.stats().size, pool.stats().created) == (1, 2)
    await pool.aclose()


async def test_cancelled_during_creation_leaks_nothing(clock: FakeClock) -> None:
    maker = Maker()
    gate: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def gated() -> Thing:
        await gate
        return maker.make()

    pool = ResourcePool(gated, close=maker.close, clock=clock, max_size=1)
    acquiring = asyncio.create_task(pool.acquire()._take())
    await settle()
    gate.set_result(None)  # the factory finishes in the same tick its caller is cancelled
    acquiring.cancel()
    await settle()
    s = pool.stats()
    assert s.in_use == 0
    assert s.size == s.idle == len(maker.open)
    await pool.aclose()
    assert maker.open == []


# -- idle eviction and min_size ------------------------------------------------------------


async def test_idle_resources_are_evicted_down_to_min_size(clock: FakeClock) -> None:
    maker = Maker()
    pool = await pool_of(maker, clock, min_size=1, max_size=3, max_idle=10).open()
    assert pool.stats().size == 1
    leases = [await pool.acquire() for _ in range(3)]
    for lease in leases:
        lease.release()
    clock.advance(9.9)
    await settle()
    assert pool.stats().size == 3
    clock.advance(0.2)
    await settle()
    assert (pool.stats().size, pool.stats().closed) == (1, 2)
    await clock.run_for(100, step=10)
    assert pool.stats().size == 1  # never below min_size
    await pool.aclose()


async def test_idle_time_counts_from_the_last_return(clock: FakeClock) -> None:
    maker = Maker()
    pool = pool_of(maker, clock, max_idle=10)
    first, second = await pool.acquire(), await pool.acquire()
    first.release()
    clock.advance(6)
    second.release()
    clock.advance(5)  # first idle 11 s, second 5 s
    await settle()
    assert [t.closed for t in maker.made] == [True, False]
    clock.advance(5)
    await settle()
    assert pool.stats().size == 0
    await pool.aclose()


async def test_open_fills_min_size_and_reports_factory_errors(clock: FakeClock) -> None:
    maker = Maker()
    async with pool_of(maker, clock, min_size=3, max_size=5) as pool:
        assert (pool.stats().size, pool.stats().idle) == (3, 3)
    assert pool.closed
    assert maker.open == []

    broken = Maker()
    broken.fail_next = 1
    pool = pool_of(broken, clock, min_size=2)
    with pytest.raises(Boom):
        await pool.open()
    assert (pool.stats().size, pool.stats().failed) == (1, 1)
    await pool.aclose()


# -- closing -----------------------------------------------------------------------------------


async def test_aclose_fails_waiters_closes_idle_and_waits_for_holders(clock: FakeClock) -> None:
    maker = Maker()
    pool = pool_of(maker, clock, max_size=2)
    first, second = await pool.acquire(), await pool.acquire()
    waiter = asyncio.create_task(pool.acquire()._take())
    await settle()

    closing = asyncio.create_task(pool.aclose())
    await settle()
    assert isinstance(waiter.exception(), PoolClosedError)
    assert not closing.done()
    with pytest.raises(PoolClosedError):
        await pool.acquire()

    first.release()  # closed at once: the pool is closing
    await settle()
    assert maker.made[0].closed
    assert not maker.made[1].closed
    assert not closing.done()
    second.release()
    await closing
    assert maker.open == []
    s = pool.stats()
    assert (s.size, s.created, s.closed) == (0, 2, 2)


async def test_aclose_grace_closes_what_is_still_held(clock: FakeClock) -> None:
    maker = Maker()
    pool = pool_of(maker, clock)
    lease = await pool.acquire()
    closing = asyncio.create_task(pool.aclose(grace=5))
    await clock.run_for(6, step=0.1)
    await closing
    assert lease.resource.closed
    lease.release()  # late: frees the slot, does not close again
    assert (pool.stats().size, pool.stats().closed) == (0, 1)


async def test_async_close_hooks_run_in_the_background(clock: FakeClock) -> None:
    maker = Maker()
    pool = ResourcePool(maker.amake, close=maker.aclose, clock=clock)
    lease = await pool.acquire()
    lease.discard()  # returns at once; the hook runs on its own
    assert pool.stats().closing == 1
    assert not maker.made[0].closed
    await settle()
    assert pool.stats().closing == 0
    assert maker.made[0].closed
    async with pool.acquire():
        pass
    await pool.aclose()
    assert maker.open == []
    assert pool.stats().closed == 2


# -- the lease, repr, config -------------------------------------------------------------------


async def test_lease_misuse_is_reported(clock: FakeClock) -> None:
    pool = pool_of(Maker(), clock)
    lease = await pool.acquire()
    with pytest.raises(PoolError, match="used once"):
        await lease
    lease.release()
    lease.release()  # idempotent
    with pytest.raises(PoolError, match="holds no resource"):
        _ = lease.resource
    assert pool.stats().idle == 1
    await pool.aclose()


async def test_repr_shows_live_state(clock: FakeClock) -> None:
    pool = pool_of(Maker(), clock, max_size=4)
    lease = await pool.acquire()
    assert repr(pool) == (
        "ResourcePool('things', open, size=1/4, idle=0, in_use=1, waiting=0, "
        "created=1, closed=0, failed=0)"
    )
    assert repr(lease) == "Lease(pool='things', holding Thing(1))"
    lease.release()
    await pool.aclose()
    assert "closed, size=0/4" in repr(pool)


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"max_size": 0}, "max_size"),
        ({"min_size": -1}, "min_size"),
        ({"min_size": 3, "max_size": 2}, "min_size"),
        ({"acquire_timeout": -1}, "acquire_timeout"),
        ({"max_idle": float("nan")}, "max_idle"),
        ({"max_uses": 0}, "max_uses"),
        ({"max_size": True}, "max_size"),
    ],
)
def test_bad_options_name_the_field(options: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as caught:
        ResourcePool(Maker().make, **options)
    assert caught.value.field == field
