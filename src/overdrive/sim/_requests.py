"""Reading and checking request bodies; every problem becomes an OpenAI-shaped 4xx.

>>> request = parse_chat({"model": "m", "messages": [{"role": "user", "content": "hi"}]}, None)
>>> request.model, request.stream
('m', False)
>>> weather = {"type": "function", "function": {"name": "weather"}}
>>> ask = [{"role": "user", "content": "Ask weather about Oslo."}]
>>> parse_chat({"model": "m", "messages": ask, "tools": [weather]}, None).tool.name
'weather'
>>> parse_chat({"model": "m", "messages": []}, None)
Traceback (most recent call last):
...
overdrive.sim._requests.ApiError: 400 messages: must be a non-empty list of message objects
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from overdrive._json import dumps
from overdrive._tokens import estimate_messages_tokens, estimate_tokens
from overdrive.sim._prefix_cache import PromptTokens, framing, padded
from overdrive.sim._tools import ToolSpec, pick_tool, text_of

__all__ = [
    "ApiError",
    "ChatRequest",
    "EmbeddingRequest",
    "check_model",
    "invalid",
    "message_pieces",
    "object_body",
    "offered",
    "optional_bool",
    "optional_int",
    "parse_chat",
    "parse_embeddings",
    "tool_spec",
]

MAX_EMBEDDING_INPUTS = 2048
MAX_DIMENSIONS = 16384


class ApiError(Exception):
    """An error answer: HTTP status plus the OpenAI ``{"error": {...}}`` fields."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        kind: str = "invalid_request_error",
        headers: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        super().__init__(f"{status} {param}: {message}" if param else f"{status} {message}")
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.kind = kind
        self.headers = headers or []

    def body(self) -> bytes:
        error = {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}
        return dumps({"error": error})


def invalid(param: str | None, problem: str) -> ApiError:
    return ApiError(400, problem, param=param)


class ChatRequest:
    """The parts of a chat completion request that shape the answer.

    ``tool`` is the offered tool the answer calls (see :func:`pick_tool`), or None for text;
    ``tools`` the tool definitions as sent (they shape the prompt's tokens).
    """

    __slots__ = (
        "include_usage",
        "max_tokens",
        "messages",
        "model",
        "prompt_tokens",
        "stream",
        "tool",
        "tools",
    )

    def __init__(
        self,
        model: str,
        messages: list[Any],
        max_tokens: int | None,
        stream: bool,
        include_usage: bool,
        tool: ToolSpec | None = None,
        tools: list[Any] | None = None,
    ) -> None:
        self.model = model
        self.messages = messages
        self.max_tokens = max_tokens
        self.stream = stream
        self.include_usage = include_usage
        self.tool = tool
        self.tools = tools or []
        self.prompt_tokens = estimate_messages_tokens(messages)

    def prefix_tokens(self) -> PromptTokens:
        """The prompt's tokens, for the prefix cache: each message's framing, then its text.

        As many as ``prompt_tokens``; the model and the tools seed them, as the
        tools open a real prompt (the sim prices them at nothing).
        """
        return PromptTokens((self.model, self.tools), message_pieces(self.messages))

    def __repr__(self) -> str:
        tool = "" if self.tool is None else f", tool={self.tool.name!r}"
        return (
            f"ChatRequest(model={self.model!r}, messages={len(self.messages)}, "
            f"max_tokens={self.max_tokens}, stream={self.stream}{tool})"
        )


class EmbeddingRequest:
    """An embeddings request: inputs as texts or tokenized inputs."""

    __slots__ = ("base64", "dimensions", "inputs", "model", "tokens")

    def __init__(
        self, model: str, inputs: list[str | list[int]], base64: bool, dimensions: int | None
    ) -> None:
        self.model = model
        self.inputs = inputs
        self.base64 = base64
        self.dimensions = dimensions
        self.tokens = sum(estimate_tokens(i) if isinstance(i, str) else len(i) for i in inputs)

    def __repr__(self) -> str:
        return f"EmbeddingRequest(model={self.model!r}, inputs={len(self.inputs)})"


def parse_chat(body: Any, models: frozenset[str] | None) -> ChatRequest:
    """Check a ``/v1/chat/completions`` body; raise :class:`ApiError` naming the bad field."""
    body = object_body(body)
    model = check_model(body, models)
    messages = _messages(body.get("messages"))
    max_tokens = _max_tokens(body)
    stream = optional_bool(body, "stream")
    tool = _chat_tool(body, messages)
    tools = body.get("tools")  # checked by _chat_tool
    return ChatRequest(model, messages, max_tokens, stream, _include_usage(body), tool, tools)


def parse_embeddings(body: Any, models: frozenset[str] | None) -> EmbeddingRequest:
    """Check a ``/v1/embeddings`` body; raise :class:`ApiError` naming the bad field."""
    body = object_body(body)
    model = check_model(body, models)
    inputs = _inputs(body.get("input"))
    encoding = body.get("encoding_format", "float")
    if encoding not in ("float", "base64"):
        raise invalid("encoding_format", "must be 'float' or 'base64'")
    dimensions = optional_int(body, "dimensions")
    if dimensions is not None and dimensions > MAX_DIMENSIONS:
        raise invalid("dimensions", f"must be at most {MAX_DIMENSIONS}")
    return EmbeddingRequest(model, inputs, encoding == "base64", dimensions)


def object_body(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise invalid(None, "the request body must be a JSON object")
    return body


def check_model(body: dict[str, Any], models: frozenset[str] | None) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise invalid("model", "must be a non-empty string")
    if models is not None and model not in models:
        message = f"The model `{model}` does not exist or you do not have access to it."
        raise ApiError(404, message, param="model", code="model_not_found")
    return model


def _messages(messages: Any) -> list[Any]:
    if not isinstance(messages, list) or not messages:
        raise invalid("messages", "must be a non-empty list of message objects")
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            raise invalid(f"messages[{index}]", "must be an object")
        if not isinstance(message.get("role"), str):
            raise invalid(f"messages[{index}].role", "must be a string")
    return messages


def message_pieces(messages: list[Any]) -> Iterator[str]:
    """Each message's tokens as text, priced as :func:`estimate_messages_tokens` prices it."""
    for message in messages:
        yield framing(message)
        content = message.get("content")
        if isinstance(content, str):
            yield padded(content)
        elif isinstance(content, list):
            texts = (part.get("text") for part in content if isinstance(part, dict))
            yield from (padded(text) for text in texts if isinstance(text, str))


def _chat_tool(body: dict[str, Any], messages: list[Any]) -> ToolSpec | None:
    """The offered tool the answer calls: as ``tool_choice`` forces, or as the prompt names."""
    tools = _chat_tools(body.get("tools"))
    choice = _chat_tool_choice(body.get("tool_choice"), tools)
    prompt, answered = _last_turn(messages)
    return pick_tool(tools, choice, prompt, answered)


def _chat_tools(value: Any) -> list[ToolSpec]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise invalid("tools", "must be a list of tool objects")
    tools = []
    for index, tool in enumerate(value):
        if not isinstance(tool, dict) or tool.get("type") != "function":
            raise invalid(f"tools[{index}].type", "must be 'function'")
        function = tool.get("function")
        if not isinstance(function, dict):
            raise invalid(f"tools[{index}].function", "must be an object")
        tools.append(tool_spec(function, f"tools[{index}].function"))
    return tools


def tool_spec(function: dict[str, Any], param: str) -> ToolSpec:
    """A function tool's ``name`` and ``parameters`` (a JSON schema), checked."""
    name = function.get("name")
    if not isinstance(name, str) or not name:
        raise invalid(f"{param}.name", "must be a non-empty string")
    parameters = function.get("parameters")
    if parameters is None:
        return ToolSpec(name, {})
    if not isinstance(parameters, dict):
        raise invalid(f"{param}.parameters", "must be a JSON schema object")
    return ToolSpec(name, parameters)


def _chat_tool_choice(value: Any, tools: list[ToolSpec]) -> str | None:
    """What ``tool_choice`` asks, as :func:`pick_tool` takes it: None is "auto"."""
    if value is None or value == "auto":
        return None
    if value in ("none", "required"):
        return str(value)
    function = value.get("function") if isinstance(value, dict) else None
    name = function.get("name") if isinstance(function, dict) else None
    if not isinstance(name, str):
        raise invalid("tool_choice", "must be 'none', 'auto', 'required' or a named function")
    return offered(name, tools, "tool_choice")


def offered(name: str, tools: list[ToolSpec], param: str) -> str:
    """``name``, if it is one of ``tools``; a 400 naming ``param`` otherwise."""
    if not any(tool.name == name for tool in tools):
        raise invalid(param, f"names the tool {name!r}, which is not among the tools offered")
    return name


def _last_turn(messages: list[Any]) -> tuple[str, bool]:
    """The last user message's text, and whether a tool's result came back after it."""
    answered = False
    for message in reversed(messages):
        role = message.get("role")
        if role == "user":
            return text_of(message.get("content")), answered
        answered = answered or role == "tool"
    return "", answered


def _max_tokens(body: dict[str, Any]) -> int | None:
    # The newer name wins; the older one is still what most clients send.
    newer = optional_int(body, "max_completion_tokens")
    return newer if newer is not None else optional_int(body, "max_tokens")


def _include_usage(body: dict[str, Any]) -> bool:
    options = body.get("stream_options")
    if options is None:
        return False
    if not isinstance(options, dict):
        raise invalid("stream_options", "must be an object")
    return optional_bool(options, "include_usage", "stream_options.include_usage")


def optional_int(body: dict[str, Any], name: str) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise invalid(name, "must be a positive integer")
    return value


def optional_bool(body: dict[str, Any], name: str, param: str | None = None) -> bool:
    value = body.get(name, False)
    if not isinstance(value, bool):
        raise invalid(param or name, "must be a boolean")
    return value


def _inputs(value: Any) -> list[str | list[int]]:
    if isinstance(value, str):
        return [_text(value, "input")]
    if not isinstance(value, list) or not value:
        raise invalid("input", "must be a non-empty string or a non-empty list")
    if len(value) > MAX_EMBEDDING_INPUTS:
        raise invalid("input", f"must hold at most {MAX_EMBEDDING_INPUTS} inputs")
    if all(isinstance(item, str) for item in value):
        return [_text(item, f"input[{i}]") for i, item in enumerate(value)]
    if all(_is_token(item) for item in value):
        return [value]  # one input, already tokenized
    if all(isinstance(item, list) for item in value):
        return [_token_list(item, f"input[{i}]") for i, item in enumerate(value)]
    raise invalid("input", "must be a string, a list of strings, or token lists")


def _text(value: str, param: str) -> str:
    if not value:
        raise invalid(param, "must not be empty")
    return value


def _is_token(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _token_list(value: list[Any], param: str) -> list[int]:
    if not value or not all(_is_token(token) for token in value):
        raise invalid(param, "must be a non-empty list of token ids (non-negative integers)")
    return value
