"""The part of a call a semantic cache may match loosely: the last user turn's text.

Everything else in the call's key (model, system prompt, earlier turns, tools,
parameters) is its *scope*, which must match exactly; only the text of the
last user turn is compared by meaning. A turn that carries anything but text
(an image, a file, a tool result) is not a candidate: its meaning is not all
in its text.

>>> fields = {"model": "m", "messages": [{"role": "system", "content": "Be brief."},
...                                      {"role": "user", "content": "Capital of France?"}]}
>>> scope, text = split_messages(fields, "messages", frozenset({"text"}))
>>> text, scope["messages"][0], scope["messages"][1]["content"] == QUERY
('Capital of France?', {'role': 'system', 'content': 'Be brief.'}, True)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["QUERY", "Split", "split_messages", "text_of"]

# Stands for the loosely matched text in the scope, so two calls differing only
# there share a scope, and a call whose turn really said this could not collide.
QUERY = "\x00overdrive:semantic-query\x00"

# (the key fields with the query replaced by QUERY, the query's text)
Split = tuple[dict[str, Any], str]


def text_of(content: Any, text_types: frozenset[str]) -> str | None:
    """A turn's content as text: a string, or a list of text parts only; else None.

    >>> text_of([{"type": "text", "text": "a"}, {"type": "text", "text": "b"}], frozenset({"text"}))
    'a\\nb'
    >>> text_of([{"type": "image_url", "image_url": {}}], frozenset({"text"})) is None
    True
    """
    if isinstance(content, str):
        return content
    if not isinstance(content, list) or not content:
        return None
    texts = []
    for part in content:
        if not isinstance(part, Mapping) or part.get("type") not in text_types:
            return None
        text = part.get("text")
        if not isinstance(text, str):
            return None
        texts.append(text)
    return "\n".join(texts)


def split_messages(
    fields: Mapping[str, Any], name: str, text_types: frozenset[str]
) -> Split | None:
    """Split key ``fields`` whose ``name`` list of turns ends with a user's text turn."""
    turns = fields.get(name)
    if not isinstance(turns, list) or not turns:
        return None
    split = _split_turn(turns[-1], text_types)
    if split is None:
        return None
    scoped_turn, text = split
    return {**fields, name: [*turns[:-1], scoped_turn]}, text


def _split_turn(turn: Any, text_types: frozenset[str]) -> tuple[dict[str, Any], str] | None:
    if not isinstance(turn, Mapping) or turn.get("role") != "user":
        return None
    text = text_of(turn.get("content"), text_types)
    if text is None or not text.strip():
        return None
    return {**turn, "content": QUERY}, text
