"""The sim's Responses API (``POST /v1/responses``): reading a request, answering it byte for byte.

As with chat, the answer depends only on the request: the same model,
instructions, input and budget give the same text (or the same tool call),
so a test can tell a cached answer from a fresh one by its bytes. The sim
keeps no state: ``previous_response_id`` and ``conversation`` are accepted
and echoed, and the answer is made from the ``input`` sent.

A streamed answer is the event sequence OpenAI sends, each an ``event:``
line and a ``data:`` object with the same ``type`` and a rising
``sequence_number``: ``response.created``, ``response.in_progress``,
``response.output_item.added`` (and ``response.content_part.added`` for
text), then one ``response.output_text.delta`` per word (or
``response.function_call_arguments.delta`` per piece of a tool call's
arguments), then the ``.done`` events and ``response.completed``, or
``response.incomplete`` when ``max_output_tokens`` cut the text short.

>>> from overdrive._json import loads
>>> request = parse_responses({"model": "m", "input": "Say hi."}, None)
>>> answer = ResponsesAnswer(request, None)
>>> body = loads(answer.body())
>>> body["status"], body["output"][0]["type"], body["usage"]["output_tokens"] == answer.tokens
('completed', 'message', True)
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from overdrive._json import dumps
from overdrive._tokens import estimate_messages_tokens, estimate_tokens
from overdrive.sim._answers import ToolCall
from overdrive.sim._content import chat_digest, completion_words, sentence, stream_pieces
from overdrive.sim._prefix_cache import PromptTokens, framing, padded
from overdrive.sim._requests import (
    ApiError,
    check_model,
    invalid,
    message_pieces,
    object_body,
    offered,
    optional_bool,
    optional_int,
    tool_spec,
)
from overdrive.sim._tools import ToolSpec, pick_tool, text_of

__all__ = ["ResponsesAnswer", "ResponsesRequest", "parse_responses"]

# Request fields a response object carries back as they were sent.
_ECHOED = (
    "background",
    "conversation",
    "instructions",
    "max_output_tokens",
    "metadata",
    "parallel_tool_calls",
    "previous_response_id",
    "store",
    "temperature",
    "text",
    "tool_choice",
    "tools",
    "top_p",
    "truncation",
    "user",
)
_DEFAULTS: dict[str, Any] = {
    "metadata": {},
    "parallel_tool_calls": True,
    "store": True,
    "temperature": 1.0,
    "text": {"format": {"type": "text"}},
    "tool_choice": "auto",
    "tools": [],
    "top_p": 1.0,
    "truncation": "disabled",
}
_ITEM_OVERHEAD = 4  # framing tokens of an input item, as of a chat message


class ResponsesRequest:
    """The parts of a Responses request that shape the answer.

    ``items`` is the input as a list of items (a string input is one user
    message); ``tool`` the offered tool the answer calls, or None for text.
    """

    __slots__ = ("echo", "items", "max_output_tokens", "model", "prompt_tokens", "stream", "tool")

    def __init__(
        self,
        model: str,
        items: list[Any],
        max_output_tokens: int | None,
        stream: bool,
        tool: ToolSpec | None,
        echo: dict[str, Any],
    ) -> None:
        self.model = model
        self.items = items
        self.max_output_tokens = max_output_tokens
        self.stream = stream
        self.tool = tool
        self.echo = echo
        self.prompt_tokens = _input_tokens(echo.get("instructions"), items)

    def prefix_tokens(self) -> PromptTokens:
        """The input's tokens, for the prefix cache: the instructions, then each item's.

        As many as ``prompt_tokens``, and priced the same way; the model and
        the tools seed them.
        """
        pieces = _item_pieces(self.echo.get("instructions"), self.items)
        return PromptTokens((self.model, self.echo.get("tools")), pieces)

    def __repr__(self) -> str:
        tool = "" if self.tool is None else f", tool={self.tool.name!r}"
        return (
            f"ResponsesRequest(model={self.model!r}, items={len(self.items)}, "
            f"max_output_tokens={self.max_output_tokens}, stream={self.stream}{tool})"
        )


def parse_responses(body: Any, models: frozenset[str] | None) -> ResponsesRequest:
    """Check a ``/v1/responses`` body; raise :class:`ApiError` naming the bad field.

    >>> parse_responses({"model": "m", "input": [{"content": "hi"}]}, None)
    Traceback (most recent call last):
    ...
    overdrive.sim._requests.ApiError: 400 input[0].role: must be a string
    """
    body = object_body(body)
    model = check_model(body, models)
    items = _items(body)
    instructions = body.get("instructions")
    if instructions is not None and not isinstance(instructions, str):
        raise invalid("instructions", "must be a string")
    tools = _tools(body.get("tools"))
    choice = _tool_choice(body.get("tool_choice"), tools)
    prompt, answered = _last_turn(items)
    tool = pick_tool(tools, choice, prompt, answered)
    echo = {name: body.get(name, _DEFAULTS.get(name)) for name in _ECHOED}
    if isinstance(echo["conversation"], str):
        echo["conversation"] = {"id": echo["conversation"]}
    budget = optional_int(body, "max_output_tokens")
    return ResponsesRequest(model, items, budget, optional_bool(body, "stream"), tool, echo)


def _items(body: dict[str, Any]) -> list[Any]:
    value = body.get("input")
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    if value is None and body.get("previous_response_id") is not None:
        return []  # a continuation with nothing new: the sim answers from nothing
    if not isinstance(value, list):
        raise invalid("input", "must be a string or a list of input items")
    for index, item in enumerate(value):
        _check_item(item, f"input[{index}]")
    return value


def _check_item(item: Any, param: str) -> None:
    if not isinstance(item, dict):
        raise invalid(param, "must be an object")
    kind = item.get("type", "message")
    if kind == "message":
        if not isinstance(item.get("role"), str):
            raise invalid(f"{param}.role", "must be a string")
        if not isinstance(item.get("content"), str | list):
            raise invalid(f"{param}.content", "must be a string or a list of content parts")
    elif kind == "function_call":
        for name in ("call_id", "name", "arguments"):
            if not isinstance(item.get(name), str):
                raise invalid(f"{param}.{name}", "must be a string")
    elif kind == "function_call_output":
        if not isinstance(item.get("call_id"), str):
            raise invalid(f"{param}.call_id", "must be a string")
        if not isinstance(item.get("output"), str | list):
            raise invalid(f"{param}.output", "must be a string or a list of content parts")
    elif not isinstance(kind, str):
        raise invalid(f"{param}.type", "must be a string")


def _tools(value: Any) -> list[ToolSpec]:
    """The function tools offered; hosted ones (web search, ...) the sim never calls."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise invalid("tools", "must be a list of tool objects")
    tools = []
    for index, tool in enumerate(value):
        if not isinstance(tool, dict) or not isinstance(tool.get("type"), str):
            raise invalid(f"tools[{index}].type", "must be a string")
        if tool["type"] == "function":
            tools.append(tool_spec(tool, f"tools[{index}]"))
    return tools


def _tool_choice(value: Any, tools: list[ToolSpec]) -> str | None:
    """What ``tool_choice`` asks, as :func:`pick_tool` takes it: None is "auto"."""
    if value is None or value == "auto":
        return None
    if value in ("none", "required"):
        return str(value)
    if not isinstance(value, dict) or not isinstance(value.get("type"), str):
        raise invalid("tool_choice", "must be 'none', 'auto', 'required' or a tool choice object")
    if value["type"] != "function":
        return None  # allowed_tools, hosted tools: left to the model, as auto
    name = value.get("name")
    if not isinstance(name, str):
        raise invalid("tool_choice.name", "must be a string")
    return offered(name, tools, "tool_choice.name")


def _last_turn(items: list[Any]) -> tuple[str, bool]:
    """The last user message's text, and whether a tool's output came back after it."""
    answered = False
    for item in reversed(items):
        if item.get("type", "message") == "message" and item.get("role") == "user":
            return text_of(item.get("content")), answered
        answered = answered or item.get("type") == "function_call_output"
    return "", answered


def _item_pieces(instructions: Any, items: list[Any]) -> Iterator[str]:
    """The tokens of the input as text, as :func:`_input_tokens` prices them."""
    if isinstance(instructions, str):
        yield padded(instructions)  # no framing: it is priced as bare text
    for item in items:
        kind = item.get("type", "message")
        if kind == "message":
            yield from message_pieces([item])
        elif kind == "function_call":
            yield framing(item, ("name", "arguments"))
            yield padded(item["name"] + item["arguments"])
        elif kind == "function_call_output":
            yield framing(item, ("output",))
            yield padded(text_of(item["output"]))
        else:
            yield framing(item, ())


def _input_tokens(instructions: Any, items: list[Any]) -> int:
    tokens = estimate_tokens(instructions) if isinstance(instructions, str) else 0
    for item in items:
        kind = item.get("type", "message")
        if kind == "message":
            tokens += estimate_messages_tokens([item])
        elif kind == "function_call":
            tokens += _ITEM_OVERHEAD + estimate_tokens(item["name"] + item["arguments"])
        elif kind == "function_call_output":
            output = item["output"]
            text = output if isinstance(output, str) else text_of(output)
            tokens += _ITEM_OVERHEAD + estimate_tokens(text)
        else:
            tokens += _ITEM_OVERHEAD
    return tokens


class ResponsesAnswer:
    """The deterministic answer to one Responses request: a message, or a function call.

    ``cap`` is the most tokens the answer may take (``max_output_tokens`` or
    the sim's default); text longer than that is cut and the response is
    ``incomplete``. Streamed, it is :meth:`opening`, then :meth:`deltas` (one
    a token, paced), then :meth:`closing`.
    """

    __slots__ = (
        "_item_id",
        "cached_tokens",
        "capped",
        "created_at",
        "id",
        "pieces",
        "request",
        "tokens",
        "tool_call",
        "words",
    )

    def __init__(self, request: ResponsesRequest, cap: int | None) -> None:
        instructions = request.echo.get("instructions")
        digest = chat_digest(request.model, [instructions, request.items], cap)
        self.request = request
        self.words, capped = completion_words(digest, cap)
        self.tool_call = None if request.tool is None else ToolCall(request.tool, digest)
        self.capped = capped and self.tool_call is None
        self.pieces = stream_pieces(self.words) if self.tool_call is None else self.tool_call.pieces
        self.tokens = len(self.pieces)  # one word (or piece of the arguments), one token
        self.id = "resp_" + digest[:12].hex()
        prefix = "msg_" if self.tool_call is None else "fc_"
        self._item_id = prefix + digest[:12].hex()
        self.created_at = int(time.time())
        self.cached_tokens = 0  # the app sets it when the deployment caches prompt prefixes

    # -- the whole answer ------------------------------------------------------------

    def body(self) -> bytes:
        """The ``response`` object of a call that was not streamed."""
        return dumps(self.response(self._status(), [self._item(done=True)], with_usage=True))

    def response(self, status: str, output: list[Any], *, with_usage: bool) -> dict[str, Any]:
        """The ``response`` object, in the state ``status`` (as a stream's events carry it)."""
        incomplete = {"reason": "max_output_tokens"} if status == "incomplete" else None
        return {
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "error": None,
            "incomplete_details": incomplete,
            "model": self.request.model,
            "output": output,
            "reasoning": {"effort": None, "summary": None},
            **self.request.echo,
            "usage": self.usage() if with_usage else None,
        }

    def usage(self) -> dict[str, Any]:
        prompt = self.request.prompt_tokens
        return {
            "input_tokens": prompt,
            "input_tokens_details": {"cached_tokens": self.cached_tokens, "cache_write_tokens": 0},
            "output_tokens": self.tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": prompt + self.tokens,
        }

    def _status(self) -> str:
        return "incomplete" if self.capped else "completed"

    def _item(self, *, done: bool) -> dict[str, Any]:
        """The one output item: empty while it is being made, whole once ``done``."""
        status = self._status() if done else "in_progress"
        call = self.tool_call
        if call is not None:
            return {
                "id": self._item_id,
                "type": "function_call",
                "status": status,
                "call_id": call.id,
                "name": call.name,
                "arguments": call.arguments if done else "",
            }
        content = [self._part(sentence(self.words))] if done else []
        message = {"id": self._item_id, "type": "message", "role": "assistant"}
        return message | {"status": status, "content": content}

    @staticmethod
    def _part(text: str) -> dict[str, Any]:
        return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}

    # -- the stream ------------------------------------------------------------------

    def opening(self) -> bytes:
        """The events before the first token: created, in progress, the item (and part) added."""
        started = self.response("in_progress", [], with_usage=False)
        events: list[dict[str, Any]] = [
            {"type": "response.created", "response": started},
            {"type": "response.in_progress", "response": started},
            {
                "type": "response.output_item.added",
                "output_index": 0,
                "item": self._item(done=False),
            },
        ]
        if self.tool_call is None:
            events.append(self._at_part("response.content_part.added", part=self._part("")))
        return b"".join(_frame(event, number) for number, event in enumerate(events))

    def deltas(self) -> list[bytes]:
        """One event per token: a piece of the text, or of the tool call's arguments."""
        first = self._opening_count()
        if self.tool_call is None:
            kind, extra = "response.output_text.delta", {"content_index": 0, "logprobs": []}
        else:
            kind, extra = "response.function_call_arguments.delta", {}
        return [
            _frame(self._at_item(kind, delta=piece, **extra), first + index)
            for index, piece in enumerate(self.pieces)
        ]

    def closing(self) -> bytes:
        """The events after the last token: the ``.done`` ones, then the terminal event."""
        item = self._item(done=True)
        if self.tool_call is None:
            text = sentence(self.words)
            events = [
                self._at_part("response.output_text.done", text=text, logprobs=[]),
                self._at_part("response.content_part.done", part=self._part(text)),
            ]
        else:
            arguments = self.tool_call.arguments
            done = "response.function_call_arguments.done"
            events = [self._at_item(done, name=self.tool_call.name, arguments=arguments)]
        status = self._status()
        events += [
            {"type": "response.output_item.done", "output_index": 0, "item": item},
            {
                "type": f"response.{status}",
                "response": self.response(status, [item], with_usage=True),
            },
        ]
        first = self._closing_start()
        return b"".join(_frame(event, first + index) for index, event in enumerate(events))

    def error_event(self, error: ApiError) -> bytes:
        """An ``error`` event for a stream the sim had to end early (it is shutting down)."""
        event = {"type": "error", "code": error.code or error.kind, "message": error.message}
        return _frame(event | {"param": error.param}, self._closing_start())

    def _opening_count(self) -> int:
        return 3 if self.tool_call is not None else 4

    def _closing_start(self) -> int:
        return self._opening_count() + len(self.pieces)

    def _at_item(self, kind: str, **fields: Any) -> dict[str, Any]:
        return {"type": kind, "item_id": self._item_id, "output_index": 0, **fields}

    def _at_part(self, kind: str, **fields: Any) -> dict[str, Any]:
        return self._at_item(kind, content_index=0, **fields)

    def __repr__(self) -> str:
        kind = "text" if self.tool_call is None else f"call {self.tool_call.name!r}"
        return f"ResponsesAnswer(id={self.id!r}, {kind}, tokens={self.tokens})"


def _frame(event: dict[str, Any], sequence_number: int) -> bytes:
    """One SSE event: its ``event:`` line names the type its ``data:`` carries."""
    kind: str = event["type"]
    data = dumps(event | {"sequence_number": sequence_number})
    return b"event: " + kind.encode() + b"\ndata: " + data + b"\n\n"
