"""The opt-in prompt cache hints: set only when asked, never over the caller's own."""

from __future__ import annotations

from typing import Any

from overdrive.apis import CHAT, MESSAGES, RESPONSES
from overdrive.config import AffinityConfig
from overdrive.upstream import CacheHints

LONG = "Policy text. " * 600  # ~2k tokens


def chat(**extra: Any) -> Any:
    body = {"model": "m", "messages": [{"role": "system", "content": LONG}], **extra}
    return CHAT.call({**body, "messages": [*body["messages"], {"role": "user", "content": "q"}]})


def messages(content: Any, **extra: Any) -> Any:
    body = {"model": "c", "max_tokens": 64, "messages": [{"role": "user", "content": content}]}
    return MESSAGES.call({**body, **extra})


def test_nothing_is_changed_unless_asked() -> None:
    hints = CacheHints(AffinityConfig())
    call = chat()
    assert hints.applied(call, CHAT.prefix(call.body)) is call
    long = messages(LONG)
    assert hints.applied(long, MESSAGES.prefix(long.body)) is long


def test_a_conversation_keeps_one_prompt_cache_key_across_its_turns() -> None:
    hints = CacheHints(AffinityConfig(set_prompt_cache_key=True))
    first = chat()
    later_body = {
        **first.body,
        "messages": [
            *first.body["messages"],
            {"role": "assistant", "content": "a"},
            {"role": "user", "content": "next"},
        ],
    }
    later = CHAT.call(later_body)
    keys = [hints.applied(c, CHAT.prefix(c.body)).body["prompt_cache_key"] for c in (first, later)]
    assert keys[0] == keys[1]
    assert keys[0].startswith("od-")
    other = CHAT.call(
        {**first.body, "messages": [first.body["messages"][0], {"role": "user", "content": "x"}]}
    )
    assert hints.applied(other, CHAT.prefix(other.body)).body["prompt_cache_key"] != keys[0]


def test_the_callers_key_and_the_cache_key_are_left_alone() -> None:
    hints = CacheHints(AffinityConfig(set_prompt_cache_key=True))
    own = chat(prompt_cache_key="mine")
    assert hints.applied(own, CHAT.prefix(own.body)) is own
    call = chat()
    hinted = hints.applied(call, CHAT.prefix(call.body))
    assert "prompt_cache_key" not in call.body  # the original (and its cache key) unchanged
    assert "prompt_cache_key" in hinted.body
    reply = RESPONSES.call({"model": "m", "input": LONG})
    assert "prompt_cache_key" in hints.applied(reply, RESPONSES.prefix(reply.body)).body


def test_a_long_anthropic_prompt_gets_a_breakpoint_at_its_end() -> None:
    hints = CacheHints(AffinityConfig(anthropic_cache_control=True))
    marked = hints.applied(messages(LONG), ()).body["messages"][-1]["content"]
    assert marked == [{"type": "text", "text": LONG, "cache_control": {"type": "ephemeral"}}]
    blocks = [{"type": "text", "text": LONG}, {"type": "text", "text": "and this"}]
    marked = hints.applied(messages(blocks), ()).body["messages"][-1]["content"]
    assert "cache_control" not in marked[0]
    assert marked[1]["cache_control"] == {"type": "ephemeral"}


def test_a_short_or_already_marked_anthropic_prompt_is_left_alone() -> None:
    hints = CacheHints(AffinityConfig(anthropic_cache_control=True))
    short = messages("hi")
    assert hints.applied(short, ()) is short
    system = [{"type": "text", "text": "s", "cache_control": {"type": "ephemeral"}}]
    theirs = messages(LONG, system=system)
    assert hints.applied(theirs, ()) is theirs
