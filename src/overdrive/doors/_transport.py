"""The in-process door: an httpx transport that sends API calls through the engine."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import httpx

from ._answer import Answer, answer, error_answer, models_payload, route

if TYPE_CHECKING:
    from ..coalesce import StreamReply
    from ._pipeline import Pipeline

__all__ = ["EngineTransport", "error_response", "models_payload"]


class EngineTransport(httpx.AsyncBaseTransport):
    """Routes every registered API family's calls (``POST …/chat/completions``,
    ``POST …/embeddings``, see :mod:`overdrive.apis`) and ``GET …/models`` into the
    engine, whatever the host; every other request goes out untouched."""

    def __init__(
        self, engine: Pipeline, passthrough: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self._engine = engine
        self._passthrough = passthrough or httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        kind = route(request.method, request.url.path)
        if kind is None:
            return await self._passthrough.handle_async_request(request)
        body = await request.aread()
        return _response(await answer(self._engine, kind, request.headers, body))

    async def aclose(self) -> None:
        await self._passthrough.aclose()


def _response(reply: Answer) -> httpx.Response:
    if reply.stream is None:
        return httpx.Response(reply.status, headers=reply.headers, content=reply.body)
    return httpx.Response(reply.status, headers=reply.headers, stream=_ReplyStream(reply.stream))


class _ReplyStream(httpx.AsyncByteStream):
    """Relays the streamed body chunk by chunk; closing it leaves the shared stream."""

    def __init__(self, reply: StreamReply) -> None:
        self._reply = reply

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._reply:
            yield chunk

    async def aclose(self) -> None:
        await self._reply.aclose()


def error_response(status: int, message: str, kind: str, param: str | None) -> httpx.Response:
    """An HTTP error in the OpenAI error shape, which the openai client turns into its errors."""
    return _response(error_answer(status, message, kind, param))
