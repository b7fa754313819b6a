"""The sim's ``POST /v1/responses`` in-process: shapes, events, tools, limits, faults, latency."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from overdrive.sim import SimApp, SimConfig
from overdrive.sim._requests import ApiError
from overdrive.sim._responses import ResponsesAnswer, parse_responses
from overdrive.testing import FakeClock

INSTANT = SimConfig(ttft_s=0.0, per_token_s=0.0)
ASK = "What is the capital of France?"
ASKED: dict[str, Any] = {"model": "gpt-4o-mini", "input": ASK}
TOOL: dict[str, Any] = {
    "type": "function",
    "name": "get_weather",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": False,
    },
    "strict": True,
}
CALL_IT: dict[str, Any] = {"model": "gpt-4o-mini", "input": "Use get_weather.", "tools": [TOOL]}


def connect(app: SimApp, **headers: str) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app)
    return httpx.AsyncClient(transport=transport, base_url="http://sim", headers=headers)


@pytest.fixture
async def sim() -> AsyncIterator[httpx.AsyncClient]:
    async with connect(SimApp(INSTANT)) as client:
        yield client


def events_of(text: str) -> list[tuple[str, dict[str, Any]]]:
    """Each SSE event as (its ``event:`` name, its parsed ``data:``)."""
    events = []
    for block in text.split("\n\n"):
        if block:
            kind, data = block.split("\n")
            events.append((kind.removeprefix("event: "), json.loads(data.removeprefix("data: "))))
    return events


async def stream(sim: httpx.AsyncClient, body: dict[str, Any]) -> list[tuple[str, Any]]:
    response = await sim.post("/v1/responses", json={**body, "stream": True})
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/event-stream"
    return events_of(response.text)


# -- a whole answer --------------------------------------------------------------------


async def test_a_response_has_the_openai_shape(sim: httpx.AsyncClient) -> None:
    body = {**ASKED, "instructions": "Be terse.", "metadata": {"run": "7"}}
    answer = (await sim.post("/v1/responses", json=body)).json()
    assert answer["object"] == "response"
    assert answer["id"].startswith("resp_")
    assert answer["status"] == "completed"
    assert answer["error"] is None
    assert answer["incomplete_details"] is None
    assert (answer["model"], answer["instructions"]) == ("gpt-4o-mini", "Be terse.")
    assert answer["metadata"] == {"run": "7"}  # echoed as sent
    (message,) = answer["output"]
    assert (message["type"], message["role"], message["status"]) == (
        "message",
        "assistant",
        "completed",
    )
    (part,) = message["content"]
    assert part["type"] == "output_text"
    assert part["text"].endswith(".")
    usage = answer["usage"]
    assert usage["output_tokens"] == len(part["text"].split())  # one word, one token
    assert usage["input_tokens"] > 0
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]


async def test_the_answer_depends_on_the_request_alone(sim: httpx.AsyncClient) -> None:
    first = (await sim.post("/v1/responses", json=ASKED)).json()
    again = (await sim.post("/v1/responses", json=ASKED)).json()
    other = (await sim.post("/v1/responses", json={**ASKED, "instructions": "Be brief."})).json()
    assert first["output"] == again["output"]
    assert first["id"] == again["id"]
    assert other["output"] != first["output"]
    as_item = {**ASKED, "input": [{"role": "user", "content": ASK}]}
    assert (await sim.post("/v1/responses", json=as_item)).json()["output"] == first["output"]


async def test_max_output_tokens_cuts_the_answer_short(sim: httpx.AsyncClient) -> None:
    answer = (await sim.post("/v1/responses", json={**ASKED, "max_output_tokens": 3})).json()
    assert answer["status"] == "incomplete"
    assert answer["incomplete_details"] == {"reason": "max_output_tokens"}
    assert answer["usage"]["output_tokens"] == 3
    assert answer["output"][0]["status"] == "incomplete"


async def test_state_fields_are_accepted_and_echoed(sim: httpx.AsyncClient) -> None:
    body = {**ASKED, "previous_response_id": "resp_1", "conversation": "conv_1", "store": False}
    answer = (await sim.post("/v1/responses", json=body)).json()
    assert answer["previous_response_id"] == "resp_1"
    assert answer["conversation"] == {"id": "conv_1"}
    assert answer["store"] is False
    nothing_new = {"model": "gpt-4o-mini", "previous_response_id": "resp_1"}
    assert (await sim.post("/v1/responses", json=nothing_new)).json()["status"] == "completed"


# -- a streamed answer ------------------------------------------------------------------


async def test_a_stream_is_openais_event_sequence(sim: httpx.AsyncClient) -> None:
    events = await stream(sim, ASKED)
    kinds = [kind for kind, _ in events]
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert kinds[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert set(kinds[4:-4]) == {"response.output_text.delta"}
    assert all(kind == data["type"] for kind, data in events)  # the event line says the type
    assert [data["sequence_number"] for _, data in events] == list(range(len(events)))
    assert events[0][1]["response"]["status"] == "in_progress"
    assert events[0][1]["response"]["output"] == []


async def test_the_deltas_make_the_whole_answer(sim: httpx.AsyncClient) -> None:
    events = await stream(sim, ASKED)
    whole = (await sim.post("/v1/responses", json=ASKED)).json()
    text = "".join(data["delta"] for kind, data in events if kind == "response.output_text.delta")
    assert text == whole["output"][0]["content"][0]["text"]
    completed = events[-1][1]["response"]
    assert completed["output"] == whole["output"]
    assert completed["usage"] == whole["usage"]
    item_ids = {data["item_id"] for _, data in events if "item_id" in data}
    assert item_ids == {whole["output"][0]["id"]}


async def test_a_capped_stream_ends_with_response_incomplete(sim: httpx.AsyncClient) -> None:
    events = await stream(sim, {**ASKED, "max_output_tokens": 2})
    assert events[-1][0] == "response.incomplete"
    assert "response.completed" not in [kind for kind, _ in events]
    assert events[-1][1]["response"]["incomplete_details"] == {"reason": "max_output_tokens"}


# -- tools -------------------------------------------------------------------------------


async def test_a_named_tool_is_called_with_arguments_that_fit(sim: httpx.AsyncClient) -> None:
    answer = (await sim.post("/v1/responses", json=CALL_IT)).json()
    (call,) = answer["output"]
    assert call["type"] == "function_call"
    assert call["name"] == "get_weather"
    assert call["call_id"].startswith("call_")
    assert call["id"].startswith("fc_")
    assert list(json.loads(call["arguments"])) == ["city"]
    assert answer["status"] == "completed"
    assert answer["tools"] == [TOOL]


async def test_the_functions_output_gets_a_text_answer(sim: httpx.AsyncClient) -> None:
    call = (await sim.post("/v1/responses", json=CALL_IT)).json()["output"][0]
    result = {"type": "function_call_output", "call_id": call["call_id"], "output": "sunny"}
    items = [{"role": "user", "content": "Use get_weather."}, call, result]
    answer = (await sim.post("/v1/responses", json={**CALL_IT, "input": items})).json()
    assert answer["output"][0]["type"] == "message"
    assert answer["output"][0]["content"][0]["text"]


async def test_tool_choice_forces_forbids_or_names(sim: httpx.AsyncClient) -> None:
    plain = {**CALL_IT, "input": "What is the weather?"}

    async def first_output(body: dict[str, Any]) -> str:
        return str((await sim.post("/v1/responses", json=body)).json()["output"][0]["type"])

    assert await first_output(plain) == "message"
    assert await first_output({**plain, "tool_choice": "required"}) == "function_call"
    named = {"type": "function", "name": "get_weather"}
    assert await first_output({**plain, "tool_choice": named}) == "function_call"
    assert await first_output({**CALL_IT, "tool_choice": "none"}) == "message"
    hosted = {**CALL_IT, "tools": [{"type": "web_search"}]}  # offered, never called
    assert await first_output(hosted) == "message"


async def test_a_streamed_tool_call_sends_its_arguments_in_deltas(
    sim: httpx.AsyncClient,
) -> None:
    events = await stream(sim, CALL_IT)
    whole = (await sim.post("/v1/responses", json=CALL_IT)).json()["output"][0]
    kinds = [kind for kind, _ in events]
    assert kinds[:3] == ["response.created", "response.in_progress", "response.output_item.added"]
    assert kinds[-3:] == [
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    added = events[2][1]["item"]
    assert (added["type"], added["name"], added["arguments"]) == ("function_call", TOOL["name"], "")
    deltas = [d["delta"] for k, d in events if k == "response.function_call_arguments.delta"]
    assert len(deltas) > 1
    assert "".join(deltas) == whole["arguments"] == events[-3][1]["arguments"]
    assert events[-2][1]["item"] == whole


# -- refusals ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": "hi"}, "model"),
        ({"model": "m"}, "input"),
        ({"model": "m", "input": 5}, "input"),
        ({"model": "m", "input": ["hi"]}, "input[0]"),
        ({"model": "m", "input": [{"content": "hi"}]}, "input[0].role"),
        ({"model": "m", "input": [{"role": "user", "content": 1}]}, "input[0].content"),
        ({"model": "m", "input": [{"type": "function_call", "name": "f"}]}, "input[0].call_id"),
        (
            {"model": "m", "input": [{"type": "function_call_output", "call_id": "c"}]},
            "input[0].output",
        ),
        ({"model": "m", "input": [{"type": 3}]}, "input[0].type"),
        ({"model": "m", "input": "hi", "instructions": 1}, "instructions"),
        ({"model": "m", "input": "hi", "max_output_tokens": 0}, "max_output_tokens"),
        ({"model": "m", "input": "hi", "stream": "yes"}, "stream"),
        ({"model": "m", "input": "hi", "tools": {}}, "tools"),
        ({"model": "m", "input": "hi", "tools": [{}]}, "tools[0].type"),
        ({"model": "m", "input": "hi", "tools": [{"type": "function"}]}, "tools[0].name"),
        ({"model": "m", "input": "hi", "tool_choice": "always"}, "tool_choice"),
        ({**CALL_IT, "tool_choice": {"type": "function"}}, "tool_choice.name"),
        ({**CALL_IT, "tool_choice": {"type": "function", "name": "other"}}, "tool_choice.name"),
    ],
)
async def test_bad_input_is_400_naming_the_param(
    sim: httpx.AsyncClient, body: dict[str, Any], param: str
) -> None:
    response = await sim.post("/v1/responses", json=body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["param"], error["type"]) == (param, "invalid_request_error")
    assert error["message"]


async def test_unknown_models_and_keys_are_refused() -> None:
    app = SimApp(SimConfig(ttft_s=0, per_token_s=0, models=("gpt-4o-mini",), api_key="sekret"))
    async with connect(app) as anonymous, connect(app, authorization="Bearer sekret") as known:
        assert (await anonymous.post("/v1/responses", json=ASKED)).status_code == 401
        missing = await known.post("/v1/responses", json={**ASKED, "model": "gpt-9"})
        assert missing.status_code == 404
        assert missing.json()["error"]["code"] == "model_not_found"
        assert (await known.post("/v1/responses", json=ASKED)).status_code == 200
        assert (await known.get("/v1/responses")).status_code == 405


# -- limits, faults, latency, counters ---------------------------------------------------


async def test_tpm_charges_the_input_plus_max_output_tokens(clock: FakeClock) -> None:
    app = SimApp(SimConfig(ttft_s=0, per_token_s=0, tpm=1200), clock=clock)  # holds 20
    request = parse_responses(ASKED, None)
    budget = 20 - request.prompt_tokens
    async with connect(app) as client:
        ok = await client.post("/v1/responses", json={**ASKED, "max_output_tokens": budget})
        assert ok.status_code == 200
        assert ok.headers["x-ratelimit-remaining-tokens"] == "0"
        big = await client.post("/v1/responses", json={**ASKED, "max_output_tokens": 100})
        assert big.status_code == 429
        assert big.json()["error"]["type"] == "tokens"
        assert big.headers["retry-after"]


async def test_injected_errors_answer_500(sim: httpx.AsyncClient) -> None:
    await sim.post("/sim/faults", json={"error_rate": 1.0})
    failed = await sim.post("/v1/responses", json=ASKED)
    assert failed.status_code == 500
    assert failed.json()["error"]["type"] == "server_error"
    assert (await sim.get("/stats")).json()["errors_injected"] == 1


async def test_a_response_waits_ttft_plus_its_tokens(clock: FakeClock) -> None:
    app = SimApp(SimConfig(ttft_s=1.0, per_token_s=0.1, jitter=0.0), clock=clock)
    tokens = ResponsesAnswer(parse_responses(ASKED, None), None).tokens
    async with connect(app) as client:
        task = asyncio.create_task(client.post("/v1/responses", json=ASKED))
        due = 1.0 + 0.1 * tokens
        await clock.run_for(due - 0.05)
        assert not task.done()
        await clock.run_for(0.1)
        response = await task
    assert response.json()["usage"]["output_tokens"] == tokens


async def test_tokens_and_requests_are_counted(sim: httpx.AsyncClient) -> None:
    answer = (await sim.post("/v1/responses", json=ASKED)).json()
    await stream(sim, ASKED)
    stats = (await sim.get("/stats")).json()
    assert stats["requests"]["/v1/responses"] == 2
    assert stats["completion_tokens"] == 2 * answer["usage"]["output_tokens"]
    assert stats["prompt_tokens"] == 2 * answer["usage"]["input_tokens"]


async def test_a_stream_cut_by_shutdown_ends_with_an_error_event(clock: FakeClock) -> None:
    app = SimApp(SimConfig(ttft_s=0.0, per_token_s=1.0, jitter=0.0), clock=clock)
    async with connect(app) as client:
        task = asyncio.create_task(client.post("/v1/responses", json={**ASKED, "stream": True}))
        await clock.run_for(2.5)  # a couple of words out
        app.close()
        response = await task
    events = events_of(response.text)
    kind, error = events[-1]
    assert (kind, error["code"]) == ("error", "server_error")
    assert "response.completed" not in [k for k, _ in events]
    numbers = [data["sequence_number"] for _, data in events]
    assert numbers == sorted(set(numbers))  # still rising: the error is the last event


def test_the_error_event_follows_every_other_event() -> None:
    answer = ResponsesAnswer(parse_responses(ASKED, None), None)
    error = ApiError(503, "The server is shutting down.", kind="server_error")
    frames = [answer.opening(), *answer.deltas(), answer.error_event(error)]
    numbers = [data["sequence_number"] for _, data in events_of(b"".join(frames).decode())]
    assert numbers == list(range(len(numbers)))
