"""The engine against the real simulated upstream, driven by the real openai client."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import openai
import pytest

from overdrive import Overdrive, UpstreamStatusError
from overdrive.sim import SimConfig, SimServer

CHAT = "gpt-4o-mini"
EMBED = "text-embedding-3-small"
HELLO: Any = [{"role": "user", "content": "Say hello to the integration test."}]


@pytest.fixture(scope="module")
def sim() -> Iterator[SimServer]:
    config = SimConfig(
        seed=1, ttft_s=0.02, per_token_s=0.002, embed_base_s=0.005, models=(CHAT, EMBED)
    )
    with SimServer(config) as server:
        yield server


@pytest.fixture
async def od(sim: SimServer) -> AsyncIterator[Overdrive]:
    sim.reset()
    upstream = {"name": "sim", "base_url": sim.base_url, "models": [CHAT, EMBED], "rpm": 6000}
    config = {"upstreams": [upstream], "retry": {"base": "10ms"}}
    async with Overdrive.from_config(config) as engine:
        yield engine


def through(od: Overdrive) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url="http://127.0.0.1:9/v1",  # a dead port: the engine routes by model instead
        api_key="unused",
        max_retries=0,
        http_client=od.http_client(),
    )


async def test_direct_and_through_overdrive_agree(sim: SimServer, od: Overdrive) -> None:
    direct = openai.AsyncOpenAI(base_url=sim.base_url, api_key="x", max_retries=0)
    plain = await direct.chat.completions.create(model=CHAT, messages=HELLO)
    routed = await through(od).chat.completions.create(model=CHAT, messages=HELLO)
    await direct.close()
    assert routed.choices[0].message.content == plain.choices[0].message.content
    assert routed.usage is not None
    assert routed.usage.completion_tokens > 0


async def test_streamed_chat_through_overdrive(od: Overdrive) -> None:
    stream = await through(od).chat.completions.create(
        model=CHAT, messages=HELLO, stream=True, stream_options={"include_usage": True}
    )
    words = [
        c.choices[0].delta.content async for c in stream if c.choices and c.choices[0].delta.content
    ]
    assert len(words) > 3
    direct = await od.chat(model=CHAT, messages=HELLO)
    assert "".join(words).split() == direct["choices"][0]["message"]["content"].split()


async def test_embeddings_through_overdrive(od: Overdrive) -> None:
    client = through(od)
    single = await client.embeddings.create(model=EMBED, input="lookup: docs")
    batch = await client.embeddings.create(model=EMBED, input=["lookup: docs", "lookup: wiki"])
    assert len(single.data[0].embedding) == len(batch.data[0].embedding) > 0
    assert single.data[0].embedding == pytest.approx(batch.data[0].embedding)
    assert batch.data[0].embedding != pytest.approx(batch.data[1].embedding)


async def test_twenty_identical_concurrent_calls_reach_the_sim_once(
    sim: SimServer, od: Overdrive
) -> None:
    client = through(od)
    prompt: Any = [{"role": "user", "content": "one question, asked twenty times"}]
    answers = await asyncio.gather(
        *(client.chat.completions.create(model=CHAT, messages=prompt) for _ in range(20))
    )
    assert len({a.choices[0].message.content for a in answers}) == 1
    assert sim.stats()["requests"].get("/v1/chat/completions") == 1


async def test_rate_limited_sim_never_shows_429_to_the_caller(sim: SimServer) -> None:
    config = SimConfig(seed=2, ttft_s=0.0, per_token_s=0.0, rpm=600, burst_s=0.5)
    with SimServer(config) as limited:
        upstream = {"name": "sim", "base_url": limited.base_url, "models": [CHAT], "rpm": 600}
        async with Overdrive.from_config({"upstreams": [upstream]}) as engine:
            client = through(engine)
            prompts: list[Any] = [[{"role": "user", "content": f"q{i}"}] for i in range(12)]
            await asyncio.gather(
                *(client.chat.completions.create(model=CHAT, messages=p) for p in prompts)
            )
        stats = limited.stats()
    assert stats["requests"]["/v1/chat/completions"] - stats["rate_limited"] == 12


async def test_injected_server_errors_are_retried(sim: SimServer, od: Overdrive) -> None:
    sim.set_faults(error_rate=1.0)
    try:
        with pytest.raises(UpstreamStatusError) as info:
            await od.chat(model=CHAT, messages=[{"role": "user", "content": "fails"}])
    finally:
        sim.set_faults(error_rate=0.0)
    assert info.value.status == 500
    assert sim.stats()["requests"]["/v1/chat/completions"] == 4


async def test_single_embedding_calls_are_batched_upstream(sim: SimServer, od: Overdrive) -> None:
    texts = [f"tool lookup {i}" for i in range(64)]
    client = through(od)
    routed = await asyncio.gather(*(client.embeddings.create(model=EMBED, input=t) for t in texts))
    direct = openai.AsyncOpenAI(base_url=sim.base_url, api_key="x", max_retries=0)
    expected = await direct.embeddings.create(model=EMBED, input=texts)
    await direct.close()
    requests = sim.stats()["requests"]["/v1/embeddings"]
    assert requests - 1 <= 4  # minus the direct call: 64 calls went up as a few batches
    for reply, want in zip(routed, expected.data, strict=True):
        assert reply.data[0].embedding == pytest.approx(want.embedding)
