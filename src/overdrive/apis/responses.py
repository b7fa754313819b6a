"""OpenAI's Responses API (``POST …/responses``): its adapter, :data:`RESPONSES`.

A body is checked for a ``model`` and an ``input``: a string, or a list of
input items (messages whose ``content`` is a string or a list of typed parts,
``function_call`` and ``function_call_output`` items, and any other typed
item, which the upstream judges). ``instructions``, ``tools``,
``tool_choice``, ``max_output_tokens``, ``stream``, ``background``,
``previous_response_id`` and ``conversation`` are checked when given; a
:class:`RequestError` names the bad field. A call is priced at its input's
estimated tokens (the instructions, the items, the tool definitions) plus the
answer's budget (``max_output_tokens``, else the chat default).

What is cached and coalesced:

- The key is every body field but the delivery ones: ``stream`` (a stream
  has a key of its own), ``stream_options`` (kept in a stream's key: it
  changes the events' bytes), ``timeout``, and the fields that only name the
  caller or steer the upstream's own prompt cache (``user``,
  ``safety_identifier``, ``prompt_cache_key``).
- ``previous_response_id`` names a stored response, which never changes: it
  is part of the key, and the continuation is shared like any call.
- A ``conversation`` is upstream state that every call appends to, a
  ``background: true`` call answers with a job that is still running, and a
  ``prompt`` without a ``version`` reads whatever version is current: such
  calls are never cached, coalesced or stored (:meth:`ResponsesApi.shares`).

A call samples unless its ``temperature`` is 0 (the default is 1).

A streamed answer is server-sent events, each an ``event: <type>`` line and a
``data:`` object whose ``type`` says the same: ``response.created``,
``response.in_progress``, ``response.output_item.added``,
``response.output_text.delta``, ``response.function_call_arguments.delta``,
``response.output_item.done``, … and the terminal ``response.completed``.
It is complete, fit to store, only once ``response.completed`` arrived and
no ``error`` or ``response.failed`` event (nor a chat-style ``error`` member)
came before it. A ``response.incomplete`` (the budget ran out, a filter cut
the answer) ends the stream without completing it: it is passed on, not an
error, and never stored.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from .._calls import Call
from .._errors import RequestError
from .._json import JSONDecodeError, dumps, loads
from .._tokens import estimate_messages_tokens, estimate_tokens
from ._base import Api, _count, model_of
from ._semantic import QUERY, Split, split_messages
from ._sse import sse_events
from .chat import DEFAULT_OUTPUT_TOKENS

__all__ = ["RESPONSES", "ResponsesApi", "is_error_event", "responses_stream_complete"]

_NUMBER = (int, float)
_TEXT_PARTS = frozenset({"input_text"})
# An item other than a message costs a few tokens of framing, as a message does.
_ITEM_OVERHEAD = 4
_TOOL_CHOICES = frozenset({"none", "auto", "required"})
_COMPLETED = b"response.completed"
_ERROR_TYPES = frozenset({"error", "response.failed"})
_ERROR_KINDS = frozenset(kind.encode() for kind in _ERROR_TYPES)
# A call carrying one of these says what came before it; it needs no ``input``.
_CONTEXT_FIELDS = ("previous_response_id", "conversation", "prompt")


class ResponsesApi(Api):
    """The Responses API: priced by input and answer budget; samples unless at temperature 0.

    >>> call = RESPONSES.call({"model": "m", "input": "hi", "max_output_tokens": 10})
    >>> call.op, call.path, call.tokens > 10, RESPONSES.sampled(call)
    ('responses', '/responses', True, True)
    >>> RESPONSES.shares(RESPONSES.call({"model": "m", "input": "hi", "conversation": "conv_1"}))
    False
    """

    __slots__ = ()

    name = "responses"
    path = "/responses"
    prefix_head = ("tools", "instructions")
    cached_path = ("input_tokens_details", "cached_tokens")
    prefix_turns = "input"
    prefix_key = "prompt_cache_key"
    # Who asks, and the upstream's own prompt-cache routing, do not change the answer.
    delivery_fields = Api.delivery_fields | {"safety_identifier", "prompt_cache_key"}
    stream_delivery_fields = delivery_fields - {"stream_options"}

    def call(self, body: Mapping[str, Any]) -> Call:
        model = model_of(body)
        stream = _flag(body, "stream")
        _flag(body, "background")
        _check_context(body)
        tokens = _input_tokens(body) + _tools_tokens(body) + _output_budget(body)
        return Call(self.name, body, model, stream, tokens, self)

    def semantic_split(self, body: Mapping[str, Any], *, streamed: bool = False) -> Split | None:
        """A string ``input``, or a last input item that is the user's text, set apart.

        >>> RESPONSES.semantic_split({"model": "m", "input": "hi", "stream": True})[1]
        'hi'
        """
        fields = self.key_fields(body, streamed=streamed)
        text = fields.get("input")
        if isinstance(text, str):
            return ({**fields, "input": QUERY}, text) if text.strip() else None
        return split_messages(fields, "input", _TEXT_PARTS)

    def sampled(self, call: Call) -> bool:
        """True unless ``temperature`` is 0: the default is 1, so a call without one samples."""
        temperature = call.body.get("temperature")
        if isinstance(temperature, bool) or not isinstance(temperature, _NUMBER):
            return True  # unset (1), or a value the upstream will judge: not known to be greedy
        return temperature > 0

    def shares(self, call: Call) -> bool:
        """False for a call whose answer depends on upstream state that changes.

        A ``conversation`` grows with every call made in it (this one
        included), a ``background`` call answers with a job still running,
        and a stored ``prompt`` named without a ``version`` is whatever
        version is current. Each goes upstream on its own.
        """
        body = call.body
        if body.get("conversation") is not None or body.get("background") is True:
            return False
        prompt = body.get("prompt")
        return not isinstance(prompt, Mapping) or prompt.get("version") is not None

    def usage(self, payload: Mapping[str, Any]) -> tuple[int, int] | None:
        """``usage.input_tokens`` and ``usage.output_tokens`` of a response.

        >>> RESPONSES.usage({"usage": {"input_tokens": 9, "output_tokens": 4}})
        (9, 4)
        """
        usage = payload.get("usage")
        if not isinstance(usage, dict):
            return None
        return _count(usage.get("input_tokens")), _count(usage.get("output_tokens"))

    def stream_complete(self, chunks: Iterable[bytes]) -> bool:
        return responses_stream_complete(chunks)

    def is_error_event(self, payload: Any) -> bool:
        return is_error_event(payload)


RESPONSES = ResponsesApi()


# -- checking and pricing -----------------------------------------------------------


def _flag(body: Mapping[str, Any], name: str) -> bool:
    value = body.get(name)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise RequestError(name, f"expected true or false, got {value!r}")
    return value


def _check_context(body: Mapping[str, Any]) -> None:
    previous = body.get("previous_response_id")
    if previous is not None and (not isinstance(previous, str) or not previous):
        raise RequestError("previous_response_id", f"expected a response id, got {previous!r}")
    conversation = body.get("conversation")
    if conversation is None or (isinstance(conversation, str) and conversation):
        return
    if not isinstance(conversation, Mapping) or not isinstance(conversation.get("id"), str):
        problem = (
            f"expected a conversation id or an object with a string `id`, got {conversation!r}"
        )
        raise RequestError("conversation", problem)


def _input_tokens(body: Mapping[str, Any]) -> int:
    instructions = body.get("instructions")
    if instructions is not None and not isinstance(instructions, str):
        raise RequestError("instructions", f"expected a string, got {instructions!r}")
    tokens = estimate_tokens(instructions or "")
    value = body.get("input")
    if isinstance(value, str):
        return tokens + estimate_messages_tokens([{"content": value}])
    if value is None or value == []:
        if any(body.get(name) is not None for name in _CONTEXT_FIELDS):
            return tokens  # a continuation: what came before is upstream already
        raise RequestError("input", "expected a string or a non-empty list of input items")
    if not isinstance(value, list):
        raise RequestError("input", f"expected a string or a list of input items, got {value!r}")
    return tokens + sum(_item_tokens(item, f"input[{index}]") for index, item in enumerate(value))


def _item_tokens(item: Any, where: str) -> int:
    """Check one input item and estimate its tokens."""
    if not isinstance(item, Mapping):
        raise RequestError(where, f"expected an input item object, got {item!r}")
    kind = item.get("type")
    if kind is None or kind == "message":
        return _message_tokens(item, where)
    if kind == "function_call":
        _strings(item, where, "call_id", "name", "arguments")
        return _ITEM_OVERHEAD + estimate_tokens(item["name"]) + estimate_tokens(item["arguments"])
    if kind == "function_call_output":
        _strings(item, where, "call_id")
        return _ITEM_OVERHEAD + _output_tokens(item.get("output"), f"{where}.output")
    if not isinstance(kind, str):
        raise RequestError(f"{where}.type", f"expected a string, got {kind!r}")
    return _ITEM_OVERHEAD  # reasoning, hosted tools' calls, ...: the upstream judges them


def _message_tokens(item: Mapping[str, Any], where: str) -> int:
    if not isinstance(item.get("role"), str):
        raise RequestError(f"{where}.role", f"expected a string, got {item.get('role')!r}")
    content = item.get("content")
    if isinstance(content, list):
        _parts(content, f"{where}.content")
    elif not isinstance(content, str):
        problem = f"expected a string or a list of content parts, got {content!r}"
        raise RequestError(f"{where}.content", problem)
    return estimate_messages_tokens([item])


def _output_tokens(output: Any, where: str) -> int:
    """A function call's output: a string, or content parts (text, images, files)."""
    if isinstance(output, str):
        return estimate_tokens(output)
    if not isinstance(output, list):
        raise RequestError(where, f"expected a string or a list of content parts, got {output!r}")
    _parts(output, where)
    return estimate_messages_tokens([{"content": output}]) - _ITEM_OVERHEAD


def _parts(parts: list[Any], where: str) -> None:
    for index, part in enumerate(parts):
        if not isinstance(part, Mapping) or not isinstance(part.get("type"), str):
            raise RequestError(f"{where}[{index}]", "expected a content part with a string `type`")


def _strings(item: Mapping[str, Any], where: str, *names: str) -> None:
    for name in names:
        if not isinstance(item.get(name), str):
            raise RequestError(f"{where}.{name}", f"expected a string, got {item.get(name)!r}")


def _tools_tokens(body: Mapping[str, Any]) -> int:
    """Check ``tools`` and ``tool_choice``; the definitions are input the model reads too."""
    tools = body.get("tools")
    _check_tool_choice(body.get("tool_choice"))
    if tools is None:
        return 0
    if not isinstance(tools, list):
        raise RequestError("tools", f"expected a list of tool objects, got {tools!r}")
    for index, tool in enumerate(tools):
        _check_tool(tool, f"tools[{index}]")
    return estimate_tokens(dumps(tools).decode()) if tools else 0


def _check_tool(tool: Any, where: str) -> None:
    if not isinstance(tool, Mapping) or not isinstance(tool.get("type"), str):
        raise RequestError(where, "expected a tool object with a string `type`")
    if tool["type"] != "function":
        return  # web search, file search, MCP, ...: the upstream's to judge
    name = tool.get("name")
    if not isinstance(name, str) or not name:
        raise RequestError(f"{where}.name", f"expected a function name, got {name!r}")
    parameters = tool.get("parameters")
    if parameters is not None and not isinstance(parameters, Mapping):
        raise RequestError(
            f"{where}.parameters", f"expected a JSON schema object, got {parameters!r}"
        )


def _check_tool_choice(choice: Any) -> None:
    if choice is None or (isinstance(choice, str) and choice in _TOOL_CHOICES):
        return
    if not isinstance(choice, Mapping) or not isinstance(choice.get("type"), str):
        problem = f"expected 'none', 'auto', 'required' or a tool choice object, got {choice!r}"
        raise RequestError("tool_choice", problem)
    if choice["type"] == "function" and not isinstance(choice.get("name"), str):
        raise RequestError(
            "tool_choice.name", f"expected a function name, got {choice.get('name')!r}"
        )


def _output_budget(body: Mapping[str, Any]) -> int:
    value = body.get("max_output_tokens")
    if value is None:
        return DEFAULT_OUTPUT_TOKENS
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise RequestError("max_output_tokens", f"expected a positive integer, got {value!r}")
    return value


# -- streams ------------------------------------------------------------------------


def responses_stream_complete(chunks: Iterable[bytes]) -> bool:
    """True if the streamed body reached ``response.completed`` and carried no error event.

    Chunk boundaries do not matter, even inside a line:

    >>> done = b'event: response.completed\\ndata: {"type": "response.completed"}\\n\\n'
    >>> responses_stream_complete([b'event: response.created\\ndata: {}\\n\\n', done[:9], done[9:]])
    True
    >>> failed = b'event: response.failed\\ndata: {"type": "response.failed"}\\n\\n'
    >>> responses_stream_complete([failed, done])
    False
    >>> responses_stream_complete([done[:-1]])  # its blank line never came: cut short
    False
    """
    for kind, data in sse_events(b"".join(chunks)):
        if kind == b"message":
            kind = _type_in(data)  # an event without its ``event:`` line: ``data.type`` says
        if kind in _ERROR_KINDS or _reports_error(data):
            return False
        if kind == _COMPLETED:
            return True
    return False


def _type_in(data: bytes) -> bytes:
    try:
        payload: Any = loads(data)
    except JSONDecodeError:
        return b"message"
    kind = payload.get("type") if isinstance(payload, dict) else None
    return kind.encode() if isinstance(kind, str) else b"message"


def _reports_error(data: bytes) -> bool:
    if b'"error"' not in data:  # most deltas, without parsing their JSON
        return False
    try:
        payload: Any = loads(data)
    except JSONDecodeError:
        return True  # unreadable, and about an error: not worth replaying
    return is_error_event(payload)


def is_error_event(payload: Any) -> bool:
    """Whether one parsed ``data:`` payload reports a failure instead of progress.

    An ``error`` or ``response.failed`` event, or a chat-style ``error``
    member; a ``response.created`` whose response says ``"error": null`` is not.

    >>> is_error_event({"type": "error", "message": "overloaded"})
    True
    >>> is_error_event({"type": "response.created", "response": {"error": None}})
    False
    """
    if not isinstance(payload, dict):
        return False
    if payload.get("type") in _ERROR_TYPES:
        return True
    return payload.get("error") is not None or payload.get("object") == "error"
