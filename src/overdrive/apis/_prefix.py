"""A call's prompt prefix as a chain of stable hashes, to route it where it is cached.

Providers cache the prompt prefixes they have seen, per serving machine
(OpenAI automatically, vLLM and SGLang per replica, Anthropic at
``cache_control`` breakpoints). A router that sends each turn of a
conversation where the previous turns went finds them cached; one that
spreads the turns throws the cache away.

The chain has one link per step of the prompt, in the order a provider reads
it: first the *head* (tools, system prompt or instructions: what precedes the
turns), then each turn. Link ``i`` stands for everything up to and including
turn ``i``, so two calls that share their first ``k`` turns share their first
``k + 1`` links, and the longest link a deployment has served tells how much
of this prompt it may have cached.

>>> first = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
>>> later = [*first, {"role": "assistant", "content": "Hello"}, {"role": "user", "content": "?"}]
>>> a = prefix_chain({"messages": first}, (), "messages", None)
>>> b = prefix_chain({"messages": later}, (), "messages", None)
>>> len(a), len(b), b[: len(a)] == a
(3, 5, True)

An explicit key (``prompt_cache_key``) names the prefix instead: calls with
the same key share one link whatever their prompts.

>>> prefix_chain({"prompt_cache_key": "ticket-7", "messages": first}, (), "messages",
...              "prompt_cache_key") == prefix_chain({"prompt_cache_key": "ticket-7"}, (),
...              "messages", "prompt_cache_key")
True
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from hashlib import blake2b
from typing import Any

from .._json import dumps_canonical

__all__ = ["MAX_LINKS", "PrefixChain", "prefix_chain"]

# Links past this many are not hashed: a conversation this long is told apart
# by its first turns already, and hashing every turn of a huge history on every
# call would cost more than the routing saves.
MAX_LINKS = 256

PrefixChain = tuple[int, ...]

# What a token is taken to weigh in a prompt's JSON, to judge a prefix's length.
_BYTES_PER_TOKEN = 4
# An explicit key's link is hashed apart from any prompt's.
_EXPLICIT = b"overdrive:prefix-key:"


def prefix_chain(
    body: Mapping[str, Any],
    head_fields: Sequence[str],
    turns_field: str,
    explicit_field: str | None,
    min_tokens: int = 0,
) -> PrefixChain:
    """The links of ``body``'s prompt prefix: head, then each of its turns (see the module).

    Links of a prefix shorter than ``min_tokens`` (about four bytes each) are
    left out: no provider caches a prefix that short, so it is no reason to
    prefer a deployment, and a prompt that short has no chain at all.
    """
    if explicit_field is not None:
        key = body.get(explicit_field)
        if isinstance(key, str) and key:
            return (_link(_EXPLICIT, key.encode()),)
    least = min_tokens * _BYTES_PER_TOKEN
    step = dumps_canonical([body.get(name) for name in head_fields])
    link, size = _link(b"", step), len(step)
    links = [link] if size >= least else []
    turns = body.get(turns_field)
    if isinstance(turns, str):  # a prompt given as one string is one turn
        turns = [turns]
    if isinstance(turns, list):
        for turn in turns[: MAX_LINKS - 1]:
            step = dumps_canonical(turn)
            link, size = _link(link.to_bytes(8, "little"), step), size + len(step)
            if size >= least:
                links.append(link)
    return tuple(links)


def _link(previous: bytes, step: bytes) -> int:
    # A stable hash (not hash()): every process and replica, and the provider
    # given it as ``prompt_cache_key``, sees the same link for the same prefix.
    return int.from_bytes(blake2b(previous + step, digest_size=8).digest(), "little")
