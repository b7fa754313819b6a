"""The router in the engine: outcomes reported, failing deployments ejected, slow ones shunned."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import random
from collections import Counter
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from typing import Any

import httpx
import pytest

from overdrive import Overdrive
from overdrive.sim import SimConfig, SimServer
from overdrive.testing import FakeClock
from tests.fakes import FakeServer, HangUp, chat_response, finish, pass_time, refusing_url

# How the deployment named by the first argument answers a request.
Handler = Callable[[str, httpx.Request], Coroutine[None, None, httpx.Response]]


@contextlib.asynccontextmanager
async def engine(
    clock: FakeClock, handler: Handler, names: str = "abc", refused: str = "", **routing: Any
) -> AsyncIterator[Overdrive]:
    """An engine over one fake server per name (one port that refuses, for names in ``refused``)."""
    async with contextlib.AsyncExitStack() as stack:
        urls = {}
        for name in names:
            if name in refused:
                urls[name] = stack.enter_context(refusing_url())
            else:
                server = FakeServer(functools.partial(handler, name))
                urls[name] = (await stack.enter_async_context(server)).url
        config: dict[str, Any] = {
            "upstreams": [{"name": n, "base_url": urls[n], "models": ["m"]} for n in names],
            "cache": {"enabled": False},
            "retry": {"base": "50ms", "cap": "200ms"},
            # Each call one attempt where the balancer sends it: no cold-start races.
            "routing": {"cold_start": "off", **routing},
        }
        async with Overdrive.from_config(config, clock=clock, rng=random.Random(1)) as od:
            yield od


def sent_to(od: Overdrive, name: str) -> float:
    """Attempts the engine made on deployment ``name`` (a refused port cannot count them)."""
    return od.metrics.value("overdrive_upstream_requests_total", upstream=name)


def ask(n: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"question {n}"}]


async def workers(od: Overdrive, count: int, calls: int) -> None:
    async def worker(index: int) -> None:
        for n in range(calls):
            await od.chat(model="m", messages=ask(index * 1000 + n))

    await asyncio.gather(*(worker(i) for i in range(count)))


def bad_b(kind: str, seen: Counter[str]) -> Handler:
    async def handler(host: str, request: httpx.Request) -> httpx.Response:
        seen[host] += 1
        if host == "b":
            if kind == "hang_up":
                raise HangUp
            return httpx.Response(503, json={"error": {"message": "down"}})
        return httpx.Response(200, json=chat_response("m"))

    return handler


@pytest.mark.parametrize("kind", ["5xx", "hang_up", "refused"])
async def test_a_failing_deployment_is_ejected_and_no_error_reaches_the_caller(
    clock: FakeClock, kind: str
) -> None:
    seen: Counter[str] = Counter()
    refused = "b" if kind == "refused" else ""
    async with engine(clock, bad_b(kind, seen), refused=refused, health={"eject_after": 3}) as od:
        await finish(clock, workers(od, count=8, calls=5))  # every call answered
        ejected_after = sent_to(od, "b")
        await finish(clock, workers(od, count=4, calls=10))
        health = od.stats()["health"]
        sent_to_b = sent_to(od, "b")
    assert ejected_after <= 3 + 8  # the failures in a row, plus calls already sent
    assert sent_to_b == ejected_after  # nothing more while ejected
    assert seen["b"] == (0 if kind == "refused" else sent_to_b)  # each attempt reached b
    assert health["b"]["state"] == "ejected"
    assert {name: h["pending"] for name, h in health.items()} == {"a": 0, "b": 0, "c": 0}
    assert seen["a"] + seen["c"] == 80


def slow_a(clock: FakeClock, seen: Counter[str]) -> Handler:
    async def handler(host: str, request: httpx.Request) -> httpx.Response:
        seen[host] += 1
        await clock.sleep(2.0 if host == "a" else 0.1)
        return httpx.Response(200, json=chat_response("m"))

    return handler


@pytest.mark.parametrize(("balancer", "most"), [("peak_ewma", 0.05), ("round_robin", 1.0)])
async def test_a_slow_deployment_is_shunned(clock: FakeClock, balancer: str, most: float) -> None:
    seen: Counter[str] = Counter()
    async with engine(clock, slow_a(clock, seen), names="abcd", balancer=balancer) as od:
        await finish(clock, workers(od, count=16, calls=25))
        latency = od.stats()["health"]["a"]["latency_s"]["m"]
    share = seen["a"] / sum(seen.values())
    assert share <= most
    if balancer == "round_robin":
        assert share == pytest.approx(0.25)
    assert latency > 1.0  # seen, and remembered


async def test_probes_are_off_by_default_with_an_injected_clock(clock: FakeClock) -> None:
    seen: Counter[str] = Counter()
    async with engine(clock, bad_b("5xx", seen)) as od:
        await finish(clock, od.chat(model="m", messages=ask(0)))
        await clock.run_for(60.0, step=1.0)  # a probe, were one sent, would reach b meanwhile
    assert seen["b"] <= 1


async def test_probes_eject_a_deployment_that_fails_them(clock: FakeClock) -> None:
    probes: Counter[str] = Counter()

    async def handler(host: str, request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            probes[host] += 1
            assert request.url.path == "/v1/health"
            return httpx.Response(503 if host == "b" else 200, json={})
        return httpx.Response(200, json=chat_response("m"))

    settings = {"probes": True, "probe_interval": "1s", "probe_path": "/health", "eject_after": 2}
    async with engine(clock, handler, health=settings) as od:
        assert probes == {}  # started with the first call, not before
        await finish(clock, od.chat(model="m", messages=ask(0)))
        await pass_time(clock, 2.5)
        assert od.stats()["health"]["b"]["state"] == "ejected"
        assert od.stats()["health"]["a"]["state"] == "healthy"
    assert probes["a"] >= 2
    assert clock.sleepers == 0  # the probe tasks ended with the engine


async def test_weights_and_balancer_show_in_stats(clock: FakeClock) -> None:
    config: dict[str, Any] = {
        "upstreams": [
            {"name": "a", "base_url": "http://a.test/v1", "models": ["m"], "weight": 2.5},
        ],
        "routing": {"balancer": "least_load"},
    }
    async with Overdrive.from_config(config, clock=clock) as od:  # nothing is sent
        stats = od.stats()
    assert stats["balancer"] == "least_load"
    assert stats["health"]["a"]["weight"] == 2.5


# -- with the simulated upstream on real sockets ----------------------------------------


@pytest.fixture(scope="module")
def sims() -> Iterator[tuple[SimServer, SimServer]]:
    config = SimConfig(seed=3, ttft_s=0.005, per_token_s=0.0, models=("m",))
    with SimServer(config) as good, SimServer(config) as bad:
        bad.set_faults(error_rate=1.0)
        yield good, bad


async def test_sim_failing_deployment_is_ejected_streams_included(
    sims: tuple[SimServer, SimServer],
) -> None:
    good, bad = sims
    config: dict[str, Any] = {
        "upstreams": [
            {"name": "good", "base_url": good.base_url, "models": ["m"]},
            {"name": "bad", "base_url": bad.base_url, "models": ["m"]},
        ],
        "cache": {"enabled": False},
        "retry": {"base": "1ms", "cap": "5ms"},
        "routing": {"health": {"eject_after": 2, "probes": False}, "cold_start": "off"},
    }
    async with Overdrive.from_config(config) as od:
        answers = await asyncio.gather(*(od.chat(model="m", messages=ask(n)) for n in range(20)))
        chunks = [c async for c in od.stream_chat(model="m", messages=ask(99))]
        health = od.stats()["health"]
    assert all(a["choices"] for a in answers)
    assert chunks
    assert health["bad"]["state"] == "ejected"
    assert (health["good"]["pending"], health["bad"]["pending"]) == (0, 0)
