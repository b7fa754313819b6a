"""The sim's Anthropic Messages endpoints in-process: answers, streams, tools, caching, limits."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from overdrive._json import loads
from overdrive.sim import SimApp, SimConfig
from overdrive.sim._messages import MessagesAnswer, MessagesError, PromptCache, parse_messages
from overdrive.testing import FakeClock

INSTANT = SimConfig(ttft_s=0.0, per_token_s=0.0)
HELLO = [{"role": "user", "content": "Tell me about the harbor at dawn."}]
WEATHER = {
    "name": "get_weather",
    "description": "The weather in a city",
    "input_schema": {
        "type": "object",
        "required": ["city", "unit"],
        "properties": {"city": {"type": "string"}, "unit": {"enum": ["celsius", "fahrenheit"]}},
    },
}


def ask(**extra: Any) -> dict[str, Any]:
    return {"model": "claude-x", "max_tokens": 200, "messages": HELLO, **extra}


def connect(app: SimApp, **headers: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://sim", headers=headers
    )


@pytest.fixture
async def sim() -> AsyncIterator[httpx.AsyncClient]:
    async with connect(SimApp(INSTANT)) as client:
        yield client


def events(body: bytes) -> list[tuple[str, dict[str, Any]]]:
    """Each ``(event name, parsed data)`` of an SSE body, checking the framing on the way."""
    found = []
    for block in body.decode().split("\n\n"):
        if not block:
            continue
        name_line, data_line = block.split("\n")
        name, data = name_line.removeprefix("event: "), data_line.removeprefix("data: ")
        payload = loads(data)
        assert payload["type"] == name  # Anthropic names each event twice
        found.append((name, payload))
    return found


def assert_error(response: httpx.Response, status: int, kind: str) -> str:
    assert response.status_code == status
    body = response.json()
    assert body["type"] == "error"
    assert body["error"]["type"] == kind
    assert set(body["error"]) == {"type", "message"}
    message: str = body["error"]["message"]
    return message


async def test_an_answer_is_a_message_and_the_same_request_gets_the_same_bytes(
    sim: httpx.AsyncClient,
) -> None:
    first = await sim.post("/v1/messages", json=ask())
    again = await sim.post("/v1/messages", json=ask())
    other = await sim.post("/v1/messages", json=ask(system="Answer like a pirate."))
    assert first.status_code == 200
    assert first.content == again.content
    message = first.json()
    assert (message["type"], message["role"], message["model"]) == (
        "message",
        "assistant",
        "claude-x",
    )
    assert message["id"].startswith("msg_")
    (block,) = message["content"]
    assert block["type"] == "text"
    assert block["text"] != other.json()["content"][0]["text"]
    assert message["stop_reason"] == "end_turn"
    usage = message["usage"]
    assert usage["output_tokens"] == len(block["text"].split())
    assert usage["input_tokens"] > 0
    assert usage["cache_creation_input_tokens"] == usage["cache_read_input_tokens"] == 0


async def test_max_tokens_cuts_the_answer_short(sim: httpx.AsyncClient) -> None:
    message = (await sim.post("/v1/messages", json=ask(max_tokens=5))).json()
    assert message["stop_reason"] == "max_tokens"
    assert message["usage"]["output_tokens"] == 5
    assert len(message["content"][0]["text"].split()) == 5


async def test_an_answer_takes_ttft_plus_its_tokens_on_the_clock(clock: FakeClock) -> None:
    app = SimApp(SimConfig(ttft_s=1.0, per_token_s=0.1, jitter=0.0), clock=clock)
    async with connect(app) as client:
        task = asyncio.create_task(client.post("/v1/messages", json=ask(max_tokens=10)))
        await clock.run_for(1.0 + 0.1 * 10 - 0.05)
        assert not task.done()
        await clock.run_for(0.1)
        assert (await task).json()["usage"]["output_tokens"] == 10


async def test_a_stream_is_anthropic_s_event_sequence_with_a_ping(sim: httpx.AsyncClient) -> None:
    whole = (await sim.post("/v1/messages", json=ask())).json()
    response = await sim.post("/v1/messages", json=ask(stream=True))
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/event-stream"
    stream = events(response.content)
    names = [name for name, _ in stream]
    assert names[:3] == ["message_start", "ping", "content_block_start"]
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert set(names[3:-3]) == {"content_block_delta"}
    start = stream[0][1]["message"]
    assert (start["id"], start["content"], start["stop_reason"]) == (whole["id"], [], None)
    assert start["usage"]["input_tokens"] == whole["usage"]["input_tokens"]
    text = "".join(
        payload["delta"]["text"] for name, payload in stream if name == "content_block_delta"
    )
    assert text == whole["content"][0]["text"]
    delta = stream[-2][1]
    assert delta["delta"]["stop_reason"] == "end_turn"
    assert delta["usage"]["output_tokens"] == whole["usage"]["output_tokens"]


async def test_a_named_tool_is_called_and_its_result_answered_in_text(
    sim: httpx.AsyncClient,
) -> None:
    asking = [{"role": "user", "content": "What does get_weather say about Oslo?"}]
    call = (await sim.post("/v1/messages", json=ask(messages=asking, tools=[WEATHER]))).json()
    assert call["stop_reason"] == "tool_use"
    (use,) = call["content"]
    assert (use["type"], use["name"]) == ("tool_use", "get_weather")
    assert use["id"].startswith("toolu_")
    assert set(use["input"]) == {"city", "unit"}
    assert use["input"]["unit"] == "celsius"
    result = {"type": "tool_result", "tool_use_id": use["id"], "content": "12°C, light rain"}
    turns = [
        *asking,
        {"role": "assistant", "content": call["content"]},
        {"role": "user", "content": [result]},
    ]
    reply = (await sim.post("/v1/messages", json=ask(messages=turns, tools=[WEATHER]))).json()
    assert reply["stop_reason"] == "end_turn"
    assert reply["content"][0]["type"] == "text"
    assert reply["usage"]["input_tokens"] > call["usage"]["input_tokens"]


async def test_a_streamed_tool_call_sends_its_input_as_json_pieces(sim: httpx.AsyncClient) -> None:
    body = ask(tools=[WEATHER], tool_choice={"type": "any"})
    whole = (await sim.post("/v1/messages", json=body)).json()
    stream = events((await sim.post("/v1/messages", json={**body, "stream": True})).content)
    started = stream[2][1]["content_block"]
    assert (started["type"], started["name"], started["input"]) == ("tool_use", "get_weather", {})
    pieces = [p["delta"] for n, p in stream if n == "content_block_delta"]
    assert len(pieces) > 1
    assert {piece["type"] for piece in pieces} == {"input_json_delta"}
    assert loads("".join(piece["partial_json"] for piece in pieces)) == whole["content"][0]["input"]
    assert stream[-2][1]["delta"]["stop_reason"] == "tool_use"


@pytest.mark.parametrize(
    ("choice", "kind"),
    [
        ({"type": "auto"}, "text"),  # the prompt names no tool
        ({"type": "any"}, "tool_use"),
        ({"type": "tool", "name": "get_weather"}, "tool_use"),
        ({"type": "none"}, "text"),
    ],
)
async def test_tool_choice_decides(
    sim: httpx.AsyncClient, choice: dict[str, str], kind: str
) -> None:
    message = (await sim.post("/v1/messages", json=ask(tools=[WEATHER], tool_choice=choice))).json()
    assert message["content"][0]["type"] == kind


async def test_prompt_caching_writes_then_reads_the_marked_prefix(sim: httpx.AsyncClient) -> None:
    manual = "The harbor manual, chapter one. " * 200
    system = [{"type": "text", "text": manual, "cache_control": {"type": "ephemeral"}}]
    first = (await sim.post("/v1/messages", json=ask(system=system))).json()["usage"]
    second = (await sim.post("/v1/messages", json=ask(system=system))).json()["usage"]
    other_question = [{"role": "user", "content": "And at dusk?"}]
    third = (
        await sim.post("/v1/messages", json=ask(system=system, messages=other_question))
    ).json()
    cached = len(manual) // 4
    assert (first["cache_creation_input_tokens"], first["cache_read_input_tokens"]) == (cached, 0)
    assert (second["cache_creation_input_tokens"], second["cache_read_input_tokens"]) == (0, cached)
    assert first["input_tokens"] == second["input_tokens"] < cached  # the uncached rest
    assert third["usage"]["cache_read_input_tokens"] == cached  # the same prefix, a new question


def test_the_prompt_cache_is_bounded() -> None:
    cache = PromptCache(capacity=2)

    def usage(text: str) -> tuple[int, int, int]:
        system = [{"type": "text", "text": text, "cache_control": {"type": "ephemeral"}}]
        return cache.usage(parse_messages(ask(system=system), None))

    for text in ("one" * 40, "two" * 40, "three" * 40):
        assert usage(text)[1] > 0  # written
    assert len(cache) == 2
    assert usage("three" * 40)[2] > 0  # still there: read
    assert usage("one" * 40)[1] > 0  # forgotten first: written again


async def test_limits_answer_with_anthropic_headers_and_a_429_rate_limit_error(
    clock: FakeClock,
) -> None:
    app = SimApp(SimConfig(ttft_s=0, per_token_s=0, rpm=60, tpm=60_000), clock=clock)
    async with connect(app) as client:
        ok = await client.post("/v1/messages", json=ask())
        refused = await client.post("/v1/messages", json=ask())
        clock.advance(1.0)
        again = await client.post("/v1/messages", json=ask())
    assert ok.status_code == again.status_code == 200
    headers = ok.headers
    assert headers["anthropic-ratelimit-requests-limit"] == "60"
    assert headers["anthropic-ratelimit-requests-remaining"] == "0"
    assert headers["anthropic-ratelimit-tokens-limit"] == "60000"
    reset = datetime.fromisoformat(headers["anthropic-ratelimit-requests-reset"])
    assert reset.tzinfo is not None
    assert not any(name.startswith("x-ratelimit-") for name in headers)
    assert "rate limit" in assert_error(refused, 429, "rate_limit_error").lower()
    assert refused.headers["retry-after"] == "1"
    assert "retry-after-ms" not in refused.headers
    assert refused.headers["anthropic-ratelimit-requests-remaining"] == "0"


async def test_the_sim_s_key_is_checked_in_x_api_key_or_as_a_bearer() -> None:
    app = SimApp(SimConfig(ttft_s=0, per_token_s=0, api_key="sk-sim"))
    async with connect(app) as client:
        assert (
            await client.post("/v1/messages", json=ask(), headers={"x-api-key": "sk-sim"})
        ).status_code == 200
        bearer = await client.post(
            "/v1/messages", json=ask(), headers={"authorization": "Bearer sk-sim"}
        )
        missing = await client.post("/v1/messages", json=ask())
        wrong_bearer = await client.post(
            "/v1/messages", json=ask(), headers={"authorization": "Bearer sk-other"}
        )
        counted = await client.post(
            "/v1/messages/count_tokens", json=ask(), headers={"x-api-key": "no"}
        )
    assert bearer.status_code == 200
    for refused in (missing, wrong_bearer, counted):
        assert_error(refused, 401, "authentication_error")


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"max_tokens": None}, "max_tokens"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "system", "content": "x"}]}, "messages.0.role"),
        (
            {"messages": [{"role": "user", "content": [{"text": "typeless"}]}]},
            "messages.0.content.0.type",
        ),
        ({"system": [{"type": "text"}]}, "system.0.text"),
        ({"tools": [{"input_schema": {}}]}, "tools.0.name"),
        ({"tool_choice": {"type": "tool", "name": "missing"}}, "tool_choice.name"),
        ({"stream": "yes"}, "stream"),
    ],
)
async def test_a_bad_body_is_an_invalid_request_error_naming_the_field(
    sim: httpx.AsyncClient, change: dict[str, Any], param: str
) -> None:
    message = assert_error(
        await sim.post("/v1/messages", json=ask(**change)), 400, "invalid_request_error"
    )
    assert message.startswith(f"{param}:")


async def test_malformed_json_an_unknown_model_and_faults_keep_the_shape() -> None:
    app = SimApp(SimConfig(ttft_s=0, per_token_s=0, models=("claude-x",)))
    async with connect(app) as client:
        garbled = await client.post("/v1/messages", content=b"{not json")
        unknown = await client.post("/v1/messages", json=ask(model="claude-nope"))
        app.set_faults(error_rate=1.0)
        failed = await client.post("/v1/messages", json=ask())
    assert_error(garbled, 400, "invalid_request_error")
    assert "claude-nope" in assert_error(unknown, 404, "not_found_error")
    assert_error(failed, 500, "api_error")
    assert app.stats()["errors_injected"] == 1


async def test_count_tokens_counts_what_a_message_would_and_is_not_rate_limited(
    clock: FakeClock,
) -> None:
    app = SimApp(SimConfig(ttft_s=0, per_token_s=0, rpm=60), clock=clock)
    body = ask(system="Be brief.", tools=[WEATHER])
    async with connect(app) as client:
        counts = [await client.post("/v1/messages/count_tokens", json=body) for _ in range(5)]
        message = (await client.post("/v1/messages", json=body)).json()
    assert {r.status_code for r in counts} == {200}
    assert counts[0].json() == {"input_tokens": message["usage"]["input_tokens"]}
    assert app.stats()["requests"]["/v1/messages/count_tokens"] == 5


async def test_a_stream_cut_by_shutdown_ends_with_an_error_event(clock: FakeClock) -> None:
    app = SimApp(SimConfig(ttft_s=0.1, per_token_s=1.0, jitter=0.0), clock=clock)
    async with connect(app) as client:
        task = asyncio.create_task(client.post("/v1/messages", json=ask(stream=True)))
        await clock.run_for(2.5)
        app.close()
        response = await task
    stream = events(response.content)
    assert [name for name, _ in stream][:3] == ["message_start", "ping", "content_block_start"]
    name, error = stream[-1]
    assert name == "error"
    assert error["error"]["type"] == "overloaded_error"
    assert "message_stop" not in {name for name, _ in stream}


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=12,
)
BLOCK = st.fixed_dictionaries(
    {"type": st.sampled_from(["text", "tool_use", "tool_result"]) | JSON},
    optional={"text": JSON, "input": JSON, "content": JSON, "cache_control": JSON},
)
TURN = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "assistant"]) | JSON},
    optional={"content": st.text(max_size=8) | st.lists(BLOCK, max_size=3) | JSON},
)


@settings(max_examples=300, deadline=None)
@given(
    messages=st.lists(TURN, min_size=1, max_size=3) | JSON,
    system=JSON | st.lists(BLOCK, max_size=2),
    tools=JSON | st.lists(st.fixed_dictionaries({"name": JSON}, optional={"input_schema": JSON})),
    tool_choice=JSON,
)
def test_a_hostile_body_is_a_4xx_never_a_crash(
    messages: Any, system: Any, tools: Any, tool_choice: Any
) -> None:
    body = ask(messages=messages, system=system, tools=tools, tool_choice=tool_choice)
    try:
        request = parse_messages(body, None)
    except MessagesError as error:
        refused = error
    else:
        answer = MessagesAnswer(request, PromptCache())
        assert loads(answer.message())["usage"]["input_tokens"] >= 0
        assert answer.closing().endswith(b'event: message_stop\ndata: {"type":"message_stop"}\n\n')
        return
    assert refused.status == 400
    assert loads(refused.body())["error"]["type"] == "invalid_request_error"


async def test_an_unknown_path_under_messages_is_refused_in_anthropics_shape(
    sim: httpx.AsyncClient,
) -> None:
    refused = await sim.get("/v1/messages/")
    assert refused.status_code == 404
    assert refused.json()["type"] == "error"
    assert refused.json()["error"]["type"] == "not_found_error"
    elsewhere = await sim.get("/v1/nothing")
    assert elsewhere.json()["error"]["code"] == "unknown_url"  # OpenAI's shape
