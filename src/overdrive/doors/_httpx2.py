"""The in-process door, httpx2 flavour: what openai 3.x (on httpx2) takes as its ``http_client``.

``od.http_client()`` is an ``httpx2.AsyncClient`` on :class:`Httpx2Transport`;
``od.http_client(sync=True)`` an ``httpx2.Client`` on :class:`SyncHttpx2Transport`.
Only the wrapping differs from the httpx (0.x) flavour in ``_transport.py``:
the door logic is :mod:`overdrive.doors._unknown` and ``_answer.py``, once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING

import httpx2

from ._answer import Answer
from ._sync import SyncRelay, respond_sync
from ._unknown import UnknownPaths, passage_of, respond_to

if TYPE_CHECKING:
    from ..coalesce import StreamReply
    from ._pipeline import Pipeline

__all__ = ["Httpx2Transport", "SyncHttpx2Transport"]


class Httpx2Transport(httpx2.AsyncBaseTransport):
    """API calls (and ``GET …/models``) into the engine, whatever the host; other
    paths as ``unknown_paths`` says (:mod:`overdrive.doors._unknown`)."""

    def __init__(self, engine: Pipeline, unknown_paths: UnknownPaths = "upstream") -> None:
        self._engine = engine
        self._unknown: UnknownPaths = unknown_paths

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        body = await request.aread()
        return _response(await respond_to(self._engine, request, body, self._unknown))


class SyncHttpx2Transport(httpx2.BaseTransport):
    """:class:`Httpx2Transport` for ``httpx2.Client``: each call runs on the engine's loop."""

    def __init__(self, engine: Pipeline, unknown_paths: UnknownPaths = "upstream") -> None:
        self._engine = engine
        self._unknown: UnknownPaths = unknown_paths

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        reply = respond_sync(self._engine, passage_of(request, request.read()), self._unknown)
        if reply.stream is None:
            return httpx2.Response(reply.status, headers=reply.headers, content=reply.body)
        stream = _SyncReplyStream(SyncRelay(self._engine, reply.stream))
        return httpx2.Response(reply.status, headers=reply.headers, stream=stream)


def _response(reply: Answer) -> httpx2.Response:
    if reply.stream is None:
        return httpx2.Response(reply.status, headers=reply.headers, content=reply.body)
    stream = _ReplyStream(reply.stream)
    return httpx2.Response(reply.status, headers=reply.headers, stream=stream)


class _ReplyStream(httpx2.AsyncByteStream):
    """Relays the streamed body chunk by chunk; closing it leaves the shared stream."""

    def __init__(self, reply: StreamReply) -> None:
        self._reply = reply

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._reply:
            yield chunk

    async def aclose(self) -> None:
        await self._reply.aclose()


class _SyncReplyStream(httpx2.SyncByteStream):
    def __init__(self, relay: SyncRelay) -> None:
        self._relay = relay

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._relay)

    def close(self) -> None:
        self._relay.close()
