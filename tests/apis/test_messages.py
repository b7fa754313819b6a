"""The Messages adapter: checks, prices, keys, reads usage and judges streams as Anthropic's API."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from overdrive._errors import RequestError
from overdrive._json import dumps, loads
from overdrive.apis import COUNT_TOKENS, MESSAGES, for_request, named
from overdrive.apis.messages import error_type, stream_usage
from overdrive.cache import call_key
from overdrive.doors._answer import error_answer, route

HELLO: list[dict[str, Any]] = [{"role": "user", "content": "Hello, Claude"}]


def body(**extra: Any) -> dict[str, Any]:
    return {"model": "claude-x", "max_tokens": 64, "messages": HELLO, **extra}


def event(name: str, payload: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + dumps(payload) + b"\n\n"


def test_both_endpoints_are_routed_to_their_adapter_the_longest_path_first() -> None:
    assert for_request("POST", "/v1/messages") is MESSAGES
    assert for_request("POST", "/v1/messages/count_tokens") is COUNT_TOKENS
    assert route("POST", "/anthropic/v1/messages") is MESSAGES
    assert for_request("GET", "/v1/messages") is None
    assert named("messages") is MESSAGES
    assert MESSAGES.upstream_api == COUNT_TOKENS.upstream_api == "anthropic"


def test_a_call_is_priced_at_its_input_and_max_tokens() -> None:
    short = MESSAGES.call(body())
    assert (short.op, short.model, short.stream) == ("messages", "claude-x", False)
    assert short.tokens == 4 + 4 + 64  # one turn's framing, "Hello, Claude", the budget
    system = "You are a terse assistant who answers in one line." * 4
    longer = MESSAGES.call(body(system=[{"type": "text", "text": system}], stream=True))
    assert longer.stream
    assert longer.tokens == short.tokens + len(system) // 4


def test_tool_results_and_tool_definitions_are_priced_too() -> None:
    result = "72°F and sunny in Oslo, with a light breeze from the west"
    turns = [
        *HELLO,
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "t1", "name": "w", "input": {}}],
        },
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": "t1", "content": result}],
        },
    ]
    tool = {"name": "get_weather", "input_schema": {"type": "object", "properties": {}}}
    plain = MESSAGES.call(body(messages=turns)).tokens
    assert plain > MESSAGES.call(body()).tokens + len(result) // 4
    assert MESSAGES.call(body(messages=turns, tools=[tool])).tokens > plain


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"max_tokens": None}, "max_tokens"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": True}, "max_tokens"),
        ({"model": ""}, "model"),
        ({"messages": []}, "messages"),
        ({"messages": ["hi"]}, "messages[0]"),
        ({"messages": [{"role": "system", "content": "x"}]}, "messages[0].role"),
        ({"messages": [{"role": "user", "content": 7}]}, "messages[0].content"),
        (
            {"messages": [{"role": "user", "content": [{"text": "no type"}]}]},
            "messages[0].content[0]",
        ),
        ({"system": 3}, "system"),
        ({"system": [{"type": "image"}]}, "system[0]"),
        ({"system": [{"type": "text", "text": None}]}, "system[0].text"),
        ({"tools": {"name": "x"}}, "tools"),
        ({"tools": [{"description": "nameless"}]}, "tools[0]"),
        ({"stream": "yes"}, "stream"),
    ],
)
def test_a_bad_body_names_the_field(change: dict[str, Any], field: str) -> None:
    with pytest.raises(RequestError) as info:
        MESSAGES.call(body(**change))
    assert info.value.field == field


def test_count_tokens_checks_the_input_but_books_no_tokens() -> None:
    call = COUNT_TOKENS.call({"model": "claude-x", "messages": HELLO})
    assert (call.op, call.path, call.tokens, call.stream) == (
        "count_tokens",
        "/messages/count_tokens",
        0,
        False,
    )
    assert not COUNT_TOKENS.sampled(call)
    assert COUNT_TOKENS.usage({"input_tokens": 12}) is None
    with pytest.raises(RequestError) as info:
        COUNT_TOKENS.call({"model": "claude-x", "messages": [{"role": "bot", "content": ""}]})
    assert info.value.field == "messages[0].role"


def test_the_key_leaves_out_delivery_and_an_end_user_id_only() -> None:
    plain = call_key(MESSAGES.call(body()))
    assert call_key(MESSAGES.call(body(metadata={"user_id": "u-42"}))) == plain
    assert call_key(MESSAGES.call(body(temperature=None))) == plain  # a null is no field
    assert call_key(MESSAGES.call(body(metadata={"user_id": "u", "tier": "x"}))) != plain
    assert call_key(MESSAGES.call(body(temperature=0))) != plain
    assert call_key(MESSAGES.call(body(stream=True))) != plain  # a stream is kept as chunks
    count = COUNT_TOKENS.call({"model": "claude-x", "messages": HELLO})
    assert call_key(count) != plain


@pytest.mark.parametrize(
    ("temperature", "sampled"), [(None, True), (1.0, True), (0.3, True), (0, False), (0.0, False)]
)
def test_sampled_unless_temperature_is_zero(temperature: float | None, sampled: bool) -> None:
    extra = {} if temperature is None else {"temperature": temperature}
    assert MESSAGES.sampled(MESSAGES.call(body(**extra))) is sampled


def test_usage_counts_cached_input_tokens_as_input() -> None:
    usage = {
        "input_tokens": 20,
        "cache_creation_input_tokens": 1000,
        "cache_read_input_tokens": 300,
        "output_tokens": 15,
    }
    assert MESSAGES.usage({"usage": usage}) == (1320, 15)
    assert MESSAGES.usage({"usage": {"input_tokens": 5, "output_tokens": -1}}) == (5, 0)
    assert MESSAGES.usage({"type": "message"}) is None


def test_streamed_usage_is_read_from_message_start_and_message_delta() -> None:
    start = {
        "type": "message_start",
        "message": {
            "usage": {"input_tokens": 9, "cache_read_input_tokens": 100, "output_tokens": 1}
        },
    }
    chunks = [
        event("message_start", start),
        event("ping", {"type": "ping"}),
        event("message_delta", {"type": "message_delta", "usage": {"output_tokens": 30}}),
        event("message_stop", {"type": "message_stop"}),
    ]
    assert stream_usage(chunks) == (109, 30)
    assert stream_usage([event("ping", {"type": "ping"})]) is None


def test_a_stream_is_complete_only_after_message_stop_and_no_error() -> None:
    start = event("message_start", {"type": "message_start", "message": {}})
    delta = event("content_block_delta", {"type": "content_block_delta", "delta": {"text": "hi"}})
    stop = event("message_stop", {"type": "message_stop"})
    overloaded = {"type": "error", "error": {"type": "overloaded_error", "message": "busy"}}
    whole = start + delta + stop
    # Chunk boundaries do not matter, even inside an event.
    assert MESSAGES.stream_complete([whole[:17], whole[17:60], whole[60:]])
    assert not MESSAGES.stream_complete([start, delta])  # cut short
    assert not MESSAGES.stream_complete([start, stop[:-1]])  # its last event never ended
    assert not MESSAGES.stream_complete([start, event("error", overloaded), stop])
    # An error payload under another event name is an error all the same.
    assert not MESSAGES.stream_complete([start, event("message_delta", overloaded), stop])
    assert MESSAGES.is_error_event(overloaded)
    assert not MESSAGES.is_error_event({"type": "message_stop"})


@pytest.mark.parametrize(
    ("kind", "status", "anthropic_type"),
    [
        ("invalid_request_error", 400, "invalid_request_error"),
        ("invalid_api_key", 401, "authentication_error"),
        ("model_not_allowed", 403, "permission_error"),
        ("model_not_found", 404, "not_found_error"),
        ("request_too_large", 413, "request_too_large"),
        ("rate_limit_exceeded", 429, "rate_limit_error"),
        ("queue_full", 429, "rate_limit_error"),
        ("upstream_error", 502, "api_error"),
        ("upstream_timeout", 504, "timeout_error"),
        ("queue_timeout", 504, "timeout_error"),
        ("server_error", 500, "api_error"),
        ("overloaded_error", 529, "overloaded_error"),
        ("something_new", 500, "api_error"),
    ],
)
def test_errors_take_anthropic_s_shape_and_types(
    kind: str, status: int, anthropic_type: str
) -> None:
    answer = error_answer(status, "what went wrong", kind, "model", api=MESSAGES)
    assert loads(answer.body) == {
        "type": "error",
        "error": {"type": anthropic_type, "message": "what went wrong"},
    }
    assert error_type(kind) == anthropic_type


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=12,
)
BLOCK = st.fixed_dictionaries(
    {"type": st.sampled_from(["text", "tool_use", "tool_result", "image", "x"]) | JSON},
    optional={"text": JSON, "input": JSON, "content": JSON},
)
TURN = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "assistant"]) | JSON},
    optional={"content": st.text(max_size=8) | st.lists(BLOCK, max_size=3) | JSON},
)


@settings(max_examples=300, deadline=None)
@given(
    messages=st.lists(TURN, max_size=3) | JSON,
    system=JSON | st.lists(BLOCK, max_size=2),
    tools=JSON | st.lists(st.dictionaries(st.sampled_from(["name", "input_schema"]), JSON)),
    max_tokens=JSON,
)
def test_any_body_is_a_call_or_a_request_error(
    messages: Any, system: Any, tools: Any, max_tokens: Any
) -> None:
    candidate = {"model": "c", "messages": messages, "system": system, "tools": tools}
    for api, body_of in (
        (MESSAGES, {**candidate, "max_tokens": max_tokens}),
        (COUNT_TOKENS, candidate),
    ):
        try:
            call = api.call(body_of)
        except RequestError as error:
            refused = error
        else:
            assert call.tokens >= 0
            call_key(call)  # keyed without error too
            continue
        assert refused.field.split("[")[0] in body_of  # it names a field that was sent


def test_nesting_as_deep_as_json_allows_is_priced_without_exhausting_the_stack() -> None:
    deep: Any = "leaf"
    for _ in range(500):
        deep = [{"type": "tool_result", "content": deep}]
    turns = [
        {"role": "user", "content": deep},
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "t", "name": "n", "input": deep}],
        },
    ]
    assert MESSAGES.call(body(messages=turns)).tokens >= 64
