"""A raw-socket upstream that streams scripted SSE bodies, as long ones as a test likes.

It sits below the production path: the engine's own stream client reads
every byte it writes, framing and all. Each request is answered ``200`` with
a chunked ``text/event-stream`` body made by ``script(index, request)``,
then the connection is closed::

    async def script(index: int, request: dict[str, Any]) -> AsyncIterator[bytes]:
        yield sse({"choices": []})
        yield DONE

    async with StreamUpstream(script) as upstream:
        config = {"upstreams": [{"name": "u", "base_url": upstream.base_url, "models": ["m"]}]}

The body is written chunk by chunk, each waiting for the socket to take it
(``drain``), so a client that stops reading stops the script too.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from types import TracebackType
from typing import Any

__all__ = ["DONE", "StreamUpstream", "chat_chunk", "sse"]

Script = Callable[[int, dict[str, Any]], AsyncIterator[bytes]]

DONE = b"data: [DONE]\n\n"
_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
    b"transfer-encoding: chunked\r\nconnection: close\r\n\r\n"
)


def sse(payload: dict[str, Any]) -> bytes:
    """One ``data:`` event."""
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


def chat_chunk(text: str, model: str = "m") -> bytes:
    """One ``chat.completion.chunk`` event carrying ``text``."""
    delta = {"index": 0, "delta": {"content": text}, "finish_reason": None}
    return sse({"object": "chat.completion.chunk", "model": model, "choices": [delta]})


class StreamUpstream:
    """Serves ``script``'s bodies on 127.0.0.1; counts requests and the bytes written."""

    def __init__(self, script: Script) -> None:
        self._script = script
        self._server: asyncio.Server | None = None
        self.requests: list[dict[str, Any]] = []
        self.sent = 0  # body bytes the sockets took, over every answer
        self.answering = 0  # answers being written now
        self.hung_up = asyncio.Event()  # set when a client left in the middle of a body

    @property
    def base_url(self) -> str:
        assert self._server is not None, "use it as `async with`"
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/v1"

    async def __aenter__(self) -> StreamUpstream:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.answering += 1
        try:
            request = await _read_request(reader)
            index = len(self.requests)
            self.requests.append(request)
            writer.write(_HEAD)
            async for chunk in self._script(index, request):
                writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                await writer.drain()
                self.sent += len(chunk)
            writer.write(b"0\r\n\r\n")
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            self.hung_up.set()
        finally:
            self.answering -= 1
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


async def _read_request(reader: asyncio.StreamReader) -> dict[str, Any]:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    body: dict[str, Any] = json.loads(await reader.readexactly(length))
    return body
