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
import json
import socket
import ssl
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

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

# A request head longer than this is not one an overdrive client sends.
_MAX_REQUEST_HEAD = 64 * 1024
# How long a client may take to close every socket it opened, once told to.
_CLOSE_WAIT_S = 5.0

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


class HostileUpstream:
    """An asyncio server on 127.0.0.1 that answers every request as ``script`` says.

    ``connections`` counts the connections accepted, ``open_sockets`` those
    not yet closed, ``requests`` every request read, in order.
    """

    def __init__(self, script: Script, tls: ssl.SSLContext | None = None) -> None:
        self._script = script
        self._tls = tls
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self._changed = asyncio.Event()
        self.connections = 0
        self.open_sockets = 0
        self.requests: list[Request] = []

    @property
    def base_url(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"{'https' if self._tls else 'http'}://127.0.0.1:{port}/v1"

    async def __aenter__(self) -> HostileUpstream:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self._tls)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()
        for handler in list(self._handlers):
            handler.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        await self._server.wait_closed()

    async def wait_all_closed(self) -> None:
        """Return once every accepted connection is closed; TimeoutError if one stays open."""
        async with asyncio.timeout(_CLOSE_WAIT_S):
            while self.open_sockets:
                self._changed.clear()
                await self._changed.wait()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self.connections += 1
        self.open_sockets += 1
        # drain() then waits until every byte is with the kernel: a reset or a
        # close after it drops nothing the script meant to send.
        writer.transport.set_write_buffer_limits(high=0)
        try:
            await self._converse(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass  # the client left or sent what no client of ours sends: this one is done
        except asyncio.CancelledError:
            pass  # the fake is closing: ending quietly spares the loop a "never retrieved"
        finally:
            self._handlers.discard(task)
            writer.transport.abort()  # no-op after a close or reset
            self.open_sockets -= 1
            self._changed.set()

    async def _converse(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Answer request after request until the script ends the connection or the client does."""
        on_connection = 0
        while True:
            request = await _read_request(reader, len(self.requests), on_connection)
            if request is None:
                return
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


async def _read_request(
    reader: asyncio.StreamReader, index: int, on_connection: int
) -> Request | None:
    """One request (its head, then a body of its content-length); None at end of stream."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    if len(head) > _MAX_REQUEST_HEAD:
        raise asyncio.LimitOverrunError("request head too long", len(head))
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return Request(index, on_connection, head, await reader.readexactly(length))


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
