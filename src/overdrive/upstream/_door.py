"""What every HTTP door does with an OpenAI API call: route it, run it, answer it.

The in-process httpx transport and the gateway both hand a request's method,
path, headers and body here and get an :class:`Answer` back: a status, headers
and either a whole body or a :class:`StreamReply` to relay chunk by chunk.
Engine errors become OpenAI-style error answers in one place, so both doors
map them the same way.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .._calls import Admission, CacheMode, admission, chat_call, embeddings_call
from .._errors import (
    QueueFullError,
    QueueTimeoutError,
    RequestError,
    UnknownModelError,
    UpstreamError,
)
from .._json import JSONDecodeError, dumps, loads

if TYPE_CHECKING:
    from ..engine import Overdrive
    from ._stream_flight import StreamReply

__all__ = [
    "PRIORITY_HEADER",
    "QUEUE_TIMEOUT_HEADER",
    "Answer",
    "answer",
    "error_answer",
    "models_payload",
    "route",
]

PRIORITY_HEADER = "x-overdrive-priority"
QUEUE_TIMEOUT_HEADER = "x-overdrive-queue-timeout"
_JSON = "application/json"


@dataclass(slots=True)
class Answer:
    """A door's reply: ``body`` when whole, ``stream`` (to relay, then close) when streamed."""

    status: int
    headers: dict[str, str]
    body: bytes = b""
    stream: StreamReply | None = field(default=None)


def route(method: str, path: str) -> str | None:
    """ "chat", "embeddings" or "models" for an OpenAI API call, None for anything else."""
    if method == "POST" and path.endswith("/chat/completions"):
        return "chat"
    if method == "POST" and path.endswith("/embeddings"):
        return "embeddings"
    if method == "GET" and path.endswith("/models"):
        return "models"
    return None


async def answer(engine: Overdrive, kind: str, headers: Mapping[str, str], body: bytes) -> Answer:
    """Run one call of ``kind`` (see :func:`route`) through ``engine``; errors become answers.

    Errors the engine does not know as a caller's or an upstream's fault propagate.
    """
    try:
        with _admission_from(headers):
            return await _serve(engine, kind, headers, body)
    except QueueFullError as exc:
        return error_answer(429, str(exc), "queue_full")
    except QueueTimeoutError as exc:
        return error_answer(504, str(exc), "queue_timeout")
    except UnknownModelError as exc:
        return error_answer(404, str(exc), "model_not_found", exc.field)
    except RequestError as exc:
        return error_answer(400, str(exc), "invalid_request_error", exc.field)
    except UpstreamError as exc:
        return error_answer(502, str(exc), "upstream_error")


def cache_mode(value: str | None) -> CacheMode:
    """What a request's ``Cache-Control`` asks of the cache (other directives are ignored)."""
    directives = {part.strip().split("=", 1)[0].lower() for part in (value or "").split(",")}
    if "no-store" in directives:
        return "no-store"
    return "no-cache" if "no-cache" in directives else "default"


async def _serve(engine: Overdrive, kind: str, headers: Mapping[str, str], body: bytes) -> Answer:
    if kind == "models":
        return Answer(200, {"content-type": _JSON}, dumps(models_payload(engine.models())))
    request = _json_body(body)
    call = chat_call(request) if kind == "chat" else embeddings_call(request)
    call = dataclasses.replace(call, cache=cache_mode(headers.get("cache-control")))
    if call.stream:
        reply = await engine.open_stream(call)
        content_type = reply.headers.get("content-type", "text/event-stream")
        return Answer(
            reply.status, _marks(content_type, reply.source, reply.upstream), stream=reply
        )
    result = await engine.request(call)
    return Answer(result.status, _marks(_JSON, result.source, result.upstream), result.body)


def _marks(content_type: str, source: str, upstream: str) -> dict[str, str]:
    return {
        "content-type": content_type,
        "x-overdrive-cache": "HIT" if source == "cache" else "MISS",
        "x-overdrive-upstream": upstream,
    }


def _admission_from(headers: Mapping[str, str]) -> AbstractContextManager[Admission | None]:
    """``admission(...)`` as the request's headers ask, or as the caller's context set it."""
    priority, timeout = headers.get(PRIORITY_HEADER), headers.get(QUEUE_TIMEOUT_HEADER)
    if priority is None and timeout is None:
        return nullcontext()
    try:
        level = int(priority) if priority is not None else 0
    except ValueError:
        raise RequestError(PRIORITY_HEADER, f"expected an integer, got {priority!r}") from None
    try:
        return admission(level, timeout)
    except RequestError as exc:
        raise RequestError(QUEUE_TIMEOUT_HEADER, exc.problem) from None


def _json_body(raw: bytes) -> dict[str, Any]:
    try:
        body = loads(raw)
    except JSONDecodeError:
        raise RequestError("<body>", "expected a JSON object, got malformed JSON") from None
    if not isinstance(body, dict):
        raise RequestError("<body>", f"expected a JSON object, got {type(body).__name__}")
    return body


def models_payload(models: list[str]) -> dict[str, Any]:
    """The OpenAI ``GET /models`` answer for ``models``."""
    data = [{"id": m, "object": "model", "created": 0, "owned_by": "overdrive"} for m in models]
    return {"object": "list", "data": data}


def error_answer(status: int, message: str, kind: str, param: str | None = None) -> Answer:
    """An error in the OpenAI shape, which the openai client turns into its errors."""
    body = {"error": {"message": message, "type": kind, "param": param, "code": kind}}
    return Answer(status, {"content-type": _JSON}, dumps(body))
