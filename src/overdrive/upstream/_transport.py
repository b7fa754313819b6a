"""The in-process door: an httpx transport that sends OpenAI API calls through the engine."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any

import httpx

from .._calls import Admission, Call, admission, chat_call, embeddings_call
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

__all__ = ["EngineTransport"]


class EngineTransport(httpx.AsyncBaseTransport):
    """Routes ``POST …/chat/completions``, ``POST …/embeddings`` and ``GET …/models``
    into the engine, whatever the host; every other request goes out untouched."""

    def __init__(
        self, engine: Overdrive, passthrough: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self._engine = engine
        self._passthrough = passthrough or httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        route = _route(request.method, request.url.path)
        if route is None:
            return await self._passthrough.handle_async_request(request)
        try:
            with _admission_from(request.headers):
                return await self._serve(route, request)
        except QueueFullError as exc:
            return error_response(429, str(exc), "queue_full", None)
        except QueueTimeoutError as exc:
            return error_response(504, str(exc), "queue_timeout", None)
        except UnknownModelError as exc:
            return error_response(404, str(exc), "model_not_found", exc.field)
        except RequestError as exc:
            return error_response(400, str(exc), "invalid_request_error", exc.field)
        except UpstreamError as exc:
            return error_response(502, str(exc), "upstream_error", None)

    async def _serve(self, route: str, request: httpx.Request) -> httpx.Response:
        if route == "models":
            return httpx.Response(200, content=dumps(models_payload(self._engine.models())))
        body = _json_body(await request.aread())
        call = chat_call(body) if route == "chat" else embeddings_call(body)
        if call.stream:
            return await self._stream(call)
        result = await self._engine.request(call)
        headers = {
            "content-type": "application/json",
            "x-overdrive-cache": "HIT" if result.source == "cache" else "MISS",
            "x-overdrive-upstream": result.upstream,
        }
        return httpx.Response(result.status, headers=headers, content=result.body)

    async def _stream(self, call: Call) -> httpx.Response:
        reply = await self._engine.open_stream(call)
        headers = {
            "content-type": reply.headers.get("content-type", "text/event-stream"),
            "x-overdrive-cache": "HIT" if reply.source == "cache" else "MISS",
            "x-overdrive-upstream": reply.upstream,
        }
        return httpx.Response(reply.status, headers=headers, stream=_ReplyStream(reply))

    async def aclose(self) -> None:
        await self._passthrough.aclose()


class _ReplyStream(httpx.AsyncByteStream):
    """Relays the streamed body chunk by chunk; closing it leaves the shared stream."""

    def __init__(self, reply: StreamReply) -> None:
        self._reply = reply

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._reply:
            yield chunk

    async def aclose(self) -> None:
        await self._reply.aclose()


PRIORITY_HEADER = "x-overdrive-priority"
QUEUE_TIMEOUT_HEADER = "x-overdrive-queue-timeout"


def _admission_from(headers: httpx.Headers) -> AbstractContextManager[Admission | None]:
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


def _route(method: str, path: str) -> str | None:
    if method == "POST" and path.endswith("/chat/completions"):
        return "chat"
    if method == "POST" and path.endswith("/embeddings"):
        return "embeddings"
    if method == "GET" and path.endswith("/models"):
        return "models"
    return None


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


def error_response(status: int, message: str, kind: str, param: str | None) -> httpx.Response:
    """An HTTP error in the OpenAI error shape, which the openai client turns into its errors."""
    body = {"error": {"message": message, "type": kind, "param": param, "code": kind}}
    return httpx.Response(status, headers={"content-type": "application/json"}, content=dumps(body))
