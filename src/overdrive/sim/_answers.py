"""What the sim answers, byte for byte: chat completions and chunks, embeddings, models, limits.

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
)
from overdrive.sim._limits import Rejection
from overdrive.sim._requests import ChatRequest, EmbeddingRequest

__all__ = ["ChatAnswer", "embeddings_body", "models_body", "rate_limit_message"]

_CREATED = 1_700_000_000  # fixed, so /v1/models is byte-identical across runs


class ChatAnswer:
    """The deterministic answer to one chat request, in the shapes we send it."""

    __slots__ = ("created", "finish_reason", "id", "request", "tokens", "words")

    def __init__(self, request: ChatRequest, cap: int | None) -> None:
        digest = chat_digest(request.model, request.messages, cap)
        self.request = request
        self.words, capped = completion_words(digest, cap)
        self.tokens = len(self.words)  # one word, one token
        self.finish_reason = "length" if capped else "stop"
        self.id = "chatcmpl-" + digest[:12].hex()
        self.created = int(time.time())

    def usage(self) -> dict[str, int]:
        prompt = self.request.prompt_tokens
        return {
            "prompt_tokens": prompt,
            "completion_tokens": self.tokens,
            "total_tokens": prompt + self.tokens,
        }

    def completion(self) -> bytes:
        message = {"role": "assistant", "content": sentence(self.words), "refusal": None}
        choice = {
            "index": 0,
            "message": message,
            "logprobs": None,
            "finish_reason": self.finish_reason,
        }
        return dumps(self._envelope("chat.completion", [choice]) | {"usage": self.usage()})

    def chunk(self, delta: dict[str, str], finish_reason: str | None) -> bytes:
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
