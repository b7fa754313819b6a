"""What each API sets apart for the semantic tier: the last user turn's text, and nothing else."""

from __future__ import annotations

from typing import Any

import pytest

from overdrive.apis import CHAT, EMBEDDINGS, MESSAGES, RESPONSES
from overdrive.apis._semantic import QUERY

SYSTEM = {"role": "system", "content": "Be brief."}


def chat(*messages: Any, **extra: Any) -> dict[str, Any]:
    return {"model": "m", "messages": list(messages), **extra}


def test_chat_sets_apart_the_last_user_text_and_keeps_the_rest_as_scope() -> None:
    split = CHAT.semantic_split(chat(SYSTEM, {"role": "user", "content": "Capital of France?"}))
    assert split is not None
    scope, text = split
    assert text == "Capital of France?"
    assert scope["messages"] == [SYSTEM, {"role": "user", "content": QUERY}]


def test_two_questions_in_one_conversation_share_a_scope_but_not_the_earlier_turns() -> None:
    first = CHAT.semantic_split(chat(SYSTEM, {"role": "user", "content": "a"}))
    second = CHAT.semantic_split(chat(SYSTEM, {"role": "user", "content": "b"}))
    earlier = CHAT.semantic_split(
        chat(
            SYSTEM,
            {"role": "user", "content": "x"},
            {"role": "assistant", "content": "y"},
            {"role": "user", "content": "b"},
        )
    )
    assert first is not None
    assert second is not None
    assert earlier is not None
    assert first[0] == second[0] != earlier[0]


def test_delivery_fields_stay_out_of_the_scope_as_they_stay_out_of_the_key() -> None:
    plain = CHAT.semantic_split(chat({"role": "user", "content": "a"}))
    tagged = CHAT.semantic_split(chat({"role": "user", "content": "a"}, user="ann", timeout=3))
    hot = CHAT.semantic_split(chat({"role": "user", "content": "a"}, temperature=1.5))
    assert plain is not None
    assert tagged is not None
    assert hot is not None
    assert plain[0] == tagged[0] != hot[0]


@pytest.mark.parametrize(
    "last",
    [
        {"role": "assistant", "content": "an answer"},
        {"role": "tool", "content": "42", "tool_call_id": "c1"},
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]},
        {"role": "user", "content": [{"type": "text", "text": "what is"}, {"type": "image_url"}]},
        {"role": "user", "content": "   "},
        {"role": "user", "content": None},
    ],
)
def test_a_last_turn_that_is_not_only_user_text_is_not_matched(last: dict[str, Any]) -> None:
    assert CHAT.semantic_split(chat(SYSTEM, last)) is None


def test_text_parts_are_joined() -> None:
    parts = [{"type": "text", "text": "one"}, {"type": "text", "text": "two"}]
    split = CHAT.semantic_split(chat({"role": "user", "content": parts}))
    assert split is not None
    assert split[1] == "one\ntwo"


def test_responses_input_string_or_last_user_item() -> None:
    as_text = RESPONSES.semantic_split({"model": "m", "input": "hi", "instructions": "Be kind."})
    assert as_text is not None
    assert as_text == ({"model": "m", "input": QUERY, "instructions": "Be kind."}, "hi")
    item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}
    as_item = RESPONSES.semantic_split({"model": "m", "input": [item]})
    assert as_item is not None
    assert as_item[1] == "hi"
    output = {"type": "function_call_output", "call_id": "c", "output": "{}"}
    assert RESPONSES.semantic_split({"model": "m", "input": [item, output]}) is None


def test_messages_last_user_text_blocks() -> None:
    body = {
        "model": "c",
        "max_tokens": 9,
        "system": "Be brief.",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hello"}]}],
    }
    split = MESSAGES.semantic_split(body)
    assert split is not None
    scope, text = split
    assert text == "hello"
    assert scope["system"] == "Be brief."
    with_image = {**body, "messages": [{"role": "user", "content": [{"type": "image"}]}]}
    assert MESSAGES.semantic_split(with_image) is None


def test_embeddings_are_never_matched_by_meaning() -> None:
    assert EMBEDDINGS.semantic_split({"model": "e", "input": "hello"}) is None
