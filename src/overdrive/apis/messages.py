"""Anthropic's Messages API (``POST …/messages``, ``…/messages/count_tokens``): :data:`MESSAGES`.

A Messages call goes only to an upstream that speaks Anthropic's API
(``[[upstreams]] api = "anthropic"``): nothing is translated between API
families. A body is checked for a ``model``, a positive ``max_tokens``, a
non-empty list of ``messages`` (each a ``user`` or ``assistant`` turn whose
``content`` is a string or a list of typed blocks), and an optional
``system`` (a string or text blocks) and ``tools``; a :class:`RequestError`
names the field otherwise. It is priced at its input's estimated tokens plus
``max_tokens``, the most the answer may take.

The cache key leaves out ``stream`` and a ``metadata`` that only names the
end user (``user_id``, which Anthropic reads for abuse detection alone: the
same prompt gets the same answer whoever asks, as OpenAI's ``user`` is
treated). A call samples unless ``temperature`` is 0 (Anthropic's default is 1).

A streamed answer is server-sent events, each named by its ``event:`` line::

    message_start, content_block_start, content_block_delta, content_block_stop,
    message_delta, message_stop, ping, error

It is complete and fit to store only once ``message_stop`` arrived with no
``error`` event before it. Usage counts every input token, cached or not:
``input_tokens + cache_creation_input_tokens + cache_read_input_tokens``, and
``output_tokens``; a stream reports it in ``message_start`` and
``message_delta`` (see :func:`stream_usage`).

``POST …/messages/count_tokens`` (:data:`COUNT_TOKENS`) goes to the same
upstreams. Its answer depends on the body alone, so it is cached and
coalesced like any call; it is priced at 0 tokens, so it never eats the
token budget of the Messages calls (Anthropic limits and bills it apart), and
costs one request of the upstream's rpm.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from .._calls import Call
from .._errors import RequestError
from .._json import JSONDecodeError, dumps, loads
from .._tokens import estimate_tokens
from ._base import Api, model_of
from ._semantic import Split, split_messages
from ._sse import sse_events

__all__ = [
    "COUNT_TOKENS",
    "MESSAGES",
    "CountTokensApi",
    "MessagesApi",
    "error_type",
    "stream_usage",
]

_ROLES = frozenset({"user", "assistant"})
_NUMBER = (int, float)
_TEXT_BLOCKS = frozenset({"text"})
# Each turn costs a few tokens of framing, as a chat message does.
_TURN_OVERHEAD = 4
# An image costs at most about this many tokens (Anthropic: width * height / 750).
_IMAGE_TOKENS = 1600
_STOP = b"message_stop"
_ERROR = b"error"

# The doors' error kinds as Anthropic names them; its SDK picks the exception
# class by status, and callers read this ``type``.
_ERROR_TYPES = {
    "invalid_request_error": "invalid_request_error",
    "method_not_allowed": "invalid_request_error",
    "invalid_api_key": "authentication_error",
    "model_not_allowed": "permission_error",
    "model_not_found": "not_found_error",
    "unknown_url": "not_found_error",
    "request_too_large": "request_too_large",
    "rate_limit_exceeded": "rate_limit_error",
    "queue_full": "rate_limit_error",
    "queue_timeout": "timeout_error",
    "upstream_timeout": "timeout_error",
    "upstream_error": "api_error",
    "server_error": "api_error",
    "not_ready": "overloaded_error",
}


def error_type(kind: str) -> str:
    """Anthropic's error ``type`` for one of the doors' error kinds (``api_error`` if unknown).

    >>> error_type("model_not_found"), error_type("rate_limit_exceeded"), error_type("?")
    ('not_found_error', 'rate_limit_error', 'api_error')
    """
    return _ERROR_TYPES.get(kind, kind if kind in _ANTHROPIC_TYPES else "api_error")


_ANTHROPIC_TYPES = frozenset(_ERROR_TYPES.values()) | {"billing_error"}


class _AnthropicApi(Api):
    """What the Messages endpoints share: Anthropic upstreams, its error shape, its body checks."""

    __slots__ = ()

    upstream_api = "anthropic"

    def error_payload(self, message: str, kind: str, param: str | None = None) -> dict[str, Any]:
        """``{"type": "error", "error": {"type": ..., "message": ...}}``, Anthropic's shape.

        >>> MESSAGES.error_payload("No such model.", "model_not_found", "model")
        {'type': 'error', 'error': {'type': 'not_found_error', 'message': 'No such model.'}}
        """
        return {"type": "error", "error": {"type": error_type(kind), "message": message}}

    def _input_tokens(self, body: Mapping[str, Any]) -> int:
        """Check the input fields (messages, system, tools) and estimate their tokens."""
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise RequestError("messages", "expected a non-empty list of message objects")
        tokens = sum(_turn_tokens(index, turn) for index, turn in enumerate(messages))
        return tokens + _system_tokens(body.get("system")) + _tools_tokens(body.get("tools"))


class MessagesApi(_AnthropicApi):
    """Anthropic Messages: priced by input and ``max_tokens``; samples unless at temperature 0.

    >>> call = MESSAGES.call({"model": "claude", "max_tokens": 100,
    ...                       "messages": [{"role": "user", "content": "Hello, Claude"}]})
    >>> call.op, call.path, call.tokens
    ('messages', '/messages', 108)
    >>> MESSAGES.usage({"usage": {"input_tokens": 3, "cache_read_input_tokens": 40,
    ...                           "output_tokens": 9}})
    (43, 9)
    """

    __slots__ = ()

    name = "messages"
    path = "/messages"
    # Tools, then the system prompt, then the messages: Anthropic's cache order.
    prefix_head = ("tools", "system")
    cached_path = ("cache_read_input_tokens",)
    prefix_turns = "messages"
    delivery_fields = frozenset({"stream"})
    stream_delivery_fields = delivery_fields

    def call(self, body: Mapping[str, Any]) -> Call:
        model = model_of(body)
        max_tokens = body.get("max_tokens")
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            raise RequestError("max_tokens", f"expected a positive integer, got {max_tokens!r}")
        tokens = self._input_tokens(body) + max_tokens
        stream = body.get("stream", False)
        if not isinstance(stream, bool):
            raise RequestError("stream", f"expected true or false, got {stream!r}")
        return Call(self.name, body, model, stream, tokens, self)

    def key_fields(self, body: Mapping[str, Any], *, streamed: bool = False) -> dict[str, Any]:
        """All but ``stream``, nulls, and a ``metadata`` that only names the end user.

        >>> ask = {"model": "c", "max_tokens": 5, "messages": []}
        >>> MESSAGES.key_fields({**ask, "metadata": {"user_id": "u-1"}, "stream": True})
        {'model': 'c', 'max_tokens': 5, 'messages': []}
        >>> "metadata" in MESSAGES.key_fields({**ask, "metadata": {"tier": "gold"}})
        True
        """
        fields = super().key_fields(body, streamed=streamed)
        metadata = fields.get("metadata")
        if isinstance(metadata, dict) and metadata.keys() <= {"user_id"}:
            del fields["metadata"]
        return fields

    def semantic_split(self, body: Mapping[str, Any], *, streamed: bool = False) -> Split | None:
        """The last message, when it is the user's text, set apart from the rest of the key."""
        return split_messages(self.key_fields(body, streamed=streamed), "messages", _TEXT_BLOCKS)

    def sampled(self, call: Call) -> bool:
        """True unless ``temperature`` is 0: Anthropic's default is 1.0."""
        temperature = call.body.get("temperature")
        if isinstance(temperature, bool) or not isinstance(temperature, _NUMBER):
            return True  # unset (1.0), or a value the upstream will judge
        return temperature > 0

    def usage(self, payload: Mapping[str, Any]) -> tuple[int, int] | None:
        """Every input token (fresh, written to the prompt cache, read from it), and the output."""
        usage = payload.get("usage")
        return _usage_counts(usage) if isinstance(usage, dict) else None

    def stream_complete(self, chunks: Iterable[bytes]) -> bool:
        """True once ``message_stop`` arrived and no ``error`` event came before it.

        >>> stop = b'event: message_stop\\ndata: {"type": "message_stop"}\\n\\n'
        >>> MESSAGES.stream_complete([b'event: message_start\\ndata: {}\\n\\n', stop])
        True
        >>> MESSAGES.stream_complete([b'event: error\\ndata: {"type": "error"}\\n\\n',
        ...                           b'event: message_stop\\ndata: {}\\n\\n'])
        False
        """
        for kind, data in sse_events(b"".join(chunks)):
            if kind == _ERROR or _reports_error(data):
                return False
            if kind == _STOP:
                return True
        return False

    def is_error_event(self, payload: Any) -> bool:
        """Whether one parsed event is Anthropic's ``{"type": "error", ...}``."""
        return isinstance(payload, dict) and payload.get("type") == "error"


class CountTokensApi(_AnthropicApi):
    """``POST …/messages/count_tokens``: priced at 0 tokens, cached, never sampled.

    >>> call = COUNT_TOKENS.call({"model": "claude",
    ...                           "messages": [{"role": "user", "content": "Hello"}]})
    >>> call.op, call.path, call.tokens, COUNT_TOKENS.sampled(call)
    ('count_tokens', '/messages/count_tokens', 0, False)
    """

    __slots__ = ()

    name = "count_tokens"
    path = "/messages/count_tokens"

    def call(self, body: Mapping[str, Any]) -> Call:
        model = model_of(body)
        self._input_tokens(body)  # checked: a bad body is the caller's error, not the upstream's
        # Nothing booked on the token budget: counting is limited and billed apart.
        return Call(self.name, body, model, False, 0, self)

    def usage(self, payload: Mapping[str, Any]) -> tuple[int, int] | None:
        return None  # ``input_tokens`` here is the answer, not tokens spent


MESSAGES = MessagesApi()
COUNT_TOKENS = CountTokensApi()


def stream_usage(chunks: Iterable[bytes]) -> tuple[int, int] | None:
    """The (input, output) tokens a streamed Messages answer reported, or None.

    ``message_start`` carries the input counts (and a first output count);
    each ``message_delta`` carries the counts so far, which replace them.

    >>> start = {"message": {"usage": {"input_tokens": 10, "cache_read_input_tokens": 5}}}
    >>> stream_usage([
    ...     b"event: message_start\\ndata: " + dumps(start) + b"\\n\\n",
    ...     b'event: message_delta\\ndata: {"usage": {"output_tokens": 7}}\\n\\n',
    ... ])
    (15, 7)
    """
    counts: dict[str, Any] = {}
    for kind, data in sse_events(b"".join(chunks)):
        if kind == b"message_start":
            message = _parsed(data).get("message")
            usage = message.get("usage") if isinstance(message, dict) else None
        elif kind == b"message_delta":
            usage = _parsed(data).get("usage")
        else:
            continue
        if isinstance(usage, dict):
            counts.update(usage)
    return _usage_counts(counts) if counts else None


def _usage_counts(usage: Mapping[str, Any]) -> tuple[int, int]:
    prompt = (
        _count(usage.get("input_tokens"))
        + _count(usage.get("cache_creation_input_tokens"))
        + _count(usage.get("cache_read_input_tokens"))
    )
    return prompt, _count(usage.get("output_tokens"))


def _count(value: Any) -> int:
    # ``type() is int``: a bool is an int to isinstance, never a token count.
    return value if type(value) is int and value >= 0 else 0


def _parsed(data: bytes) -> dict[str, Any]:
    try:
        payload = loads(data)
    except JSONDecodeError:
        return {}
    return payload if isinstance(payload, dict) else {}


def _reports_error(data: bytes) -> bool:
    if b'"error"' not in data:  # the common case, without parsing every event's JSON
        return False
    return _parsed(data).get("type") == "error"


# -- checking and pricing the input --------------------------------------------


def _turn_tokens(index: int, turn: Any) -> int:
    if not isinstance(turn, dict):
        raise RequestError(f"messages[{index}]", "expected an object with `role` and `content`")
    role = turn.get("role")
    if not isinstance(role, str) or role not in _ROLES:  # str first: a list is unhashable
        raise RequestError(f"messages[{index}].role", f"expected user or assistant, got {role!r}")
    content = turn.get("content")
    if isinstance(content, str):
        return _TURN_OVERHEAD + estimate_tokens(content)
    if not isinstance(content, list):
        problem = f"expected a string or a list of content blocks, got {type(content).__name__}"
        raise RequestError(f"messages[{index}].content", problem)
    return _TURN_OVERHEAD + _blocks_tokens(f"messages[{index}].content", content)


def _blocks_tokens(where: str, blocks: list[Any]) -> int:
    total = 0
    for index, block in enumerate(blocks):
        if not isinstance(block, dict) or not isinstance(block.get("type"), str):
            raise RequestError(f"{where}[{index}]", "expected a content block with a string `type`")
        total += _block_tokens(block)
    return total


def _block_tokens(block: dict[str, Any]) -> int:
    kind = block["type"]
    if kind == "text":
        text = block.get("text")
        return estimate_tokens(text) if isinstance(text, str) else 0
    if kind == "tool_use":
        return estimate_tokens(_json_text(block.get("input")))
    if kind == "tool_result":
        return _result_tokens(block.get("content"))
    return _IMAGE_TOKENS if kind in ("image", "document") else 0


def _result_tokens(content: Any) -> int:
    """A tool result's text or blocks; not recursive, so no nesting can exhaust the stack."""
    if isinstance(content, str):
        return estimate_tokens(content)
    if not isinstance(content, list):
        return 0
    total = 0
    for block in content:
        if isinstance(block, dict) and block.get("type") in ("image", "document"):
            total += _IMAGE_TOKENS
        elif isinstance(block, dict) and isinstance(text := block.get("text"), str):
            total += estimate_tokens(text)
    return total


def _system_tokens(system: Any) -> int:
    if system is None:
        return 0
    if isinstance(system, str):
        return estimate_tokens(system)
    if isinstance(system, list):
        for index, block in enumerate(system):
            if not isinstance(block, dict) or block.get("type") != "text":
                raise RequestError(f"system[{index}]", "expected a text block")
            if not isinstance(block.get("text"), str):
                raise RequestError(f"system[{index}].text", "expected a string")
        return sum(estimate_tokens(block["text"]) for block in system)
    raise RequestError("system", f"expected a string or text blocks, got {type(system).__name__}")


def _tools_tokens(tools: Any) -> int:
    if tools is None:
        return 0
    if not isinstance(tools, list):
        raise RequestError("tools", f"expected a list of tools, got {type(tools).__name__}")
    for index, tool in enumerate(tools):
        if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
            raise RequestError(f"tools[{index}]", "expected an object with a string `name`")
    # A tool's definition reaches the model as text: its name, description and schema.
    return sum(estimate_tokens(_json_text(tool)) for tool in tools)


def _json_text(value: Any) -> str:
    try:
        return dumps(value).decode()
    except TypeError:
        return ""
