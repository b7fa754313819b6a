"""Identical streamed calls in flight share one upstream stream (real sim, real openai client)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from overdrive import Overdrive
from overdrive.sim import SimConfig, SimServer

CHAT = "gpt-sim"
ASK: Any = [{"role": "user", "content": "Tell a long story about shared streams."}]


@pytest.fixture(scope="module")
def sim() -> Iterator[SimServer]:
    config = SimConfig(seed=4, ttft_s=0.05, per_token_s=0.004, models=(CHAT,))
    with SimServer(config) as server:
        yield server


def client_for(od: Overdrive) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url="http://127.0.0.1:9/v1",
        api_key="unused",
        max_retries=0,
        http_client=od.http_client(),
    )


async def read_stream(
    client: openai.AsyncOpenAI, delay: float, sim: SimServer | None = None
) -> tuple[str, int, int]:
    """The streamed text, and the sim's calls in flight at its first and last chunk."""
    await asyncio.sleep(delay)
    stream = await client.chat.completions.create(
        model=CHAT, messages=ASK, max_tokens=60, stream=True
    )
    at_first = -1
    parts = []
    async for chunk in stream:
        if at_first < 0:
            at_first = sim.stats()["in_flight"] if sim else 0
        if chunk.choices and chunk.choices[0].delta.content:
            parts.append(chunk.choices[0].delta.content)
    return "".join(parts), at_first, sim.stats()["in_flight"] if sim else 0


async def test_identical_streams_share_one_upstream_call(sim: SimServer) -> None:
    sim.reset()
    upstream = {"name": "sim", "base_url": sim.base_url, "models": [CHAT]}
    async with Overdrive.from_config({"upstreams": [upstream]}) as od:
        client = client_for(od)
        # Some join at once, some while the first is half-way through its answer.
        delays = [0.0, 0.0, 0.0, 0.1, 0.15]
        results = await asyncio.gather(*(read_stream(client, d, sim) for d in delays))
        assert od.stats()["in_flight"] == {"sim": 0}
        coalesced = od.metrics.value("overdrive_coalesced_total", op="chat")
    texts = {text for text, _, _ in results}
    assert len(texts) == 1
    assert next(iter(texts))
    assert sim.stats()["requests"]["/v1/chat/completions"] == 1
    assert coalesced == 4
    # Chunks pass through as they come, not at the end: the first reached the
    # caller while the upstream was still answering.
    _text, in_flight_at_first, _ = results[0]
    assert in_flight_at_first == 1


async def test_a_stream_that_ended_is_not_joined(sim: SimServer) -> None:
    sim.reset()
    upstream = {"name": "sim", "base_url": sim.base_url, "models": [CHAT]}
    config = {"upstreams": [upstream], "cache": {"enabled": False}}
    async with Overdrive.from_config(config) as od:
        client = client_for(od)
        one = await read_stream(client, 0.0)
        two = await read_stream(client, 0.0)
    assert one[0] == two[0]
    assert sim.stats()["requests"]["/v1/chat/completions"] == 2


async def test_a_finished_stream_is_cached_and_replayed_chunk_by_chunk(sim: SimServer) -> None:
    sim.reset()
    upstream = {"name": "sim", "base_url": sim.base_url, "models": [CHAT]}
    async with Overdrive.from_config({"upstreams": [upstream]}) as od:
        http = od.http_client(base_url="http://any.test/v1")
        body = {"model": CHAT, "messages": ASK, "max_tokens": 40, "stream": True}
        replies = []
        for _ in range(2):
            async with http.stream("POST", "/chat/completions", json=body) as response:
                chunks = [chunk async for chunk in response.aiter_raw()]
                replies.append((response.headers["x-overdrive-cache"], chunks))
    (first_state, first), (second_state, second) = replies
    assert (first_state, second_state) == ("MISS", "HIT")
    assert b"".join(second) == b"".join(first)
    assert len(second) == len(first) > 3  # a stream of chunks again, not one lump
    assert sim.stats()["requests"]["/v1/chat/completions"] == 1
    # A non-streamed call of the same request is cached apart: JSON, not SSE.
    async with Overdrive.from_config({"upstreams": [upstream]}) as od:
        plain = await od.chat(model=CHAT, messages=ASK, max_tokens=40)
    assert plain["object"] == "chat.completion"


async def test_an_abandoned_stream_frees_the_upstream(sim: SimServer) -> None:
    sim.reset()
    upstream = {"name": "sim", "base_url": sim.base_url, "models": [CHAT]}
    async with Overdrive.from_config({"upstreams": [upstream]}) as od:
        client = client_for(od)
        stream = await client.chat.completions.create(
            model=CHAT, messages=ASK, max_tokens=200, stream=True
        )
        async for _ in stream:
            break
        await stream.close()
        await asyncio.sleep(0.05)
        assert od.stats()["in_flight"] == {"sim": 0}
        # A new identical call starts its own stream and gets the whole answer.
        text, _, _ = await read_stream(client, 0.0)
    assert text
    assert sim.stats()["requests"]["/v1/chat/completions"] == 2
