"""Anthropic's Messages API in the sim: requests checked, answers and events built, errors shaped.

The answer is deterministic in the request, as a chat completion's is: the
same model, system, messages and ``max_tokens`` give the same text (the
same words chat would give those turns). Offered tools are called by the
rules of :mod:`overdrive.sim._tools`: a ``tool_use`` block, ``stop_reason:
"tool_use"``, streamed as ``input_json_delta`` pieces.

Prompt caching is simulated too: the input up to the last block marked
``cache_control`` is written to a bounded cache the first time
(``cache_creation_input_tokens``) and read from it after
(``cache_read_input_tokens``); only the usage changes, never the answer.

Everything the app's shared steps raise in OpenAI's words (a 429, a fault, a
bad body) becomes Anthropic's ``{"type": "error", "error": {...}}`` here, with
``anthropic-ratelimit-*`` headers in place of ``x-ratelimit-*``.

>>> request = parse_messages({"model": "claude", "max_tokens": 8,
...                           "messages": [{"role": "user", "content": "hi"}]}, None)
>>> answer = MessagesAnswer(request, PromptCache())
>>> answer.stop_reason, answer.tokens
('max_tokens', 8)
"""

from __future__ import annotations

import hashlib
import math
import secrets
import time
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from overdrive._asgi import Scope, header
from overdrive._json import dumps, dumps_canonical
from overdrive._tokens import estimate_tokens
from overdrive.sim._content import chat_digest, completion_words, sentence, stream_pieces
from overdrive.sim._requests import ApiError
from overdrive.sim._tools import FORCING_CHOICES, ToolSpec, pick_tool, tool_arguments

__all__ = [
    "MessagesAnswer",
    "MessagesError",
    "MessagesRequest",
    "PromptCache",
    "anthropic_errors",
    "as_anthropic",
    "authorize",
    "count_tokens_body",
    "error_event",
    "limit_headers",
    "parse_count_tokens",
    "parse_messages",
]

Headers = list[tuple[bytes, bytes]]

_ROLES = frozenset({"user", "assistant"})
_TURN_OVERHEAD = 4
# Prompt prefixes the sim remembers as cached, at most (the oldest are forgotten).
MAX_CACHED_PREFIXES = 4096
# Characters of a tool call's JSON arguments per streamed input_json_delta.
_JSON_PIECE = 12
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
    529: "overloaded_error",
}


class MessagesError(ApiError):
    """An error answer in Anthropic's shape: ``{"type": "error", "error": {type, message}}``."""

    def body(self) -> bytes:
        return dumps({"type": "error", "error": {"type": self.kind, "message": self.message}})


def _invalid(param: str, problem: str) -> MessagesError:
    return MessagesError(400, f"{param}: {problem}", param=param)


@contextmanager
def anthropic_errors() -> Iterator[None]:
    """Turn every OpenAI-shaped :class:`ApiError` raised inside into Anthropic's shape."""
    try:
        yield
    except MessagesError:
        raise
    except ApiError as error:
        raise as_anthropic(error) from None


def as_anthropic(error: ApiError) -> MessagesError:
    """``error`` in Anthropic's shape (its ratelimit headers renamed too)."""
    kind = _ERROR_TYPES.get(error.status, "api_error")
    return MessagesError(
        error.status, error.message, kind=kind, headers=limit_headers(error.headers)
    )


def error_event(error: ApiError) -> bytes:
    """The ``event: error`` that ends a stream which broke off after its status was sent."""
    kind = _ERROR_TYPES.get(error.status, "api_error")
    payload = {"type": "error", "error": {"type": kind, "message": error.message}}
    return _event(b"error", payload)


def authorize(scope: Scope, api_key: str | None) -> None:
    """Check the key, when the sim has one: in ``x-api-key``, or as a Bearer token.

    Anthropic's API takes either; newer anthropic SDKs send ``api_key`` as a
    Bearer token, older ones (and overdrive's upstream clients) in ``x-api-key``.
    """
    if api_key is None:
        return
    expected = api_key.encode()
    given = header(scope, b"x-api-key")
    if given is None:
        bearer = header(scope, b"authorization") or b""
        given = bearer[7:] if bearer[:7].lower() == b"bearer " else None
    if given is None or not secrets.compare_digest(given, expected):
        raise MessagesError(401, "invalid x-api-key", kind="authentication_error")


def limit_headers(headers: Headers, now: float | None = None) -> Headers:
    """The app's ``x-ratelimit-*`` headers as Anthropic's ``anthropic-ratelimit-*``.

    Resets become RFC 3339 times (``now`` is the wall clock, Unix seconds);
    ``retry-after`` stays, and ``retry-after-ms``, which Anthropic does not send, goes.

    >>> limit_headers([(b"x-ratelimit-reset-tokens", b"1.5s"), (b"retry-after", b"2"),
    ...                (b"retry-after-ms", b"1500")], now=0.0)
    [(b'anthropic-ratelimit-tokens-reset', b'1970-01-01T00:00:02Z'), (b'retry-after', b'2')]
    """
    wall = time.time() if now is None else now
    converted: Headers = []
    for name, value in headers:
        if name.startswith(b"x-ratelimit-"):
            field, _, dimension = name.removeprefix(b"x-ratelimit-").partition(b"-")
            if field == b"reset":
                value = _rfc3339(wall + float(value.removesuffix(b"s")))
            converted.append((b"anthropic-ratelimit-" + dimension + b"-" + field, value))
        elif name != b"retry-after-ms":
            converted.append((name, value))
    return converted


def _rfc3339(moment: float) -> bytes:
    # Whole seconds, rounded up: a client waiting until then finds the room there.
    stamp = datetime.fromtimestamp(math.ceil(moment), UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%SZ").encode()


# -- requests -------------------------------------------------------------------


class MessagesRequest:
    """The parts of a Messages request that shape its answer and its usage."""

    __slots__ = (
        "answered",
        "choice",
        "max_tokens",
        "messages",
        "model",
        "prompt",
        "prompt_tokens",
        "stream",
        "system",
        "tools",
        "tools_raw",
    )

    def __init__(self, body: dict[str, Any], model: str, max_tokens: int) -> None:
        self.model = model
        self.max_tokens = max_tokens
        self.messages: list[dict[str, Any]] = body["messages"]
        self.system: Any = body.get("system")
        self.tools_raw: list[dict[str, Any]] = body.get("tools") or []
        self.tools = [ToolSpec(t["name"], t.get("input_schema") or {}) for t in self.tools_raw]
        self.choice = _tool_choice(body.get("tool_choice"), self.tools)
        self.stream = body.get("stream", False)
        self.prompt, self.answered = _last_user_turn(self.messages)
        self.prompt_tokens = sum(tokens for _, tokens in _prompt_parts(self))

    def __repr__(self) -> str:
        return (
            f"MessagesRequest(model={self.model!r}, messages={len(self.messages)}, "
            f"max_tokens={self.max_tokens}, tools={len(self.tools)}, stream={self.stream})"
        )


def parse_messages(body: Any, models: frozenset[str] | None) -> MessagesRequest:
    """Check a ``/v1/messages`` body; raise :class:`MessagesError` naming the bad field."""
    body, model = _common(body, models)
    max_tokens = body.get("max_tokens")
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise _invalid("max_tokens", "must be a positive integer")
    if not isinstance(body.get("stream", False), bool):
        raise _invalid("stream", "must be a boolean")
    return MessagesRequest(body, model, max_tokens)


def parse_count_tokens(body: Any, models: frozenset[str] | None) -> MessagesRequest:
    """Check a ``/v1/messages/count_tokens`` body (no ``max_tokens`` needed)."""
    body, model = _common(body, models)
    return MessagesRequest(body, model, 1)


def count_tokens_body(request: MessagesRequest) -> bytes:
    return dumps({"input_tokens": request.prompt_tokens})


def _common(body: Any, models: frozenset[str] | None) -> tuple[dict[str, Any], str]:
    if not isinstance(body, dict):
        raise MessagesError(400, "the request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _invalid("model", "must be a non-empty string")
    if models is not None and model not in models:
        raise MessagesError(404, f"model: {model}", param="model", kind="not_found_error")
    _check_messages(body.get("messages"))
    _check_system(body.get("system"))
    _check_tools(body.get("tools"))
    return body, model


def _check_messages(messages: Any) -> None:
    if not isinstance(messages, list) or not messages:
        raise _invalid("messages", "must be a non-empty list of messages")
    for index, message in enumerate(messages):
        where = f"messages.{index}"
        role = message.get("role") if isinstance(message, dict) else None
        if not isinstance(role, str) or role not in _ROLES:  # str first: a list is unhashable
            raise _invalid(f"{where}.role", "must be 'user' or 'assistant'")
        content = message.get("content")
        if isinstance(content, list):
            _check_blocks(f"{where}.content", content)
        elif not isinstance(content, str):
            raise _invalid(f"{where}.content", "must be a string or a list of content blocks")


def _check_blocks(where: str, blocks: list[Any]) -> None:
    for index, block in enumerate(blocks):
        if not isinstance(block, dict) or not isinstance(block.get("type"), str):
            raise _invalid(f"{where}.{index}.type", "must be a content block type")


def _check_system(system: Any) -> None:
    if system is None or isinstance(system, str):
        return
    if not isinstance(system, list):
        raise _invalid("system", "must be a string or a list of text blocks")
    for index, block in enumerate(system):
        if not isinstance(block, dict) or not isinstance(block.get("text"), str):
            raise _invalid(f"system.{index}.text", "must be a string")


def _check_tools(tools: Any) -> None:
    if tools is None:
        return
    if not isinstance(tools, list):
        raise _invalid("tools", "must be a list of tools")
    for index, tool in enumerate(tools):
        if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
            raise _invalid(f"tools.{index}.name", "must be a string")
        if not isinstance(tool.get("input_schema", {}), dict):
            raise _invalid(f"tools.{index}.input_schema", "must be an object")


def _tool_choice(choice: Any, tools: list[ToolSpec]) -> str | None:
    """``tool_choice`` as :func:`pick_tool` reads it: None (auto), "any", "none" or a name."""
    if choice is None:
        return None
    kind = choice.get("type") if isinstance(choice, dict) else None
    if not isinstance(kind, str):
        raise _invalid("tool_choice.type", "must be 'auto', 'any', 'tool' or 'none'")
    if kind == "auto":
        return None
    if kind in FORCING_CHOICES or kind == "none":
        return str(kind)
    if kind == "tool":
        name = choice.get("name")
        if not any(tool.name == name for tool in tools):
            raise _invalid("tool_choice.name", f"no offered tool is named {name!r}")
        return str(name)
    raise _invalid("tool_choice.type", "must be 'auto', 'any', 'tool' or 'none'")


def _last_user_turn(messages: list[dict[str, Any]]) -> tuple[str, bool]:
    """The last user turn's text, and whether it hands back a tool's result."""
    for message in reversed(messages):
        if message["role"] != "user":
            continue
        content = message["content"]
        if isinstance(content, str):
            return content, False
        texts = [
            b["text"] for b in content if b["type"] == "text" and isinstance(b.get("text"), str)
        ]
        return " ".join(texts), any(b["type"] == "tool_result" for b in content)
    return "", False


# -- usage and the prompt cache ----------------------------------------------------


def _prompt_parts(request: MessagesRequest) -> Iterator[tuple[Any, int]]:
    """Each part of the prompt in the order the model reads it, with its tokens."""
    for tool in request.tools_raw:
        yield tool, _json_tokens(tool)
    system = request.system
    if isinstance(system, str):
        yield system, estimate_tokens(system)
    elif isinstance(system, list):
        yield from ((block, estimate_tokens(block["text"])) for block in system)
    for message in request.messages:
        content = message["content"]
        if isinstance(content, str):
            yield content, _TURN_OVERHEAD + estimate_tokens(content)
            continue
        yield message["role"], _TURN_OVERHEAD
        yield from ((block, _block_tokens(block)) for block in content)


def _block_tokens(block: dict[str, Any]) -> int:
    kind = block["type"]
    if kind == "text":
        text = block.get("text")
        return estimate_tokens(text) if isinstance(text, str) else 0
    if kind == "tool_use":
        return _json_tokens(block.get("input"))
    if kind == "tool_result":
        content = block.get("content")
        if isinstance(content, str):
            return estimate_tokens(content)
        if isinstance(content, list):  # its text blocks; no deeper, whatever the nesting
            texts = (b.get("text") for b in content if isinstance(b, dict))
            return sum(estimate_tokens(t) for t in texts if isinstance(t, str))
    return 0


def _json_tokens(value: Any) -> int:
    try:
        return estimate_tokens(dumps(value).decode())
    except TypeError:  # nested past what the codec writes: not worth pricing
        return 0


class PromptCache:
    """The prompt prefixes written to the cache, oldest forgotten first past ``capacity``."""

    __slots__ = ("_capacity", "_seen")

    def __init__(self, capacity: int = MAX_CACHED_PREFIXES) -> None:
        self._capacity = capacity
        self._seen: OrderedDict[bytes, None] = OrderedDict()

    def usage(self, request: MessagesRequest) -> tuple[int, int, int]:
        """(uncached input, written to the cache, read from it) tokens for ``request``."""
        prefix, cached_tokens = _cached_prefix(request)
        if prefix is None:
            return request.prompt_tokens, 0, 0
        uncached = request.prompt_tokens - cached_tokens
        if prefix in self._seen:
            self._seen.move_to_end(prefix)
            return uncached, 0, cached_tokens
        self._seen[prefix] = None
        if len(self._seen) > self._capacity:
            self._seen.popitem(last=False)
        return uncached, cached_tokens, 0

    def clear(self) -> None:
        self._seen.clear()

    def __len__(self) -> int:
        return len(self._seen)

    def __repr__(self) -> str:
        return f"PromptCache({len(self._seen)}/{self._capacity})"


def _cached_prefix(request: MessagesRequest) -> tuple[bytes | None, int]:
    """The digest of the prompt up to its last ``cache_control`` mark, and its tokens."""
    parts: list[Any] = [request.model]
    tokens = marked_tokens = 0
    marked: bytes | None = None
    for part, part_tokens in _prompt_parts(request):
        parts.append(part)
        tokens += part_tokens
        if isinstance(part, dict) and part.get("cache_control") is not None:
            marked = hashlib.blake2b(dumps_canonical(parts), digest_size=16).digest()
            marked_tokens = tokens
    return marked, marked_tokens


# -- answers ------------------------------------------------------------------------


class MessagesAnswer:
    """The deterministic answer to one Messages request: whole, or as its stream's events."""

    __slots__ = ("content", "digest", "id", "request", "stop_reason", "tokens", "usage", "words")

    def __init__(self, request: MessagesRequest, cache: PromptCache) -> None:
        self.request = request
        turns = [request.system, *request.messages]
        self.digest = digest = chat_digest(request.model, turns, request.max_tokens)
        self.id = "msg_" + digest[:12].hex()
        tool = pick_tool(request.tools, request.choice, request.prompt, request.answered)
        self.words: list[str] = []
        if tool is not None:
            self.content = _tool_block(tool, digest)
            self.stop_reason = "tool_use"
            self.tokens = max(1, estimate_tokens(dumps(self.content["input"]).decode()))
        else:
            self.words, capped = completion_words(digest, request.max_tokens)
            self.content = {"type": "text", "text": sentence(self.words)}
            self.stop_reason = "max_tokens" if capped else "end_turn"
            self.tokens = len(self.words)  # one word, one token
        fresh, written, read = cache.usage(request)
        self.usage = {
            "input_tokens": fresh,
            "cache_creation_input_tokens": written,
            "cache_read_input_tokens": read,
            "output_tokens": self.tokens,
        }

    @property
    def input_tokens(self) -> int:
        return self.request.prompt_tokens

    def message(self) -> bytes:
        """The whole answer, as ``POST /v1/messages`` without ``stream`` returns it."""
        return dumps(self._message([self.content], self.stop_reason, self.usage))

    def opening(self) -> bytes:
        """``message_start``, a ``ping`` and ``content_block_start``: all before the first token."""
        usage = {**self.usage, "output_tokens": 1}
        start = {"type": "message_start", "message": self._message([], None, usage)}
        block = {**self.content, "text": ""} if self.content["type"] == "text" else self.content
        return b"".join(
            (
                _event(b"message_start", start),
                _event(b"ping", {"type": "ping"}),
                _event(b"content_block_start", _block_start(block)),
            )
        )

    def deltas(self) -> list[bytes]:
        """One ``content_block_delta`` per token (text) or per piece of the arguments (tool)."""
        if self.content["type"] == "text":
            pieces = [{"type": "text_delta", "text": p} for p in stream_pieces(self.words)]
        else:
            text = dumps(self.content["input"]).decode()
            pieces = [
                {"type": "input_json_delta", "partial_json": text[i : i + _JSON_PIECE]}
                for i in range(0, len(text), _JSON_PIECE)
            ]
        return [
            _event(b"content_block_delta", {"type": "content_block_delta", "index": 0, "delta": d})
            for d in pieces
        ]

    def error_event(self, error: ApiError) -> bytes:
        """The ``error`` event that ends this stream early (the server is shutting down)."""
        return error_event(error)

    def closing(self) -> bytes:
        """``content_block_stop``, ``message_delta`` (stop reason, usage) and ``message_stop``."""
        delta = {
            "type": "message_delta",
            "delta": {"stop_reason": self.stop_reason, "stop_sequence": None},
            "usage": {"output_tokens": self.tokens},
        }
        return b"".join(
            (
                _event(b"content_block_stop", {"type": "content_block_stop", "index": 0}),
                _event(b"message_delta", delta),
                _event(b"message_stop", {"type": "message_stop"}),
            )
        )

    def _message(
        self, content: list[dict[str, Any]], stop_reason: str | None, usage: dict[str, int]
    ) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": "message",
            "role": "assistant",
            "model": self.request.model,
            "content": content,
            "stop_reason": stop_reason,
            "stop_sequence": None,
            "usage": usage,
        }

    def __repr__(self) -> str:
        return f"MessagesAnswer(id={self.id!r}, tokens={self.tokens}, stop={self.stop_reason!r})"


def _tool_block(tool: ToolSpec, digest: bytes) -> dict[str, Any]:
    tool_id = "toolu_" + hashlib.blake2b(digest + tool.name.encode(), digest_size=12).hexdigest()
    return {
        "type": "tool_use",
        "id": tool_id,
        "name": tool.name,
        "input": tool_arguments(tool, digest),
    }


def _block_start(block: dict[str, Any]) -> dict[str, Any]:
    # A tool_use block starts with empty input; its arguments follow as JSON pieces.
    started = {**block, "input": {}} if block["type"] == "tool_use" else block
    return {"type": "content_block_start", "index": 0, "content_block": started}


def _event(name: bytes, payload: dict[str, Any]) -> bytes:
    return b"event: " + name + b"\ndata: " + dumps(payload) + b"\n\n"
