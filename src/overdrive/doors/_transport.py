"""The in-process door, httpx (0.x) flavour: transports that send API calls through the engine.

For libraries that want an ``httpx.AsyncClient`` / ``httpx.Client`` (openai
before 3, langchain-openai's sync client on httpx): ``od.http_client(flavour="httpx")``.
The door logic is :mod:`overdrive.doors._unknown` and ``_answer.py``; this module
only turns httpx's requests into passages and answers into httpx responses
(``_httpx2.py`` does the same for httpx2).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING

import httpx

from ._answer import Answer, error_answer, models_payload
from ._sync import SyncRelay, respond_sync
from ._unknown import UnknownPaths, passage_of, respond_to

if TYPE_CHECKING:
    from ..coalesce import StreamReply
    from ._pipeline import Pipeline

__all__ = ["EngineTransport", "SyncEngineTransport", "error_response", "models_payload"]


class EngineTransport(httpx.AsyncBaseTransport):
    """Routes every registered API family's calls (``POST …/chat/completions``,
    ``POST …/embeddings``, see :mod:`overdrive.apis`) and ``GET …/models`` into the
    engine, whatever the host; any other path as ``unknown_paths`` says (see
    :mod:`overdrive.doors._unknown`): never to the host the client named."""

    def __init__(self, engine: Pipeline, unknown_paths: UnknownPaths = "upstream") -> None:
        self._engine = engine
        self._unknown: UnknownPaths = unknown_paths

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = await request.aread()
        return _response(await respond_to(self._engine, request, body, self._unknown))


class SyncEngineTransport(httpx.BaseTransport):
    """:class:`EngineTransport` for ``httpx.Client``: each call runs on the engine's loop."""

    def __init__(self, engine: Pipeline, unknown_paths: UnknownPaths = "upstream") -> None:
        self._engine = engine
        self._unknown: UnknownPaths = unknown_paths

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        reply = respond_sync(self._engine, passage_of(request, request.read()), self._unknown)
        if reply.stream is None:
            return httpx.Response(reply.status, headers=reply.headers, content=reply.body)
        stream = _SyncReplyStream(SyncRelay(self._engine, reply.stream))
        return httpx.Response(reply.status, headers=reply.headers, stream=stream)


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


class _SyncReplyStream(httpx.SyncByteStream):
    def __init__(self, relay: SyncRelay) -> None:
        self._relay = relay

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._relay)

    def close(self) -> None:
        self._relay.close()


def error_response(status: int, message: str, kind: str, param: str | None) -> httpx.Response:
    """An HTTP error in the OpenAI error shape, which the openai client turns into its errors."""
    return _response(error_answer(status, message, kind, param))
