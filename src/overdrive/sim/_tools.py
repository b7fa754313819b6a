"""Deterministic tool calls: which offered tool the sim calls, and with what arguments.

Whatever API a request came through (chat completions, Responses, Anthropic
Messages), its offered function tools become :class:`ToolSpec` values, and the
same two rules decide the answer:

- :func:`pick_tool`: a forced choice calls a tool; "auto" calls one only when
  the last user text names it and no tool result has come back yet, so an
  agent's loop (ask, call the tool, send its result, get text) ends;
- :func:`tool_arguments`: arguments that satisfy the tool's JSON schema, drawn
  from the request's digest, so the same request gets the same call.

>>> weather = ToolSpec("get_weather", {"type": "object", "required": ["city"],
...                                    "properties": {"city": {"type": "string"}}})
>>> pick_tool([weather], None, "What does get_weather say about Oslo?", answered=False).name
'get_weather'
>>> pick_tool([weather], None, "What does get_weather say about Oslo?", answered=True) is None
True
>>> tool_arguments(weather, bytes(range(64)))
{'city': 'able'}
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import cycle
from typing import Any

from overdrive.sim._content import VOCABULARY

__all__ = ["FORCING_CHOICES", "ToolSpec", "named_in", "pick_tool", "text_of", "tool_arguments"]

# The tool_choice values that make the model call some tool (OpenAI's, Anthropic's).
FORCING_CHOICES = frozenset({"required", "any"})
# Nested schemas deeper than this (or a $ref cycle) get the simplest value of their type.
_MAX_DEPTH = 8
# At most this many items in a generated array, whatever ``minItems`` asks.
_MAX_ITEMS = 8


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """One offered function tool, whatever API it came from."""

    name: str
    # Its JSON schema ({} if none).
    parameters: Mapping[str, Any]


def pick_tool(
    tools: Sequence[ToolSpec], choice: str | None, prompt: str, answered: bool
) -> ToolSpec | None:
    """The tool the sim calls, or None for a text answer.

    ``choice`` is the named tool a tool_choice forces, "required"/"any" (call
    one), "none", or None (auto). Auto calls a tool when the last user text
    names it and no tool result has come back yet (``answered``). A forced
    call picks the tool the prompt names first, else the first offered; a
    forced name that is not offered picks nothing (the caller refuses it).

    >>> a, b = ToolSpec("lookup", {}), ToolSpec("search", {})
    >>> pick_tool([a, b], "required", "no names here", answered=True).name
    'lookup'
    >>> pick_tool([a, b], None, "search first, then lookup", answered=False).name
    'search'
    >>> pick_tool([a, b], "none", "search", answered=False) is None
    True
    """
    if not tools or choice == "none":
        return None
    if choice is None:
        return None if answered else named_in(tools, prompt)
    if choice in FORCING_CHOICES:
        return named_in(tools, prompt) or tools[0]
    return next((tool for tool in tools if tool.name == choice), None)


def named_in(tools: Sequence[ToolSpec], text: str) -> ToolSpec | None:
    """The tool whose name ``text`` mentions first (as a whole word, any case), else None."""
    best: tuple[int, ToolSpec] | None = None
    for tool in tools:
        found = _mention(tool.name).search(text)
        if found is not None and (best is None or found.start() < best[0]):
            best = (found.start(), tool)
    return None if best is None else best[1]


def _mention(name: str) -> re.Pattern[str]:
    # Word edges by hand: a name may start or end with a character \b does not treat as a word's.
    return re.compile(rf"(?<![\w-]){re.escape(name)}(?![\w-])", re.IGNORECASE)


def text_of(content: Any) -> str:
    """The text of a message's content: a string, or the ``text`` of its parts, joined.

    >>> text_of([{"type": "text", "text": "call"}, {"type": "image"}, {"text": "it"}])
    'call it'
    """
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    texts = (part.get("text") for part in content if isinstance(part, Mapping))
    return " ".join(text for text in texts if isinstance(text, str))


def tool_arguments(tool: ToolSpec, digest: bytes) -> dict[str, Any]:
    """Deterministic arguments that satisfy the tool's schema.

    The required properties, each by its type; an enum gives its first value.

    >>> schema = {"type": "object", "required": ["unit", "days", "city"], "properties": {
    ...     "unit": {"enum": ["celsius", "fahrenheit"]},
    ...     "days": {"type": "integer", "minimum": 1, "maximum": 7},
    ...     "city": {"type": "string"}, "note": {"type": "string"}}}
    >>> tool_arguments(ToolSpec("forecast", schema), bytes([3, 200, 9]))
    {'unit': 'celsius', 'days': 4, 'city': 'ladder'}

    Local ``$ref``s (``#/$defs/...``, as pydantic writes them) are followed;
    ``anyOf``/``oneOf`` take their first choice; ``const`` is kept.
    """
    draw = cycle(digest or b"\0")
    value = _Filler(tool.parameters, draw).value(tool.parameters, 0)
    return value if isinstance(value, dict) else {}


class _Filler:
    """Walks a JSON schema, drawing each value it makes from the digest's bytes in turn."""

    __slots__ = ("_draw", "_root")

    def __init__(self, root: Mapping[str, Any], draw: Iterator[int]) -> None:
        self._root = root
        self._draw = draw

    def value(self, schema: Any, depth: int) -> Any:
        schema = self._resolve(schema, depth)
        if "const" in schema:
            return schema["const"]
        enum = schema.get("enum")
        if isinstance(enum, list) and enum:
            return enum[0]
        for alternatives in ("anyOf", "oneOf"):
            choices = schema.get(alternatives)
            if isinstance(choices, list) and choices:
                return self.value(_first_not_null(choices), depth + 1)
        kind = _type_of(schema)
        make = _MAKERS.get(kind, _Filler._null)
        return make(self, schema, depth)

    def _resolve(self, schema: Any, depth: int) -> Mapping[str, Any]:
        """The schema itself, or what its local ``$ref`` points to; {} past the depth bound."""
        if not isinstance(schema, Mapping) or depth > _MAX_DEPTH:
            return {}
        ref = schema.get("$ref")
        if not isinstance(ref, str) or not ref.startswith("#/"):
            return schema
        target: Any = self._root
        for part in ref[2:].split("/"):
            target = target.get(part) if isinstance(target, Mapping) else None
        return self._resolve(target, depth + 1)

    def _object(self, schema: Mapping[str, Any], depth: int) -> dict[str, Any]:
        properties = schema.get("properties")
        required = schema.get("required")
        if not isinstance(properties, Mapping) or not isinstance(required, list):
            return {}
        return {
            name: self.value(properties.get(name, {}), depth + 1)
            for name in required
            if isinstance(name, str)
        }

    def _array(self, schema: Mapping[str, Any], depth: int) -> list[Any]:
        low = _bound(schema, "minItems", 1)
        high = _bound(schema, "maxItems", _MAX_ITEMS)
        count = max(0, min(low, high, _MAX_ITEMS))
        items = schema.get("items", {})
        return [self.value(items, depth + 1) for _ in range(count)]

    def _string(self, schema: Mapping[str, Any], depth: int) -> str:
        text = VOCABULARY[next(self._draw)]
        shortest = _bound(schema, "minLength", 0)
        if len(text) < shortest:
            text = (text * (shortest // len(text) + 1))[:shortest]
        longest = _bound(schema, "maxLength", len(text))
        return text[:longest]

    def _integer(self, schema: Mapping[str, Any], depth: int) -> int:
        low, high = _integer_range(schema)
        return low + next(self._draw) % (high - low + 1)

    def _number(self, schema: Mapping[str, Any], depth: int) -> float:
        low, high = _number_range(schema)
        # Strictly inside (0, 1): an exclusive bound is never hit while low < high.
        share = (next(self._draw) + 0.5) / 256
        return min(max(low + (high - low) * share, low), high)

    def _boolean(self, schema: Mapping[str, Any], depth: int) -> bool:
        return next(self._draw) % 2 == 1

    def _null(self, schema: Mapping[str, Any], depth: int) -> None:
        return None


_MAKERS = {
    "object": _Filler._object,
    "array": _Filler._array,
    "string": _Filler._string,
    "integer": _Filler._integer,
    "number": _Filler._number,
    "boolean": _Filler._boolean,
}


def _type_of(schema: Mapping[str, Any]) -> str:
    kind = schema.get("type")
    if isinstance(kind, list):  # ["string", "null"]: the first that is not null
        kind = next((k for k in kind if k != "null"), "null")
    if isinstance(kind, str):
        return kind
    return "object" if "properties" in schema else "string"


def _first_not_null(choices: list[Any]) -> Any:
    for choice in choices:
        if not (isinstance(choice, Mapping) and choice.get("type") == "null"):
            return choice
    return choices[0]


def _integer_range(schema: Mapping[str, Any]) -> tuple[int, int]:
    """The whole numbers the schema allows: 0..255 unless its bounds say otherwise."""
    lows = [math.ceil(v) for v in _numbers(schema, "minimum")]
    lows += [math.floor(v) + 1 for v in _numbers(schema, "exclusiveMinimum")]
    highs = [math.floor(v) for v in _numbers(schema, "maximum")]
    highs += [math.ceil(v) - 1 for v in _numbers(schema, "exclusiveMaximum")]
    low = max(lows) if lows else min([0, *highs])
    high = min(highs) if highs else low + 255
    return low, max(low, high)  # a schema nothing satisfies still gets a number


def _number_range(schema: Mapping[str, Any]) -> tuple[float, float]:
    """The span of numbers the schema allows (its ends, exclusive or not): 0..256 by default."""
    lows = _numbers(schema, "minimum") + _numbers(schema, "exclusiveMinimum")
    highs = _numbers(schema, "maximum") + _numbers(schema, "exclusiveMaximum")
    low = max(lows) if lows else min([0.0, *(high - 256 for high in highs)])
    high = min(highs) if highs else low + 256
    return low, max(low, high)


def _numbers(schema: Mapping[str, Any], name: str) -> list[float]:
    value = schema.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return []
    return [value]


def _bound(schema: Mapping[str, Any], name: str, default: int) -> int:
    """A count bound of the schema (``minItems``, ``maxLength``, ...), else ``default``."""
    found = _numbers(schema, name)
    return (
        max(0, math.ceil(found[0]) if name.startswith("min") else math.floor(found[0]))
        if found
        else default
    )
