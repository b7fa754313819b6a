"""Prefix affinity in the engine: a conversation stays on one deployment; cache hits counted."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import httpx

from overdrive import Overdrive
from overdrive._json import loads
from overdrive.monitor.names import CACHED_TOKENS
from overdrive.testing import FakeClock
from tests.fakes import FakeServer, chat_response, finish

SYSTEM = {"role": "system", "content": "You are a careful agent. " * 300}
CACHED = 1024


class Deployment:
    """Answers chat calls; reports a prompt cache hit when it saw the conversation before."""

    def __init__(self, name: str, clock: FakeClock) -> None:
        self.name = name
        self.clock = clock
        self.seen: set[str] = set()
        self.calls: Counter[str] = Counter()
        self.bodies: list[dict[str, Any]] = []

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        body = loads(request.content)
        self.bodies.append(body)
        opening = body["messages"][1]["content"].split(":")[0]
        self.calls[opening] += 1
        hit = opening in self.seen
        self.seen.add(opening)
        await self.clock.sleep(0.1)
        answer = chat_response("m")
        answer["usage"] = {
            "prompt_tokens": 2000,
            "completion_tokens": 5,
            "total_tokens": 2005,
            "prompt_tokens_details": {"cached_tokens": CACHED if hit else 0},
        }
        return httpx.Response(200, json=answer)


@contextlib.asynccontextmanager
async def engine(
    clock: FakeClock, deployments: list[Deployment], **affinity: Any
) -> AsyncIterator[Overdrive]:
    async with contextlib.AsyncExitStack() as stack:
        upstreams = []
        for deployment in deployments:
            server = await stack.enter_async_context(FakeServer(deployment))
            upstreams.append({"name": deployment.name, "base_url": server.url, "models": ["m"]})
        config = {
            "upstreams": upstreams,
            "cache": {"enabled": False},
            "routing": {"affinity": affinity, "cold_start": "off"},  # one attempt a call
        }
        async with Overdrive.from_config(config, clock=clock, rng=random.Random(3)) as od:
            yield od


async def agent(od: Overdrive, name: str, turns: int) -> None:
    messages: list[dict[str, Any]] = [SYSTEM]
    for turn in range(turns):
        messages.append({"role": "user", "content": f"{name}: step {turn}"})
        await od.chat(model="m", messages=messages)
        messages.append({"role": "assistant", "content": f"done {turn}"})


async def agents(od: Overdrive, count: int, turns: int) -> None:
    await asyncio.gather(*(agent(od, f"agent{n}", turns) for n in range(count)))


async def test_each_conversation_stays_on_one_deployment(clock: FakeClock) -> None:
    fleet = [Deployment(name, clock) for name in "abcd"]
    async with engine(clock, fleet) as od:
        await finish(clock, agents(od, count=8, turns=5))
        cached = od.metrics.value(CACHED_TOKENS, op="chat")
    homes = {opening: [d.name for d in fleet if d.calls[opening]] for opening in fleet[0].calls}
    every = Counter({o: n for d in fleet for o, n in d.calls.items()})
    assert sum(every.values()) == 8 * 5
    assert all(len(places) == 1 for places in homes.values())
    assert len([d for d in fleet if d.calls]) > 1  # the conversations spread apart
    assert cached == CACHED * 8 * 4  # every turn after the first read its prefix from cache


async def test_without_affinity_the_cache_is_thrown_away(clock: FakeClock) -> None:
    fleet = [Deployment(name, clock) for name in "abcd"]
    async with engine(clock, fleet, mode="off") as od:
        await finish(clock, agents(od, count=8, turns=5))
        cached = od.metrics.value(CACHED_TOKENS, op="chat")
    spread = [sum(1 for d in fleet if d.calls[f"agent{n}"]) for n in range(8)]
    assert max(spread) > 1
    assert cached < CACHED * 8 * 4


async def test_the_prompt_cache_key_is_sent_when_asked(clock: FakeClock) -> None:
    fleet = [Deployment(name, clock) for name in "ab"]
    async with engine(clock, fleet, set_prompt_cache_key=True) as od:
        await finish(clock, agents(od, count=2, turns=2))
    keys = {body["prompt_cache_key"] for d in fleet for body in d.bodies}
    assert len(keys) == 2  # one per conversation, the same on each of its turns
