"""Token estimates for pacing and for the simulated upstream.

A real tokenizer is model specific and slow to load; pacing only needs a
stable, slightly generous estimate. English text runs close to four
characters per token for the OpenAI tokenizers, so we count that way.
"""

from __future__ import annotations

from typing import Any

__all__ = ["estimate_messages_tokens", "estimate_tokens"]

_CHARS_PER_TOKEN = 4
# Each chat message costs a few tokens of framing (role, separators).
_MESSAGE_OVERHEAD = 4


def estimate_tokens(text: str) -> int:
    """Tokens in ``text``, at least 1 for non-empty text."""
    if not text:
        return 0
    return max(1, -(-len(text) // _CHARS_PER_TOKEN))


def estimate_messages_tokens(messages: Any) -> int:
    """Tokens in an OpenAI ``messages`` list (content strings or content parts)."""
    if not isinstance(messages, list):
        return 0
    total = 0
    for message in messages:  # a loop, not generators: every chat call is priced here
        if isinstance(message, dict):
            content = message.get("content")
            if isinstance(content, str):  # most messages: estimate_tokens, inlined
                total += _MESSAGE_OVERHEAD - (-len(content) // _CHARS_PER_TOKEN)
            else:
                total += _MESSAGE_OVERHEAD + _content_tokens(message)
    return total


def _content_tokens(message: dict[str, Any]) -> int:
    content = message.get("content")
    if isinstance(content, str):
        return -(-len(content) // _CHARS_PER_TOKEN)  # estimate_tokens, inlined
    if isinstance(content, list):
        texts = (p.get("text") for p in content if isinstance(p, dict))
        return sum(estimate_tokens(t) for t in texts if isinstance(t, str))
    return 0
