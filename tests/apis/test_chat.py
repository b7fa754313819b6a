"""The chat adapter: checks naming the field, token pricing, sampling, usage, the stream rule."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from overdrive import RequestError
from overdrive._calls import chat_call
from overdrive._tokens import estimate_messages_tokens
from overdrive.apis import CHAT
from overdrive.apis.chat import DEFAULT_OUTPUT_TOKENS, chat_stream_complete, is_error_event
from overdrive.cache import call_key
from tests.stream_upstream import DONE, chat_chunk, sse

ASK: Any = [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "Why?"}]
ERROR_EVENT = sse({"error": {"message": "The server overloaded mid-stream.", "type": "server"}})

CLEAN = [chat_chunk("Hello"), chat_chunk(" error-free world"), DONE]
WITH_ERROR = [chat_chunk("Hello"), ERROR_EVENT, DONE]
TRUNCATED = [chat_chunk("Hello"), chat_chunk(" wor")]


# -- checking and pricing ------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"messages": ASK}, "model"),
        ({"model": "  ", "messages": ASK}, "model"),
        ({"model": "m"}, "messages"),
        ({"model": "m", "messages": []}, "messages"),
        ({"model": "m", "messages": "hi"}, "messages"),
        ({"model": "m", "messages": [ASK[0], {"content": "no role"}]}, "messages[1]"),
        ({"model": "m", "messages": ["hi"]}, "messages[0]"),
        ({"model": "m", "messages": ASK, "stream": "yes"}, "stream"),
        ({"model": "m", "messages": ASK, "max_tokens": 0}, "max_tokens"),
        ({"model": "m", "messages": ASK, "max_tokens": True}, "max_tokens"),
        ({"model": "m", "messages": ASK, "max_completion_tokens": 2.5}, "max_completion_tokens"),
    ],
)
def test_a_bad_body_is_refused_naming_its_field(body: dict[str, Any], field: str) -> None:
    with pytest.raises(RequestError) as refused:
        CHAT.call(body)
    assert refused.value.field == field


@pytest.mark.parametrize(
    ("budget", "reserved"),
    [
        ({}, DEFAULT_OUTPUT_TOKENS),
        ({"max_tokens": 40}, 40),
        ({"max_tokens": None, "max_completion_tokens": 7}, 7),
        ({"max_completion_tokens": 7, "max_tokens": 40}, 7),  # the newer name wins
    ],
)
def test_a_call_is_priced_at_its_prompt_plus_its_answer_budget(
    budget: dict[str, Any], reserved: int
) -> None:
    call = CHAT.call({"model": "m", "messages": ASK, **budget})
    assert call.tokens == estimate_messages_tokens(ASK) + reserved
    assert (call.op, call.path, call.model, call.api) == ("chat", "/chat/completions", "m", CHAT)


def test_a_longer_prompt_costs_more() -> None:
    short = CHAT.call({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    long = CHAT.call({"model": "m", "messages": [{"role": "user", "content": "hi " * 400}]})
    assert long.tokens - short.tokens >= 290


def test_stream_is_read_from_the_body() -> None:
    assert CHAT.call({"model": "m", "messages": ASK, "stream": True}).stream
    assert not CHAT.call({"model": "m", "messages": ASK}).stream


@pytest.mark.parametrize(
    ("temperature", "sampled"), [(None, True), (0.7, True), (0, False), (0.0, False), (True, True)]
)
def test_a_call_samples_unless_its_temperature_is_zero(
    temperature: float | None, sampled: bool
) -> None:
    fields = {} if temperature is None else {"temperature": temperature}
    assert CHAT.sampled(CHAT.call({"model": "m", "messages": ASK, **fields})) is sampled


def test_chat_calls_are_never_batched() -> None:
    assert not CHAT.batches
    assert not CHAT.batchable(CHAT.call({"model": "m", "messages": ASK}))


# -- usage -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "usage"),
    [
        ({"usage": {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17}}, (12, 5)),
        ({"usage": {"prompt_tokens": 12}}, (12, 0)),
        ({"usage": {"prompt_tokens": -3, "completion_tokens": "5"}}, (0, 0)),
        ({"usage": {"prompt_tokens": True, "completion_tokens": 2.0}}, (0, 0)),
        ({"usage": None}, None),
        ({"usage": [12, 5]}, None),
        ({"choices": []}, None),
    ],
)
def test_usage_is_read_and_bad_counts_read_as_zero(
    payload: dict[str, Any], usage: tuple[int, int] | None
) -> None:
    assert CHAT.usage(payload) == usage


# -- the stream rule -------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "complete"),
    [
        (CLEAN, True),
        (WITH_ERROR, False),
        (TRUNCATED, False),
        ([chat_chunk("a"), sse({"object": "error", "message": "x"}), DONE], False),
        ([chat_chunk("a"), b"event: error\ndata: {}\n\n", DONE], False),
        ([chat_chunk("a"), b'data: {"error": \n\n', DONE], False),  # unreadable error
        ([chat_chunk("a"), sse({"choices": [], "error": None}), DONE], True),
        ([chat_chunk("a"), b"data: [DONE]\n"], False),  # its event was never ended
        ([chat_chunk("a"), b"data: [DONE]"], False),  # cut inside the line
        ([b": keep-alive\n\n", chat_chunk("a"), DONE], True),
        ([chat_chunk("a").replace(b"\n", b"\r\n"), b"data: [DONE]\r\n\r\n"], True),
        ([], False),
    ],
)
def test_which_chat_streams_are_complete_and_clean(body: list[bytes], complete: bool) -> None:
    assert chat_stream_complete(body) is complete
    assert CHAT.stream_complete(body) is complete


@given(st.sampled_from([CLEAN, WITH_ERROR, TRUNCATED]), st.lists(st.integers(0, 400)))
def test_chunk_boundaries_do_not_change_the_verdict(body: list[bytes], cuts: list[int]) -> None:
    whole = b"".join(body)
    points = sorted({min(cut, len(whole)) for cut in cuts})
    pieces = [whole[a:b] for a, b in zip([0, *points], [*points, len(whole)], strict=True)]
    assert chat_stream_complete(pieces) is chat_stream_complete([whole])


@pytest.mark.parametrize(
    ("event", "error"),
    [
        ({"error": {"message": "overloaded"}}, True),
        ({"object": "error", "message": "x"}, True),
        ({"choices": [], "error": None}, False),
        ({"object": "chat.completion.chunk"}, False),
        (["error"], False),
        ("error", False),
    ],
)
def test_which_events_report_an_error(event: Any, error: bool) -> None:
    assert is_error_event(event) is error
    assert CHAT.is_error_event(event) is error


# -- the cache key ---------------------------------------------------------------


def test_delivery_fields_and_nulls_are_not_part_of_the_key() -> None:
    body = {"model": "m", "messages": ASK, "stream": True, "user": "ann", "seed": None, "n": 2}
    assert CHAT.key_fields(body) == {"model": "m", "messages": ASK, "n": 2}
    options = {"model": "m", "stream_options": {"include_usage": True}}
    assert CHAT.key_fields(options) == {"model": "m"}
    assert CHAT.key_fields(options, streamed=True) == options  # it changes a stream's chunks
    assert "stream_options" not in CHAT.ignored_fields(streamed=True)


KEYED: list[dict[str, Any]] = [
    {"model": "m", "messages": ASK},
    {"model": "m", "messages": ASK, "stream": True, "user": "ann", "timeout": 3},
    {"model": "m", "messages": ASK, "stream_options": {"include_usage": True}},
    {"model": "m", "messages": ASK, "seed": None},
    {"model": "m", "messages": ASK, "seed": 7},
    {"model": "n", "messages": ASK},
]


@pytest.mark.parametrize("streamed", [False, True])
def test_calls_share_a_key_exactly_when_their_key_fields_match(streamed: bool) -> None:
    calls = [chat_call({**body, "stream": streamed}) for body in KEYED]
    for a in calls:
        for b in calls:
            same_key = call_key(a) == call_key(b)
            fields_a = CHAT.key_fields(a.body, streamed=streamed)
            assert same_key is (fields_a == CHAT.key_fields(b.body, streamed=streamed)), (a, b)
