"""The pool's promises under any interleaving: exclusive use, no leaks, first come first served.

Two angles: hypothesis drives a pool step by step through arbitrary scripts
(acquire, release, discard, cancel, time passing, resources turning sick,
the factory failing) and checks every invariant after every step; the stress
test throws 1,000 concurrent acquirers at a pool of 10 with random
cancellations, failures and discards.
"""

from __future__ import annotations

import asyncio
import itertools
import random
from dataclasses import dataclass, field
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from overdrive import PoolTimeoutError
from overdrive.resources import ResourcePool
from overdrive.resources._pool import Lease
from overdrive.testing import FakeClock
from tests.resources.things import Boom, Maker, Thing, settle

# -- hypothesis: any script of operations ------------------------------------------------

Op = tuple[str, Any]

_INDEX = st.integers(0, 99)
_ACQUIRE = st.tuples(st.just("acquire"), st.sampled_from([None, 1.0, 3.0]))
_HANDOFF = st.tuples(st.just("handoff_cancel"), _INDEX)
# Repeated strategies weigh more: acquires and hand-offs are where the races are.
OPS = st.one_of(
    _ACQUIRE,
    _ACQUIRE,
    _ACQUIRE,
    _HANDOFF,
    st.tuples(st.sampled_from(["release", "discard", "cancel", "sicken"]), _INDEX),
    st.tuples(st.sampled_from(["release", "discard"]), _INDEX),
    st.tuples(st.just("advance"), st.sampled_from([0.5, 2.0, 6.0])),
    st.tuples(st.just("fail_next"), st.none()),
)


@st.composite
def configs(draw: st.DrawFn) -> dict[str, Any]:
    max_size = draw(st.integers(1, 3))
    return {
        "max_size": max_size,
        "min_size": min(max_size, draw(st.sampled_from([0, 0, 1, 2]))),
        "max_idle": draw(st.sampled_from([None, 5.0])),
        "max_uses": draw(st.sampled_from([None, 2])),
    }


@dataclass
class Run:
    """What the test knows from outside the pool."""

    pool: ResourcePool[Thing]
    maker: Maker
    clock: FakeClock
    pending: dict[int, asyncio.Task[Lease[Thing]]] = field(default_factory=dict)
    queued: set[int] = field(default_factory=set)  # had to wait for their turn
    holders: list[Lease[Thing]] = field(default_factory=list)
    started: int = 0

    async def acquire(self, allowance: float | None) -> None:
        number = self.started
        self.started += 1
        self.pending[number] = asyncio.create_task(self.pool.acquire(allowance)._take())
        await settle()
        if not self.pending[number].done():
            self.queued.add(number)

    def give_back(self, index: int, *, discard: bool) -> None:
        if self.holders:
            lease = self.holders.pop(index % len(self.holders))
            lease.resource.leave()
            lease.discard() if discard else lease.release()

    def collect(self) -> None:
        """Move finished acquires out of ``pending``; check first come, first served."""
        for number, task in sorted(self.pending.items()):
            if not task.done():
                continue
            del self.pending[number]
            if task.cancelled():
                continue
            error = task.exception()
            if number in self.queued and not isinstance(error, PoolTimeoutError):
                earlier = [n for n in self.pending if n < number and n in self.queued]
                assert not earlier, f"waiter {number} served before {earlier}"
            if error is None:
                lease = task.result()
                assert lease.resource.healthy, "a resource that failed its check was handed out"
                lease.resource.enter()
                self.holders.append(lease)
            else:
                assert isinstance(error, Boom | PoolTimeoutError), error

    def check(self) -> None:
        s, pool, maker = self.pool.stats(), self.pool, self.maker
        held = [lease.resource for lease in self.holders]
        assert len({id(t) for t in held}) == len(held), "one resource, two holders"
        assert not any(t.closed for t in held)
        assert s.in_use == len(held)
        assert s.waiting == len(self.pending)
        assert s.size == s.idle + s.in_use <= pool.max_size
        assert s.created == len(maker.made)
        assert s.closed == sum(t.closed for t in maker.made)
        assert len(maker.open) == s.size, "a resource neither in the pool nor closed"
        if s.waiting:
            assert (s.idle, s.size) == (0, pool.max_size), "waiting while something is free"


async def play(config: dict[str, Any], script: list[Op]) -> None:
    clock, maker = FakeClock(), Maker()
    pool = ResourcePool(maker.make, close=maker.close, check=maker.check, clock=clock, **config)
    run = Run(await pool.open(), maker, clock)
    for op, arg in script:
        before = pool.stats().size
        if op == "acquire":
            await run.acquire(arg)
        elif op in ("release", "discard"):
            run.give_back(arg, discard=op == "discard")
        elif op == "cancel" and run.pending:
            list(run.pending.values())[arg % len(run.pending)].cancel()
        elif op == "handoff_cancel":  # the head waiter is served, then cancelled before it runs
            run.give_back(arg, discard=arg % 2 == 1)
            if run.pending:
                run.pending[min(run.pending)].cancel()
        elif op == "sicken" and maker.made:
            maker.made[arg % len(maker.made)].healthy = False
        elif op == "fail_next":
            maker.fail_next += 1
        elif op == "advance":
            clock.advance(arg)
        await settle()
        run.collect()
        run.check()
        if op == "advance" and pool.max_idle is not None:
            s = pool.stats()
            assert s.size >= min(before, pool.min_size), "idle eviction went below min_size"
            if arg >= pool.max_idle:
                assert s.idle == 0 or s.size <= pool.min_size, "expired idle resources kept"

    for lease in run.holders:
        lease.resource.leave()
        lease.release()
    for task in run.pending.values():
        task.cancel()
    await settle()
    closing = asyncio.create_task(pool.aclose(grace=1.0))
    await settle()
    clock.advance(2.0)  # a leaked slot would hold aclose until its grace runs out
    await settle()
    assert closing.done()
    assert closing.exception() is None
    assert pool.stats().size == 0, "a slot was never given back"
    assert maker.open == []
    assert pool.stats().closed == pool.stats().created == len(maker.made)


@settings(max_examples=300, deadline=None)
@given(config=configs(), script=st.lists(OPS, min_size=4, max_size=50))
def test_invariants_hold_after_every_step_of_any_script(
    config: dict[str, Any], script: list[Op]
) -> None:
    asyncio.run(play(config, script))


# -- stress: 1,000 acquirers, a pool of 10 -----------------------------------------------


class Broken(Exception):
    """A holder found its resource broken: the pool must discard it."""


@dataclass
class Tally:
    holding: int = 0
    peak: int = 0
    entered: int = 0
    most_waiting: int = 0


async def test_a_thousand_acquirers_share_ten_resources_without_overlap_or_leak() -> None:
    rng = random.Random(20240501)
    maker = Maker()
    tally = Tally()

    creations = itertools.count(1)

    async def factory() -> Thing:
        await asyncio.sleep(0)  # creation spans a tick: cancellations land mid-creation
        # The 5th creation always fails too: how many creations happen depends on
        # the machine's timing (acquire timeouts are wall time), so draws alone may miss.
        if rng.random() < 0.03 or next(creations) == 5:
            raise Boom("factory failed")
        return maker.make()

    async def check(thing: Thing) -> bool:
        await asyncio.sleep(0)
        return thing.healthy

    pool = ResourcePool(
        factory,
        close=maker.aclose,
        check=check,
        max_size=10,
        max_uses=25,
        discard_on=(Broken,),
        name="stress",
    )

    async def user() -> None:
        lease = pool.acquire(timeout=rng.choice([None, None, None, 0.002]))
        async with lease as thing:
            thing.enter()
            tally.entered += 1
            tally.holding += 1
            tally.peak = max(tally.peak, tally.holding)
            try:
                for _ in range(rng.randrange(4)):
                    await asyncio.sleep(0)
                roll = rng.random()
                if roll < 0.05:
                    thing.healthy = False  # the next check turns it away
                elif roll < 0.10:
                    raise Broken("resource broke")
                elif roll < 0.15:
                    raise Boom("holder failed")  # the resource itself is fine
                elif roll < 0.20:
                    lease.discard()
            finally:
                tally.holding -= 1
                thing.leave()

    users = [asyncio.create_task(user()) for _ in range(1000)]
    while not all(u.done() for u in users):
        tally.most_waiting = max(tally.most_waiting, pool.stats().waiting)
        if rng.random() < 0.3:
            rng.choice(users).cancel()
        for _ in range(3):
            await asyncio.sleep(0)
    outcomes = await asyncio.gather(*users, return_exceptions=True)

    kinds = {type(o).__name__ for o in outcomes if o is not None}
    assert kinds <= {"Boom", "Broken", "CancelledError", "PoolTimeoutError"}, kinds
    assert 8 <= tally.peak <= 10
    assert tally.most_waiting > 500
    assert tally.entered > 300, tally

    await settle()  # background close hooks
    s = pool.stats()
    assert (s.in_use, s.waiting, s.closing) == (0, 0, 0)
    assert s.size == s.idle <= 10
    assert s.acquired == tally.entered
    assert s.created == len(maker.made)
    assert s.failed > 0
    assert s.unhealthy > 0
    assert len(maker.open) == s.idle, "a resource neither idle in the pool nor closed"
    assert s.closed == s.created - s.idle

    await pool.aclose()
    assert maker.open == []
    assert pool.stats().closed == pool.stats().created
