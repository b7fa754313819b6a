"""A raw-socket fake upstream: answers each request with scripted bytes, however wrong.

Engine tests point a real ``base_url`` at it, so the production clients (the
lean wire client, and httpx for streams) read every byte it sends::

    def script(request: Request) -> Reply:
        return Reply(answer(chat_body(echo(request))))

    async with HostileUpstream(script) as upstream:
        config = {"upstreams": [{"name": "u", "base_url": upstream.base_url, "models": ["m"]}]}
        async with Overdrive.from_config(config) as od:
            reply = await od.chat(model="m", messages=[{"role": "user", "content": "hi"}])
        await upstream.wait_all_closed()  # every socket the client opened is closed

``script`` sees each request as read (its number across all connections and
on its own connection, its head and body) and returns the :class:`Reply`:
bytes written as they are (each part flushed on its own), then what becomes
of the connection: kept for the next request, closed, reset (an RST, as a
crashed server sends) or held open unanswered until the client leaves.
Given an ``ssl.SSLContext`` it serves HTTPS.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import ssl
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

from tests.fakes import SocketServer, read_request

__all__ = [
    "HostileUpstream",
    "Reply",
    "Request",
    "answer",
    "chat_body",
    "chunked",
    "echo",
    "sse_answer",
]

Then = Literal["keep", "close", "reset", "hold"]


@dataclass(frozen=True, slots=True)
class Request:
    """One request as the fake read it."""

    index: int  # 0-based, across every connection
    on_connection: int  # 0-based, on its own connection
    head: bytes
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class Reply:
    """The bytes to send back, then: keep the connection, close it, reset it, or hold it.

    >>> Reply(answer(b"{}"), b"HTTP/1.1 200 OK\\r\\n", then="close").then
    'close'
    """

    __slots__ = ("parts", "then")

    def __init__(self, *parts: bytes, then: Then = "keep") -> None:
        self.parts = parts  # each written and flushed on its own
        self.then = then

    def __repr__(self) -> str:
        return f"Reply({sum(map(len, self.parts))} bytes in {len(self.parts)}, then={self.then})"


Script = Callable[[Request], Reply]


class HostileUpstream(SocketServer):
    """An asyncio server on 127.0.0.1 that answers every request as ``script`` says.

    ``connections`` counts the connections accepted, ``open_sockets`` those
    not yet closed, ``requests`` every request read, in order.
    """

    def __init__(self, script: Script, tls: ssl.SSLContext | None = None) -> None:
        super().__init__(tls=tls)
        self._script = script
        self.requests: list[Request] = []

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # drain() then waits until every byte is with the kernel: a reset or a
        # close after it drops nothing the script meant to send.
        writer.transport.set_write_buffer_limits(high=0)
        # A head too long is what no client of ours sends: that connection is done.
        with contextlib.suppress(asyncio.LimitOverrunError):
            await self._converse(reader, writer)

    async def _converse(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Answer request after request until the script ends the connection or the client does."""
        on_connection = 0
        while (read := await read_request(reader)) is not None:
            request = Request(len(self.requests), on_connection, *read)
            self.requests.append(request)
            on_connection += 1
            reply = self._script(request)
            for part in reply.parts:
                writer.write(part)
                await writer.drain()
            if reply.then != "keep":
                await _end(reply.then, reader, writer)
                return


async def _end(then: Then, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    if then == "reset":  # an RST, as from a crashed server: SO_LINGER on, zero timeout
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()
    elif then == "hold":
        await reader.read()  # unanswered, until the client gives up and closes
    else:  # close: a FIN after the bytes, as a server that is done sends it
        writer.close()
        await writer.wait_closed()


# --- what to send ------------------------------------------------------------------------


def answer(body: bytes, *, status: bytes = b"200 OK", headers: Iterable[bytes] = ()) -> bytes:
    """A whole HTTP/1.1 answer framed by its content-length."""
    head = [b"HTTP/1.1 " + status, b"content-type: application/json"]
    head += [b"content-length: %d" % len(body), *headers]
    return b"\r\n".join(head) + b"\r\n\r\n" + body


def chunked(
    *parts: bytes,
    end: bool = True,
    content_type: bytes = b"text/event-stream",
    headers: Iterable[bytes] = (),
) -> bytes:
    """A 200 answer in chunks, one per part; ``end=False`` leaves out the last chunk."""
    head = [b"HTTP/1.1 200 OK", b"content-type: " + content_type]
    head += [b"transfer-encoding: chunked", *headers]
    body = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in parts if part)
    return b"\r\n".join(head) + b"\r\n\r\n" + body + (b"0\r\n\r\n" if end else b"")


def echo(request: Request) -> str:
    """What the fake answers a chat request with: its last message's content, marked."""
    return f"echo: {request.json()['messages'][-1]['content']}"


def chat_body(text: str, model: str = "m") -> bytes:
    """A chat completion whose one choice says ``text``."""
    message = {"role": "assistant", "content": text}
    payload = {
        "id": "chatcmpl-hostile",
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }
    return json.dumps(payload).encode()


def sse_answer(
    text: str, model: str = "m", *, end: bool = True, headers: Iterable[bytes] = ()
) -> bytes:
    """A streamed chat answer saying ``text`` a word per event, chunked, ``[DONE]`` last.

    ``end=False`` stops before ``[DONE]`` and the last chunk: a stream cut short.
    """
    first, *others = text.split(" ")
    events = [_chunk_event(piece, model) for piece in [first, *(f" {w}" for w in others)]]
    if end:
        events.append(b"data: [DONE]\n\n")
    return chunked(*events, end=end, headers=headers)


def _chunk_event(content: str, model: str) -> bytes:
    delta = {"index": 0, "delta": {"content": content}, "finish_reason": None}
    payload = {"id": "c", "object": "chat.completion.chunk", "model": model, "choices": [delta]}
    return b"data: " + json.dumps(payload).encode() + b"\n\n"
