"""``[cache] sampled``: whether sampled chat calls are cached and coalesced (real sim)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from overdrive import Overdrive
from overdrive._calls import Call, chat_call, embeddings_call, sampled, shares_answers
from overdrive.sim import SimConfig, SimServer

ASK: Any = [{"role": "user", "content": "Pick a random number."}]


def chat(**fields: Any) -> Call:
    return chat_call({"model": "m", "messages": ASK, **fields})


# -- which calls sample, and which may share ----------------------------------


@pytest.mark.parametrize(
    ("fields", "is_sampled"),
    [
        ({}, True),  # OpenAI's default temperature is 1
        ({"temperature": None}, True),
        ({"temperature": 0.7}, True),
        ({"temperature": 0}, False),
        ({"temperature": 0.0}, False),
        ({"temperature": 0, "top_p": 0.5}, False),  # nothing to sample from at 0
        ({"temperature": 1, "top_p": 0.01}, True),
        ({"temperature": 0, "n": 3}, False),  # three greedy choices: the key has n
        ({"temperature": "warm"}, True),  # not a number: the upstream will judge it
    ],
)
def test_a_chat_call_samples_unless_its_temperature_is_zero(
    fields: dict[str, Any], is_sampled: bool
) -> None:
    assert sampled(chat(**fields)) is is_sampled


def test_embeddings_never_sample() -> None:
    assert not sampled(embeddings_call({"model": "e", "input": "text"}))


@pytest.mark.parametrize(
    ("policy", "fields", "shares"),
    [
        ("share", {}, True),
        ("share", {"temperature": 0.9, "n": 4}, True),
        ("seeded", {}, False),
        ("seeded", {"seed": 7}, True),
        ("seeded", {"seed": None}, False),
        ("seeded", {"temperature": 0}, True),
        ("fresh", {}, False),
        ("fresh", {"seed": 7}, False),
        ("fresh", {"temperature": 0}, True),
    ],
)
def test_what_each_policy_shares(policy: Any, fields: dict[str, Any], shares: bool) -> None:
    assert shares_answers(chat(**fields), policy) is shares


# -- the engine under each policy -------------------------------------------------


@pytest.fixture(scope="module")
def sim() -> Iterator[SimServer]:
    # Slow enough to first byte that concurrent calls overlap in flight.
    config = SimConfig(seed=3, ttft_s=0.05, per_token_s=0.0, jitter=0.0, models=("m",))
    with SimServer(config) as server:
        yield server


def engine(sim: SimServer, policy: str) -> Overdrive:
    target = {"name": "sim", "base_url": sim.base_url, "models": ["m"]}
    return Overdrive.from_config({"upstreams": [target], "cache": {"sampled": policy}})


def upstream_calls(sim: SimServer) -> int:
    calls: int = sim.stats()["requests"].get("/v1/chat/completions", 0)
    return calls


async def ask(od: Overdrive, **fields: Any) -> dict[str, Any]:
    return await od.chat(model="m", messages=ASK, max_tokens=8, **fields)


async def ask_streamed(od: Overdrive, **fields: Any) -> str:
    body = {"model": "m", "messages": ASK, "max_tokens": 8, "stream": True, **fields}
    reply = await od.open_stream(chat_call(body))
    try:
        await reply.aread()
        return reply.source
    finally:
        await reply.aclose()


async def twice_then_three_at_once(od: Overdrive, **fields: Any) -> None:
    await ask(od, **fields)
    await ask(od, **fields)
    await asyncio.gather(*(ask(od, **fields, user=f"u{i}") for i in range(3)))


@pytest.mark.parametrize(
    ("policy", "fields", "calls"),
    [
        ("share", {}, 1),  # a repeat gets the same sample; the three coalesce or hit
        ("seeded", {}, 5),
        ("seeded", {"seed": 11}, 1),
        ("fresh", {}, 5),  # every caller its own sample: no cache, no coalescing
        ("fresh", {"seed": 11}, 5),
        ("fresh", {"temperature": 0}, 1),  # not sampled: cached as any call
    ],
)
async def test_sampled_calls_under_each_policy(
    sim: SimServer, policy: str, fields: dict[str, Any], calls: int
) -> None:
    sim.reset()
    async with engine(sim, policy) as od:
        await twice_then_three_at_once(od, **fields)
    assert upstream_calls(sim) == calls


async def test_fresh_calls_in_flight_together_are_not_coalesced(sim: SimServer) -> None:
    sim.reset()
    async with engine(sim, "fresh") as od:
        await asyncio.gather(*(ask(od) for _ in range(4)))  # identical, all at once
        coalesced = od.metrics.value("overdrive_coalesced_total", op="chat")
    assert upstream_calls(sim) == 4
    assert coalesced == 0


async def test_fresh_applies_to_streams_too(sim: SimServer) -> None:
    sim.reset()
    async with engine(sim, "fresh") as od:
        first = await ask_streamed(od)
        again = await ask_streamed(od)
        together = await asyncio.gather(*(ask_streamed(od) for _ in range(3)))
        greedy = [await ask_streamed(od, temperature=0) for _ in range(2)]
    assert [first, again, *together] == ["upstream"] * 5
    assert greedy == ["upstream", "cache"]
    assert upstream_calls(sim) == 6


async def test_seeded_streams_share_only_with_a_seed(sim: SimServer) -> None:
    sim.reset()
    async with engine(sim, "seeded") as od:
        unseeded = [await ask_streamed(od) for _ in range(2)]
        seeded = [await ask_streamed(od, seed=5) for _ in range(2)]
    assert unseeded == ["upstream", "upstream"]
    assert seeded == ["upstream", "cache"]
    assert upstream_calls(sim) == 3


async def test_one_cached_choice_never_answers_a_call_for_several(sim: SimServer) -> None:
    sim.reset()
    async with engine(sim, "share") as od:
        await ask(od, n=1)
        await ask(od, n=1)
        await ask(od, n=3)  # asks for three choices: not the cached answer with one
        await ask(od, n=3)  # ...but the same request again is (policy "share")
    assert upstream_calls(sim) == 2
