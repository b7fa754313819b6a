"""A call as the pipeline sees it: checked arguments, its key material and its token cost."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ._errors import RequestError
from ._tokens import estimate_messages_tokens, estimate_tokens

__all__ = ["Call", "Result", "chat_call", "embeddings_call"]

# Reserved for the answer when a chat call sets no max_tokens; the real figure
# is settled from the reported usage once the answer arrives.
DEFAULT_OUTPUT_TOKENS = 256

CHAT_PATH = "/chat/completions"
EMBEDDINGS_PATH = "/embeddings"


@dataclass(slots=True, frozen=True)
class Call:
    """One OpenAI-compatible request: ``op`` is "chat" or "embeddings"."""

    op: str
    path: str
    body: Mapping[str, Any]
    model: str
    stream: bool
    tokens: int


@dataclass(slots=True, frozen=True)
class Result:
    """A complete response: ``source`` is "upstream", "cache" or "coalesced"."""

    status: int
    body: bytes
    upstream: str
    source: str = "upstream"

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


def chat_call(body: Mapping[str, Any]) -> Call:
    """Check a chat completion body and price it in tokens (prompt + answer budget)."""
    model = _model(body)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestError("messages", "expected a non-empty list of message objects")
    for index, message in enumerate(messages):
        if not isinstance(message, Mapping) or not isinstance(message.get("role"), str):
            raise RequestError(f"messages[{index}]", "expected an object with a string `role`")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise RequestError("stream", f"expected true or false, got {stream!r}")
    budget = _output_budget(body)
    return Call("chat", CHAT_PATH, body, model, stream, estimate_messages_tokens(messages) + budget)


def embeddings_call(body: Mapping[str, Any]) -> Call:
    """Check an embeddings body and price it in input tokens."""
    model = _model(body)
    texts = _embedding_inputs(body.get("input"))
    return Call("embeddings", EMBEDDINGS_PATH, body, model, False, sum(map(_input_tokens, texts)))


def _model(body: Mapping[str, Any]) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        raise RequestError("model", f"expected a non-empty model name, got {model!r}")
    return model


def _output_budget(body: Mapping[str, Any]) -> int:
    for field in ("max_completion_tokens", "max_tokens"):
        value = body.get(field)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise RequestError(field, f"expected a positive integer, got {value!r}")
        return value
    return DEFAULT_OUTPUT_TOKENS


def _embedding_inputs(value: Any) -> list[Any]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value:
        if all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            return [value]  # one input given as token ids
        if all(isinstance(v, str | list) for v in value):
            return value
    raise RequestError("input", "expected a string, a non-empty list of strings, or token id lists")


def _input_tokens(item: str | list[int]) -> int:
    return estimate_tokens(item) if isinstance(item, str) else len(item)
