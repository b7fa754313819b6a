"""Opt-in hints that help a provider's prompt cache: a ``prompt_cache_key``, a breakpoint.

Both change only what is sent upstream, never the call's cache key (that was
made from the caller's body before), and only when the caller gave no hint of
their own: a caller's ``prompt_cache_key`` or ``cache_control`` always wins.

* ``set_prompt_cache_key``: OpenAI routes a prompt to a machine by a hash of its
  first tokens and the ``prompt_cache_key``; conversations that open alike
  (one system prompt) crowd one machine and overflow it. A key derived from
  the conversation's opening (tools, system prompt, its first other turn)
  keeps each conversation together and spreads different ones apart.
* ``anthropic_cache_control``: Anthropic caches only at ``cache_control``
  breakpoints. Marking the last block of a long prompt writes it to the
  cache, and the next turn (which starts with this whole prompt) reads it at
  a tenth of the price.

>>> from overdrive.apis import CHAT
>>> from overdrive.config import AffinityConfig
>>> hints = CacheHints(AffinityConfig(set_prompt_cache_key=True))
>>> call = CHAT.call({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
>>> hints.applied(call, CHAT.prefix(call.body)).body["prompt_cache_key"].startswith("od-")
True
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from .._calls import Call
from ..config import AffinityConfig

__all__ = ["CacheHints"]

# Anthropic caches nothing shorter (Claude Sonnet and Opus; Haiku needs more).
_MIN_CACHED_TOKENS = 1024
# Turns that set a conversation up rather than start it.
_SYSTEM_ROLES = frozenset({"system", "developer"})
_EPHEMERAL = {"type": "ephemeral"}


class CacheHints:
    """Applies the hints ``[routing.affinity]`` turned on to a call about to be sent."""

    __slots__ = ("_breakpoints", "_keys")

    def __init__(self, settings: AffinityConfig) -> None:
        self._keys = settings.set_prompt_cache_key
        self._breakpoints = settings.anthropic_cache_control

    def applied(self, call: Call, prefix: Sequence[int]) -> Call:
        """``call``, or a copy whose body carries the hints its API takes."""
        api = call.api.upstream_api
        if self._keys and api == "openai":
            return _with_key(call, prefix)
        if self._breakpoints and api == "anthropic":
            return _with_breakpoint(call)
        return call

    def __repr__(self) -> str:
        return f"CacheHints(prompt_cache_key={self._keys}, cache_control={self._breakpoints})"


def _with_key(call: Call, prefix: Sequence[int]) -> Call:
    if call.op not in ("chat", "responses") or "prompt_cache_key" in call.body or not prefix:
        return call
    links = call.api.prefix(call.body)  # every link, however short: the opening is short
    opening = links[min(len(links) - 1, _opening_turn(call.body) + 1)]
    return dataclasses.replace(call, body={**call.body, "prompt_cache_key": f"od-{opening:016x}"})


def _opening_turn(body: Mapping[str, Any]) -> int:
    """The index of the first turn that is not the system's (the conversation's first)."""
    turns = body.get("messages", body.get("input"))
    if not isinstance(turns, list):
        return 0
    for index, turn in enumerate(turns):
        if not isinstance(turn, Mapping) or turn.get("role") not in _SYSTEM_ROLES:
            return index
    return len(turns) - 1


def _with_breakpoint(call: Call) -> Call:
    body = call.body
    if call.op != "messages" or _prompt_tokens(call) < _MIN_CACHED_TOKENS or _marked(body):
        return call
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages or not isinstance(messages[-1], Mapping):
        return call
    last = messages[-1]
    blocks = _blocks(last.get("content"))
    if blocks is None:
        return call
    blocks[-1] = {**blocks[-1], "cache_control": _EPHEMERAL}
    marked = {**last, "content": blocks}
    return dataclasses.replace(call, body={**body, "messages": [*messages[:-1], marked]})


def _prompt_tokens(call: Call) -> int:
    budget = call.body.get("max_tokens")
    return call.tokens - (budget if isinstance(budget, int) else 0)


def _blocks(content: Any) -> list[dict[str, Any]] | None:
    """The content as a list of blocks (a string is one text block); None if malformed."""
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else None
    if not isinstance(content, list) or not content or not isinstance(content[-1], Mapping):
        return None
    return [dict(block) if isinstance(block, Mapping) else block for block in content]


def _marked(value: Any) -> bool:
    """Whether the caller set a ``cache_control`` anywhere: then theirs stand alone."""
    if isinstance(value, Mapping):
        return "cache_control" in value or any(_marked(v) for v in value.values())
    if isinstance(value, list):
        return any(_marked(v) for v in value)
    return False
