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
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

from tests.fakes import SocketServer, read_request

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


class StreamUpstream(SocketServer):
    """Serves ``script``'s bodies on 127.0.0.1; counts requests and the bytes written."""

    def __init__(self, script: Script) -> None:
        super().__init__()
        self._script = script
        self.requests: list[dict[str, Any]] = []
        self.sent = 0  # body bytes the sockets took, over every answer
        self.answering = 0  # answers being written now
        self.hung_up = asyncio.Event()  # set when a client left in the middle of a body

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.answering += 1
        try:
            if not await self._answer(reader, writer):
                self.hung_up.set()  # gone before asking
        except (ConnectionError, asyncio.IncompleteReadError):
            self.hung_up.set()
        finally:
            self.answering -= 1

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Answer the connection's one request; False if none came."""
        request = await read_request(reader)
        if request is None:
            return False
        body: dict[str, Any] = json.loads(request[1])
        index = len(self.requests)
        self.requests.append(body)
        writer.write(_HEAD)
        async for chunk in self._script(index, body):
            writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            await writer.drain()
            self.sent += len(chunk)
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        return True
