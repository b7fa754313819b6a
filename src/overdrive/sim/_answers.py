"""What the sim answers, byte for byte: chat completions and chunks, tool calls, embeddings, models.

Every body is deterministic in the request (and the seed), so a test or a
benchmark can tell a cached answer from a fresh one by its bytes alone.
"""

from __future__ import annotations

import time
from typing import Any

from overdrive._json import dumps
from overdrive.sim._content import (
    chat_digest,
    completion_words,
    embedding,
    embedding_base64,
    input_key,
    sentence,
    stream_pieces,
)
from overdrive.sim._limits import Rejection
from overdrive.sim._requests import ChatRequest, EmbeddingRequest
from overdrive.sim._tools import ToolSpec, tool_arguments

__all__ = ["ChatAnswer", "ToolCall", "embeddings_body", "models_body", "rate_limit_message"]

_CREATED = 1_700_000_000  # fixed, so /v1/models is byte-identical across runs
# A tool call's arguments stream in pieces this long: about a token each.
_CHARS_PER_PIECE = 4


class ChatAnswer:
    """The deterministic answer to one chat request, in the shapes we send it.

    Text, or a call of the tool the request's ``tool`` names (its arguments
    drawn from the same digest as the words would be). ``cached_tokens`` is
    set by the app when the deployment caches prompt prefixes: the usage then
    reports them in ``prompt_tokens_details``, where OpenAI does.
    """

    __slots__ = (
        "cached_tokens",
        "created",
        "finish_reason",
        "id",
        "request",
        "tokens",
        "tool_call",
        "words",
    )

    def __init__(self, request: ChatRequest, cap: int | None) -> None:
        digest = chat_digest(request.model, request.messages, cap)
        self.request = request
        self.words, capped = completion_words(digest, cap)
        self.tool_call = None if request.tool is None else ToolCall(request.tool, digest)
        if self.tool_call is None:
            self.tokens = len(self.words)  # one word, one token
            self.finish_reason = "length" if capped else "stop"
        else:
            self.tokens = len(self.tool_call.pieces)  # one piece of the arguments, one token
            self.finish_reason = "tool_calls"
        self.id = "chatcmpl-" + digest[:12].hex()
        self.created = int(time.time())
        self.cached_tokens: int | None = None

    def usage(self) -> dict[str, Any]:
        prompt = self.request.prompt_tokens
        usage: dict[str, Any] = {
            "prompt_tokens": prompt,
            "completion_tokens": self.tokens,
            "total_tokens": prompt + self.tokens,
        }
        if self.cached_tokens is not None:  # absent without a prefix cache, as it always was
            usage["prompt_tokens_details"] = {"cached_tokens": self.cached_tokens}
        return usage

    def completion(self) -> bytes:
        message: dict[str, Any] = {"role": "assistant", "content": None, "refusal": None}
        if self.tool_call is None:
            message["content"] = sentence(self.words)
        else:
            message["tool_calls"] = [self.tool_call.chat()]
        choice = {
            "index": 0,
            "message": message,
            "logprobs": None,
            "finish_reason": self.finish_reason,
        }
        return dumps(self._envelope("chat.completion", [choice]) | {"usage": self.usage()})

    def deltas(self) -> list[dict[str, Any]]:
        """The ``delta`` of each streamed chunk before the last: the role, then a token each."""
        call = self.tool_call
        if call is None:
            first: dict[str, Any] = {"role": "assistant", "content": ""}
            return [first] + [{"content": piece} for piece in stream_pieces(self.words)]
        opening = call.chat() | {"index": 0, "function": {"name": call.name, "arguments": ""}}
        first = {"role": "assistant", "content": None, "tool_calls": [opening]}
        pieces = [{"index": 0, "function": {"arguments": piece}} for piece in call.pieces]
        return [first] + [{"tool_calls": [piece]} for piece in pieces]

    def chunk(self, delta: dict[str, Any], finish_reason: str | None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return dumps(self._envelope("chat.completion.chunk", [choice]))

    def usage_chunk(self) -> bytes:
        return dumps(self._envelope("chat.completion.chunk", []) | {"usage": self.usage()})

    def _envelope(self, kind: str, choices: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": kind,
            "created": self.created,
            "model": self.request.model,
            "system_fingerprint": "overdrive-sim",
            "choices": choices,
        }

    def __repr__(self) -> str:
        return f"ChatAnswer(id={self.id!r}, tokens={self.tokens}, finish={self.finish_reason!r})"


class ToolCall:
    """One deterministic call of an offered tool: its id, name and JSON arguments.

    >>> call = ToolCall(ToolSpec("lookup", {}), bytes(range(64)))
    >>> call.id, call.arguments, "".join(call.pieces) == call.arguments
    ('call_0c0d0e0f101112131415161718191a1b', '{}', True)
    """

    __slots__ = ("arguments", "id", "name", "pieces")

    def __init__(self, tool: ToolSpec, digest: bytes) -> None:
        self.name = tool.name
        self.arguments = dumps(tool_arguments(tool, digest)).decode()
        # The id from digest bytes the answer's length and first words do not start with.
        self.id = "call_" + digest[12:28].hex()
        arguments = self.arguments
        self.pieces = [
            arguments[i : i + _CHARS_PER_PIECE] for i in range(0, len(arguments), _CHARS_PER_PIECE)
        ]

    def chat(self) -> dict[str, Any]:
        """The call as a chat message's ``tool_calls`` entry."""
        function = {"name": self.name, "arguments": self.arguments}
        return {"id": self.id, "type": "function", "function": function}

    def __repr__(self) -> str:
        return f"ToolCall({self.name!r}, {self.arguments!r})"


def models_body(models: tuple[str, ...]) -> bytes:
    data = [
        {"id": m, "object": "model", "created": _CREATED, "owned_by": "overdrive-sim"}
        for m in models
    ]
    return dumps({"object": "list", "data": data})


def embeddings_body(request: EmbeddingRequest, dimensions: int) -> bytes:
    data = []
    for index, item in enumerate(request.inputs):
        vector = embedding(input_key(item), dimensions)
        encoded = embedding_base64(vector) if request.base64 else vector.tolist()
        data.append({"object": "embedding", "index": index, "embedding": encoded})
    usage = {"prompt_tokens": request.tokens, "total_tokens": request.tokens}
    return dumps({"object": "list", "data": data, "model": request.model, "usage": usage})


def rate_limit_message(rejection: Rejection, capacity: float) -> str:
    kind, limit, needed = rejection.kind, rejection.limit, rejection.needed
    if needed > capacity:
        return (
            f"Request too large for {kind} per minute: limit {limit}, requested {needed}, "
            f"and the bucket holds at most {capacity:.0f}."
        )
    return (
        f"Rate limit reached for {kind} per minute: limit {limit}, requested {needed}. "
        f"Please try again in {rejection.wait_s:.3f}s."
    )
