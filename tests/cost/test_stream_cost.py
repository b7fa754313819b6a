"""Streamed answers are priced from the usage their events report, once per upstream stream.

Chat reports usage in a last chunk when asked (``stream_options.include_usage``;
the engine asks, and hides the chunk from a caller who did not),
Responses in ``response.completed``, Messages in ``message_start`` and
``message_delta``; each through the real SDK where one exists, against the sim.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anthropic
import openai
import pytest

from overdrive import Overdrive
from overdrive.apis import CHAT, StreamUsage, hide_usage_events
from overdrive.cost import BudgetExceededError
from overdrive.monitor.names import COST, TOKENS
from overdrive.sim import SimConfig, SimServer

GPT, CLAUDE = "gpt-4o-mini", "claude-sonnet-4"
PER_MILLION = 100.0
WITH_USAGE: dict[str, Any] = {"stream_options": {"include_usage": True}}
PRICES = [{"model": m, "input": PER_MILLION, "output": PER_MILLION} for m in (GPT, CLAUDE)]


@pytest.fixture(scope="module")
def sim() -> Iterator[SimServer]:
    with SimServer(SimConfig(ttft_s=0.0, per_token_s=0.0, models=(GPT, CLAUDE))) as server:
        yield server


def config(sim: SimServer, **extra: Any) -> dict[str, Any]:
    upstreams = [
        {"name": "sim", "base_url": sim.base_url, "models": [GPT]},
        {"name": "claude", "base_url": sim.base_url, "api": "anthropic", "models": [CLAUDE]},
    ]
    return {"upstreams": upstreams, "prices": PRICES, **extra}


def dollars(prompt: int, completion: int) -> float:
    return (prompt + completion) * PER_MILLION / 1e6


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


async def test_a_chat_stream_that_asks_for_usage_is_priced(sim: SimServer) -> None:
    async with Overdrive.from_config(config(sim)) as od:
        request = {"model": GPT, "messages": user("stream me"), **WITH_USAGE}
        chunks = [c async for c in od.stream_chat(**request)]
        booked = od.metrics.value(COST, model=GPT)
        prompt_tokens = od.metrics.value(TOKENS, kind="prompt")
    [usage] = [c["usage"] for c in chunks if c.get("usage")]
    assert booked == pytest.approx(dollars(usage["prompt_tokens"], usage["completion_tokens"]))
    assert booked > 0
    assert prompt_tokens == usage["prompt_tokens"]


async def test_a_chat_stream_that_does_not_ask_is_priced_and_sees_no_usage(
    sim: SimServer,
) -> None:
    async with Overdrive.from_config(config(sim)) as od:
        client = openai.AsyncOpenAI(api_key="unused", http_client=od.http_client())
        stream = await client.chat.completions.create(
            model=GPT, messages=[{"role": "user", "content": "no usage asked"}], stream=True
        )
        chunks = [c async for c in stream]
        booked = od.metrics.value(COST, model=GPT)
        prompt = od.metrics.value(TOKENS, kind="prompt")
        completion = od.metrics.value(TOKENS, kind="completion")
    assert all(c.usage is None and c.choices for c in chunks)  # what it asked for, no more
    assert "".join(c.choices[0].delta.content or "" for c in chunks)
    assert prompt > 0
    assert completion > 0
    assert booked == pytest.approx(dollars(int(prompt), int(completion)))


async def test_asking_and_not_asking_callers_share_one_stream(sim: SimServer) -> None:
    async with Overdrive.from_config(config(sim)) as od:
        asking = {"model": GPT, "messages": user("shared ask"), **WITH_USAGE}
        first = [c async for c in od.stream_chat(**asking)]
        second = [c async for c in od.stream_chat(model=GPT, messages=user("shared ask"))]
        hits = od.metrics.value("overdrive_cache_hits_total")
    assert hits == 1  # the second was the first's stored stream
    assert [c for c in first if c.get("usage")]
    assert not [c for c in second if c.get("usage")]
    assert [c for c in first if c.get("choices")] == second


async def test_ask_stream_usage_off_sends_the_stream_as_it_came(sim: SimServer) -> None:
    async with Overdrive.from_config(config(sim, doors={"ask_stream_usage": False})) as od:
        chunks = [c async for c in od.stream_chat(model=GPT, messages=user("left alone"))]
        assert chunks
        assert od.metrics.value(COST) == 0  # no usage was reported: nothing to price


async def test_a_responses_stream_through_the_sdk_is_priced(sim: SimServer) -> None:
    async with Overdrive.from_config(config(sim)) as od:
        client = openai.AsyncOpenAI(api_key="unused", http_client=od.http_client())
        stream = await client.responses.create(model=GPT, input="a streamed answer", stream=True)
        completed = [e async for e in stream if e.type == "response.completed"]
        booked = od.metrics.value(COST, model=GPT)
    [done] = completed
    assert done.response.usage is not None
    usage = done.response.usage
    assert booked == pytest.approx(dollars(usage.input_tokens, usage.output_tokens))
    assert booked > 0


async def test_a_messages_stream_through_the_sdk_is_priced(sim: SimServer) -> None:
    async with Overdrive.from_config(config(sim)) as od:
        client = anthropic.AsyncAnthropic(
            api_key="unused", base_url="http://127.0.0.1:9", http_client=od.http_client()
        )
        async with client.messages.stream(
            model=CLAUDE, max_tokens=64, messages=[{"role": "user", "content": "hi there"}]
        ) as stream:
            final = await stream.get_final_message()
        booked = od.metrics.value(COST, model=CLAUDE)
    usage = final.usage
    assert booked == pytest.approx(dollars(usage.input_tokens, usage.output_tokens))
    assert booked > 0


async def test_identical_streams_in_flight_are_priced_once(sim: SimServer) -> None:
    slow = SimConfig(ttft_s=0.05, per_token_s=0.0, models=(GPT,))
    with SimServer(slow) as server:
        async with Overdrive.from_config(config(server)) as od:
            request = {"model": GPT, "messages": user("shared"), **WITH_USAGE}

            async def read() -> list[dict[str, Any]]:
                return [c async for c in od.stream_chat(**request)]

            first, second = await asyncio.gather(read(), read())
            booked = od.metrics.value(COST)
    assert first == second
    [usage] = [c["usage"] for c in first if c.get("usage")]
    assert booked == pytest.approx(dollars(usage["prompt_tokens"], usage["completion_tokens"]))


async def test_streams_spend_a_budget_and_are_refused_once_it_is_spent(sim: SimServer) -> None:
    async with Overdrive.from_config(config(sim, budget={"usd": 1e-9})) as od:
        request = {"model": GPT, "messages": user("budget"), **WITH_USAGE}
        assert [c async for c in od.stream_chat(**request)]
        [status] = od.stats()["budgets"]
        with pytest.raises(BudgetExceededError):
            async for _ in od.stream_chat(**{**request, "messages": user("over")}):
                pass
    assert status["spent_usd"] > 0


# -- reading usage out of chunks --------------------------------------------------------


MESSAGES_BODY = (
    b'event: message_start\ndata: {"type":"message_start","message":{"usage":'
    b'{"input_tokens":12,"cache_read_input_tokens":3,"output_tokens":1}}}\n\n'
    b'event: content_block_delta\ndata: {"type":"content_block_delta","delta":{"text":"hi"}}\n\n'
    b'event: message_delta\ndata: {"type":"message_delta","usage":{"output_tokens":9}}\n\n'
    b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
)


@pytest.mark.parametrize("size", [1, 2, 7, 64, len(MESSAGES_BODY)])
def test_usage_is_read_whatever_the_chunk_boundaries(size: int) -> None:
    usage = StreamUsage()
    for start in range(0, len(MESSAGES_BODY), size):
        usage.feed(MESSAGES_BODY[start : start + size])
    assert usage.payload() == {
        "usage": {"input_tokens": 12, "cache_read_input_tokens": 3, "output_tokens": 9}
    }


def test_crlf_events_and_null_usage_chunks() -> None:
    usage = StreamUsage()
    usage.feed(b'data: {"choices":[],"usage":null}\r\n\r\n')
    assert usage.payload() is None
    usage.feed(b'data: {"choices":[],"usage":{"prompt_tokens":2,"completion_tokens":1}}\r\n\r\n')
    assert usage.payload() == {"usage": {"prompt_tokens": 2, "completion_tokens": 1}}


def test_an_event_not_ended_counts_for_nothing() -> None:
    usage = StreamUsage()
    usage.feed(b'data: {"usage":{"prompt_tokens":2,"completion_tokens":1}}\n')  # cut here
    assert usage.payload() is None


CHAT_BODY = (
    b'data: {"choices":[{"delta":{"content":"hi"}}],"usage":null}\n\n'
    b'data: {"choices":[{"delta":{},"finish_reason":"stop"}],"usage":null}\r\n\r\n'
    b'data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2}}\n\n'
    b"data: [DONE]\n\n"
)


async def hidden(body: bytes, size: int) -> bytes:
    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(body), size):
            yield body[start : start + size]

    return b"".join([c async for c in hide_usage_events(chunks(), CHAT.is_usage_event)])


@pytest.mark.parametrize("size", [1, 3, 16, len(CHAT_BODY)])
async def test_only_the_usage_chunk_is_hidden_whatever_the_boundaries(size: int) -> None:
    usage_event = CHAT_BODY.split(b"\r\n\r\n")[1].split(b"\n\n")[0] + b"\n\n"
    assert await hidden(CHAT_BODY, size) == CHAT_BODY.replace(usage_event, b"")


async def test_an_unfinished_event_goes_on_as_it_is() -> None:
    cut = b'data: {"choices":[],"usage":{"prompt_tokens":3'
    assert await hidden(b'data: {"choices":[1]}\n\n' + cut, 5) == b'data: {"choices":[1]}\n\n' + cut
