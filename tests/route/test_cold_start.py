"""Cold start: a deployment that has answered nothing is raced, within a budget, then held back."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import httpx

from overdrive import Overdrive
from overdrive.testing import FakeClock
from tests.fakes import FakeServer, chat_response, finish, pass_time
from tests.route.workload import Endpoint, router

THREE = [Endpoint(name) for name in "abc"]


def answer(r: Any, upstream: Endpoint, clock: FakeClock, status: int = 200) -> None:
    attempt = r.attempt(upstream, "m")
    attempt.sent()
    clock.advance(0.1)
    attempt.answered(status)
    attempt.end()


def test_an_unknown_deployment_is_raced_until_it_answers(clock: FakeClock) -> None:
    r = router(THREE, clock, cold_races=3)
    a = THREE[0]
    assert [r.race(a, "m") for _ in range(4)] == [True, True, True, False]  # the budget
    b = THREE[1]
    assert r.race(b, "m")
    answer(r, b, clock)
    assert not r.race(b, "m")  # known now


def test_an_error_answer_leaves_it_unknown(clock: FakeClock) -> None:
    r = router(THREE, clock)
    answer(r, THREE[0], clock, status=503)
    assert r.race(THREE[0], "m")


def test_no_race_when_off_or_alone(clock: FakeClock) -> None:
    assert not router(THREE, clock, cold_start="off").race(THREE[0], "m")
    alone = [Endpoint("a")]
    assert not router(alone, clock).race(alone[0], "m")


def test_an_unknown_deployment_whose_races_are_spent_gets_nothing_more(clock: FakeClock) -> None:
    r = router(THREE, clock, cold_races=2)
    a = THREE[0]
    r.race(a, "m")
    r.race(a, "m")
    picks = Counter(r.pick("m").name for _ in range(100))
    assert picks["a"] == 0
    answer(r, a, clock)  # it answered after all: back in
    assert Counter(r.pick("m").name for _ in range(100))["a"] > 0


def test_when_every_unknown_one_is_spent_the_balancer_still_picks(clock: FakeClock) -> None:
    r = router(THREE, clock, cold_races=1)
    for endpoint in THREE:
        r.race(endpoint, "m")
    assert {r.pick("m").name for _ in range(100)} == {"a", "b", "c"}


# -- in the engine --------------------------------------------------------------


class Fleet:
    """Three deployments; ``slow`` takes 2 s a call, the others 0.1 s."""

    def __init__(self, clock: FakeClock, slow: str = "a") -> None:
        self.clock = clock
        self.slow = slow
        self.calls: Counter[str] = Counter()
        self.finished: Counter[str] = Counter()

    def handler(self, name: str) -> Any:
        async def answer(request: httpx.Request) -> httpx.Response:
            self.calls[name] += 1
            await self.clock.sleep(2.0 if name == self.slow else 0.1)
            self.finished[name] += 1
            return httpx.Response(200, json=chat_response("m"))

        return answer


@contextlib.asynccontextmanager
async def engine(clock: FakeClock, fleet: Fleet, **routing: Any) -> AsyncIterator[Overdrive]:
    async with contextlib.AsyncExitStack() as stack:
        upstreams = []
        for name in "abc":
            server = await stack.enter_async_context(FakeServer(fleet.handler(name)))
            upstreams.append({"name": name, "base_url": server.url, "models": ["m"]})
        config = {"upstreams": upstreams, "cache": {"enabled": False}, "routing": routing}
        async with Overdrive.from_config(config, clock=clock, rng=random.Random(5)) as od:
            yield od


async def timed_burst(od: Overdrive, clock: FakeClock, size: int) -> list[float]:
    async def one(n: int) -> float:
        started = clock.now()
        await od.chat(model="m", messages=[{"role": "user", "content": f"q{n}"}])
        return clock.now() - started

    return list(await asyncio.gather(*(one(n) for n in range(size))))


async def test_a_burst_at_start_never_waits_for_the_slow_deployment(clock: FakeClock) -> None:
    fleet = Fleet(clock)
    async with engine(clock, fleet) as od:
        first = await finish(clock, timed_burst(od, clock, 30))
        second = await finish(clock, timed_burst(od, clock, 30))
        await pass_time(clock, 3.0)  # the slow copies run out
        races = od.metrics.value("overdrive_cold_races_total", op="chat")
        latency = od.stats()["health"]["a"]["latency_s"]["m"]
    assert max(first + second) < 0.5  # every call answered by a fast deployment
    assert 0 < races <= 32 * 3
    assert fleet.finished["a"] == fleet.calls["a"] > 0  # the slow copies ran to the end...
    assert latency > 1.0  # ...so its latency is known


async def test_without_racing_a_burst_waits_for_the_slow_one(clock: FakeClock) -> None:
    fleet = Fleet(clock)
    async with engine(clock, fleet, cold_start="off") as od:
        first = await finish(clock, timed_burst(od, clock, 30))
        races = od.metrics.value("overdrive_cold_races_total", op="chat")
    assert max(first) >= 2.0
    assert races == 0
