"""The Responses adapter: checks naming the field, pricing, the key, sharing, streams, usage."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from overdrive import RequestError
from overdrive._calls import shares_answers
from overdrive._tokens import estimate_tokens
from overdrive.apis import RESPONSES, for_request, named
from overdrive.apis.chat import DEFAULT_OUTPUT_TOKENS
from overdrive.apis.responses import is_error_event, responses_stream_complete
from overdrive.cache import call_key

ASK = "What is the weather in Oslo?"
TOOL = {"type": "function", "name": "get_weather", "parameters": {"type": "object"}}
CALLED = {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": "{}"}
RESULT = {"type": "function_call_output", "call_id": "call_1", "output": "sunny"}


def body(**fields: Any) -> dict[str, Any]:
    return {"model": "m", "input": ASK, **fields}


def event(kind: str, **fields: Any) -> bytes:
    """One Responses SSE event as OpenAI frames it: an ``event:`` line and its ``data:``."""
    data = json.dumps({"type": kind, "sequence_number": 0, **fields})
    return f"event: {kind}\ndata: {data}\n\n".encode()


CREATED = event("response.created", response={"id": "resp_1", "error": None})
DELTA = event("response.output_text.delta", delta="Sunny", item_id="msg_1")
COMPLETED = event("response.completed", response={"id": "resp_1", "error": None})


# -- routing -------------------------------------------------------------------------


def test_it_answers_post_responses_on_any_prefix() -> None:
    assert for_request("POST", "/v1/responses") is RESPONSES
    assert for_request("POST", "/openai/v1/responses") is RESPONSES
    assert named("responses") is RESPONSES
    # Retrieving a stored response, or its input items, is not a call to answer.
    assert for_request("GET", "/v1/responses") is None
    assert for_request("POST", "/v1/responses/resp_1/cancel") is None


# -- checking ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"model": None}, "model"),
        ({"input": None}, "input"),
        ({"input": []}, "input"),
        ({"input": 7}, "input"),
        ({"input": ["hi"]}, "input[0]"),
        ({"input": [{"content": "no role"}]}, "input[0].role"),
        ({"input": [{"role": "user", "content": 3}]}, "input[0].content"),
        ({"input": [{"role": "user", "content": [{"text": "no type"}]}]}, "input[0].content[0]"),
        ({"input": [{**CALLED, "arguments": {}}]}, "input[0].arguments"),
        ({"input": [{**CALLED, "call_id": None}]}, "input[0].call_id"),
        ({"input": [{**RESULT, "output": 1}]}, "input[0].output"),
        ({"input": [{"type": 5}]}, "input[0].type"),
        ({"instructions": ["be terse"]}, "instructions"),
        ({"tools": {"type": "function"}}, "tools"),
        ({"tools": [{"name": "no type"}]}, "tools[0]"),
        ({"tools": [{"type": "function"}]}, "tools[0].name"),
        ({"tools": [{**TOOL, "parameters": "object"}]}, "tools[0].parameters"),
        ({"tool_choice": "always"}, "tool_choice"),
        ({"tool_choice": {"type": "function"}}, "tool_choice.name"),
        ({"max_output_tokens": 0}, "max_output_tokens"),
        ({"max_output_tokens": True}, "max_output_tokens"),
        ({"max_output_tokens": 1.5}, "max_output_tokens"),
        ({"stream": "yes"}, "stream"),
        ({"background": 1}, "background"),
        ({"previous_response_id": ""}, "previous_response_id"),
        ({"conversation": {"name": "no id"}}, "conversation"),
    ],
)
def test_a_bad_body_is_refused_naming_its_field(fields: dict[str, Any], field: str) -> None:
    with pytest.raises(RequestError) as refused:
        RESPONSES.call(body(**fields))
    assert refused.value.field == field


@pytest.mark.parametrize(
    "fields",
    [
        {"input": [{"role": "user", "content": ASK}]},
        {"input": [{"type": "message", "role": "user", "content": [{"type": "input_text"}]}]},
        {"input": [{"role": "user", "content": ASK}, CALLED, RESULT]},
        {"input": [{"type": "reasoning", "summary": []}]},  # the upstream's to judge
        {"input": [{**RESULT, "output": [{"type": "input_text", "text": "sunny"}]}]},
        {"input": None, "previous_response_id": "resp_1"},  # a continuation needs no input
        {"input": [], "conversation": "conv_1"},
        {"tools": [TOOL, {"type": "web_search"}], "tool_choice": "required"},
        {"tool_choice": {"type": "function", "name": "get_weather"}, "tools": [TOOL]},
        {"conversation": {"id": "conv_1"}, "background": False, "stream": False},
    ],
)
def test_a_good_body_is_accepted(fields: dict[str, Any]) -> None:
    call = RESPONSES.call(body(**fields))
    assert (call.op, call.path, call.model, call.api) == ("responses", "/responses", "m", RESPONSES)


# -- pricing -------------------------------------------------------------------------


def test_a_call_is_priced_at_its_input_plus_its_answer_budget() -> None:
    bare = RESPONSES.call(body()).tokens
    assert RESPONSES.call(body(max_output_tokens=40)).tokens == bare - DEFAULT_OUTPUT_TOKENS + 40
    long_ask = RESPONSES.call(body(input=ASK + " Tell me more." * 100)).tokens
    assert long_ask - bare >= estimate_tokens(" Tell me more." * 100)


def test_instructions_tools_and_items_cost_tokens_too() -> None:
    bare = RESPONSES.call(body()).tokens
    instructions = "Answer as a weather forecaster would, in one sentence. " * 10
    assert RESPONSES.call(body(instructions=instructions)).tokens >= bare + 100
    assert RESPONSES.call(body(tools=[TOOL])).tokens > bare
    output = {**RESULT, "output": "sunny and warm " * 100}
    items = [{"role": "user", "content": ASK}, CALLED, output]
    assert RESPONSES.call(body(input=items)).tokens >= bare + 300


def test_stream_is_read_from_the_body() -> None:
    assert RESPONSES.call(body(stream=True)).stream
    assert not RESPONSES.call(body()).stream


# -- the key and sharing ---------------------------------------------------------------


@pytest.mark.parametrize(
    "delivery",
    [
        {"stream_options": {"include_obfuscation": False}},
        {"user": "ann"},
        {"safety_identifier": "hash-of-ann"},
        {"prompt_cache_key": "tenant-7"},
        {"timeout": 30},
        {"temperature": None},
    ],
)
def test_delivery_fields_leave_the_key_alone(delivery: dict[str, Any]) -> None:
    assert call_key(RESPONSES.call(body())) == call_key(RESPONSES.call(body(**delivery)))


@pytest.mark.parametrize(
    "content",
    [
        {"instructions": "Be terse."},
        {"previous_response_id": "resp_1"},
        {"max_output_tokens": 40},
        {"tools": [TOOL]},
        {"temperature": 0},
        {"store": False},
        {"metadata": {"run": "7"}},  # echoed back in the response
        {"stream": True},  # a stream is kept as chunks, under a key of its own
    ],
)
def test_what_changes_the_answer_changes_the_key(content: dict[str, Any]) -> None:
    assert call_key(RESPONSES.call(body())) != call_key(RESPONSES.call(body(**content)))


def test_stream_options_are_part_of_a_streams_key() -> None:
    plain = RESPONSES.call(body(stream=True))
    obfuscated = RESPONSES.call(body(stream=True, stream_options={"include_obfuscation": True}))
    assert call_key(plain) != call_key(obfuscated)


def test_a_continuation_of_another_response_is_a_different_call() -> None:
    first = RESPONSES.call(body(previous_response_id="resp_1"))
    other = RESPONSES.call(body(previous_response_id="resp_2"))
    assert call_key(first) != call_key(other)
    assert RESPONSES.shares(first)  # a stored response never changes: its continuation shares


@pytest.mark.parametrize(
    "state",
    [
        {"conversation": "conv_1"},
        {"conversation": {"id": "conv_1"}},
        {"background": True},
        {"prompt": {"id": "pmpt_1"}},  # no version: whatever version is current
    ],
)
def test_calls_on_changing_upstream_state_never_share(state: dict[str, Any]) -> None:
    call = RESPONSES.call(body(temperature=0, **state))
    assert not RESPONSES.shares(call)
    for policy in ("share", "seeded", "fresh"):
        assert not shares_answers(call, policy)


def test_plain_calls_share_as_the_policy_says() -> None:
    pinned = RESPONSES.call(body(prompt={"id": "pmpt_1", "version": "3"}, background=False))
    assert RESPONSES.shares(pinned)
    assert shares_answers(RESPONSES.call(body()), "share")
    assert not shares_answers(RESPONSES.call(body()), "fresh")  # it samples at temperature 1
    assert shares_answers(RESPONSES.call(body(temperature=0)), "fresh")


@pytest.mark.parametrize(
    ("temperature", "sampled"),
    [(None, True), (0, False), (0.0, False), (0.7, True), (2, True), (True, True), ("0", True)],
)
def test_a_call_samples_unless_its_temperature_is_zero(temperature: Any, sampled: bool) -> None:
    assert RESPONSES.sampled(RESPONSES.call(body(temperature=temperature))) is sampled


# -- usage ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "usage"),
    [
        ({"usage": {"input_tokens": 12, "output_tokens": 30, "total_tokens": 42}}, (12, 30)),
        ({"usage": {"input_tokens": 12}}, (12, 0)),
        ({"usage": {"input_tokens": -1, "output_tokens": "3"}}, (0, 0)),
        ({"usage": {"prompt_tokens": 5, "completion_tokens": 6}}, (0, 0)),  # chat's names
        ({"usage": None}, None),
        ({}, None),
    ],
)
def test_usage_reads_input_and_output_tokens(
    payload: dict[str, Any], usage: tuple[int, int] | None
) -> None:
    assert RESPONSES.usage(payload) == usage


# -- streams -------------------------------------------------------------------------


def test_a_stream_is_complete_once_response_completed_arrives() -> None:
    assert responses_stream_complete([CREATED, DELTA, COMPLETED])
    assert RESPONSES.stream_complete([CREATED, DELTA, COMPLETED])


@pytest.mark.parametrize(
    "chunks",
    [
        [CREATED, DELTA],  # cut before the terminal event
        [CREATED, DELTA, COMPLETED[:-1]],  # its blank line never came
        [CREATED, event("error", code="server_error", message="overloaded"), COMPLETED],
        [CREATED, event("response.failed", response={"error": {"code": "server_error"}})],
        [CREATED, event("response.incomplete", response={"status": "incomplete"})],
        [CREATED, b'data: {"error": {"message": "overloaded"}}\n\n', COMPLETED],
        [CREATED, b'data: {"error": cut\n\n', COMPLETED],
        [],
    ],
)
def test_a_cut_or_failed_stream_is_not_complete(chunks: list[bytes]) -> None:
    assert not responses_stream_complete(chunks)


def test_events_without_their_event_line_are_read_by_their_type() -> None:
    def data_only(frame: bytes) -> bytes:
        return frame.split(b"\n", 1)[1]  # as a proxy that drops ``event:`` lines sends it

    assert responses_stream_complete([data_only(CREATED), data_only(COMPLETED)])
    failed = data_only(event("response.failed", response={}))
    assert not responses_stream_complete([failed, data_only(COMPLETED)])
    assert not responses_stream_complete([data_only(CREATED), b"data: not json\n\n"])


@given(st.data())
def test_chunk_boundaries_do_not_matter(data: st.DataObject) -> None:
    stream = CREATED + DELTA + COMPLETED
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=6)))
    chunks = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    assert responses_stream_complete(chunks)


@pytest.mark.parametrize(
    ("payload", "failed"),
    [
        ({"type": "error", "code": "server_error", "message": "overloaded"}, True),
        ({"type": "response.failed", "response": {"error": {"code": "server_error"}}}, True),
        ({"error": {"message": "overloaded"}}, True),
        ({"object": "error", "message": "vLLM's shape"}, True),
        ({"type": "response.created", "response": {"error": None}}, False),
        ({"type": "response.incomplete", "response": {"status": "incomplete"}}, False),
        ({"type": "response.output_text.delta", "delta": '"error"'}, False),
        (["error"], False),
    ],
)
def test_error_events(payload: Any, failed: bool) -> None:
    assert is_error_event(payload) is failed
    assert RESPONSES.is_error_event(payload) is failed
