"""The gateway's own HTTP/1.1 protocol on httptools, run by uvicorn's server.

uvicorn serves any ASGI app, and pays for that on every request: a scope
dict, a request-response cycle object, an ``asyncio.Event`` to hand the body
over, message dicts both ways, a keep-alive timer armed and cancelled, and
the head and the body written apart. Against a zero-latency upstream that
machinery cost the gateway about 13 of the 76 µs of CPU each request took.

:class:`GatewayProtocol` speaks HTTP/1.1 to a :class:`GatewayApp` directly
(``app.serve(method, path, headers, body)``) and writes each whole answer in
one system call. uvicorn still runs everything around it: sockets, worker
processes, signals, the lifespan, and the graceful drain, which calls
:meth:`GatewayProtocol.shutdown` on every connection. The app stays a plain
ASGI app for any other server.

What a client gets, as from uvicorn: keep-alive (closed after
``timeout_keep_alive`` s of silence), pipelined requests answered in order,
``Expect: 100-continue``, chunked request bodies, streamed answers in chunked
encoding, 400 for what does not parse, and 413 (then close) for a body over
the app's ``max_body_bytes``: its rest is read and dropped, not kept, so the
client is not cut off mid-send and sees the answer.
"""

from __future__ import annotations

import asyncio
import logging
import urllib.parse
from collections import deque
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, cast

import httptools

from ..upstream._door import Answer
from ._app import DOOR_HEADERS, GatewayApp

if TYPE_CHECKING:
    import uvicorn
    from uvicorn.server import ServerState

    from ..upstream import StreamReply

__all__ = ["GatewayProtocol"]

_log = logging.getLogger("overdrive.gateway")
# Complete requests a client may queue behind the one being answered before we stop
# reading (as uvicorn does): each may hold a body of up to ``max_body_bytes``.
_PIPELINE_DEPTH = 1
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_MAX_URL = 64 * 1024
_LAST_CHUNK = b"0\r\n\r\n"


class _Request:
    """One request as it is parsed: what the app needs, and how to answer it."""

    __slots__ = ("body", "headers", "keep_alive", "method", "path", "refused", "size", "url")

    def __init__(self) -> None:
        self.url = b""
        self.method = ""
        self.path = ""
        self.headers: dict[str, str] = {}
        self.body: list[bytes] = []
        self.size = 0
        self.keep_alive = True
        # Set when the body is over the limit: answered 413, the rest of it dropped.
        self.refused = False


class GatewayProtocol(asyncio.Protocol):
    """HTTP/1.1 for a :class:`GatewayApp`, built by uvicorn once per connection.

    >>> uvicorn.run(GatewayApp("overdrive.toml"), http=GatewayProtocol)  # doctest: +SKIP
    """

    def __init__(
        self,
        config: uvicorn.Config,
        server_state: ServerState,
        app_state: dict[str, Any] | None = None,
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        if not config.loaded:
            config.load()
        self._app = gateway_app(config.loaded_app)
        self._state = server_state
        # uvicorn types this as a set of its own protocols; it only needs ``shutdown()``.
        self._connections: set[Any] = server_state.connections
        self._keep_alive_s = float(config.timeout_keep_alive)
        self._loop = _loop or asyncio.get_running_loop()
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._parsing: _Request | None = None
        self._queue: deque[_Request] = deque()
        self._serving: asyncio.Task[None] | None = None
        self._relaying = False
        self._closing = False  # no request is started once the connection is ending
        self._writable: asyncio.Future[None] | None = None  # while the peer's buffer is full
        self._idle_timer: asyncio.TimerHandle | None = None
        self._heard_at = self._done_at = 0.0

    # -- the connection ----------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports quack like asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)
        self._connections.add(self)
        self._done_at = self._loop.time()
        self._arm_idle_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._connections.discard(self)
        self._closing = True
        self._queue.clear()
        if self._idle_timer is not None:
            self._idle_timer.cancel()
        self._release_writers()
        # A relayed stream has nobody left to read it; a whole answer is left to
        # finish, so the engine still caches it for the next caller.
        if self._relaying and self._serving is not None:
            self._serving.cancel()

    def data_received(self, data: bytes) -> None:
        self._heard_at = self._loop.time()
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # No upgrades here: the request is answered as plain HTTP, then the connection ends.
            if self._queue:
                self._queue[-1].keep_alive = False
            else:
                self._closing = True
        except httptools.HttpParserError:
            self._refuse_garbage()

    def eof_received(self) -> bool | None:
        # None: the transport closes itself, as under uvicorn. A client that half-closes
        # after its request gets no answer; HTTP clients do not do that.
        return None

    def pause_writing(self) -> None:
        if self._writable is None:
            self._writable = self._loop.create_future()

    def resume_writing(self) -> None:
        self._release_writers()

    def shutdown(self) -> None:
        """uvicorn's graceful drain: close now if idle, else after the answer in flight."""
        self._closing = True
        self._queue.clear()
        if self._serving is None and self._transport is not None:
            self._transport.close()

    # -- parsing (httptools callbacks) -------------------------------------------

    def on_message_begin(self) -> None:
        self._parsing = _Request()

    def on_url(self, url: bytes) -> None:
        request = self._parsing
        assert request is not None
        request.url += url
        if len(request.url) > _MAX_URL:  # no route is that long: a client feeding us forever
            raise ValueError(f"request target over {_MAX_URL} bytes")

    def on_header(self, name: bytes, value: bytes) -> None:
        assert self._parsing is not None
        name = name.lower()
        if name in DOOR_HEADERS:
            self._parsing.headers[name.decode("latin-1")] = value.decode("latin-1")
        elif name == b"expect" and value.lower() == b"100-continue":
            self._parsing.headers["expect"] = "100-continue"
        elif name == b"content-length" and value.isdigit():
            self._parsing.size = int(value)  # declared: checked before any of it is read

    def on_headers_complete(self) -> None:
        request = self._parsing
        assert request is not None
        parser = self._parser
        request.method = parser.get_method().decode("ascii")
        request.keep_alive = parser.should_keep_alive()
        request.path = _path(request.url)
        declared, request.size = request.size, 0
        if declared > self._app.max_body_bytes:
            request.refused = True  # and no 100 Continue: the client had better not send it
        elif request.headers.pop("expect", None) and self._serving is None and not self._queue:
            self._write(_CONTINUE)

    def on_body(self, body: bytes) -> None:
        request = self._parsing
        assert request is not None
        if request.refused:
            return
        request.size += len(body)
        if request.size > self._app.max_body_bytes:
            request.refused = True
            request.body.clear()
        else:
            request.body.append(body)

    def on_message_complete(self) -> None:
        request, self._parsing = self._parsing, None
        assert request is not None
        if self._closing:
            return
        self._queue.append(request)
        if self._serving is None:
            self._start_next()
        elif len(self._queue) >= _PIPELINE_DEPTH and self._transport is not None:
            self._transport.pause_reading()

    # -- answering ---------------------------------------------------------------

    def _start_next(self) -> None:
        request = self._queue.popleft()
        task = self._loop.create_task(self._answer(request))
        self._serving = task
        # uvicorn's drain waits for these; _answer leaves the set itself as it ends
        # (a done callback would take one more turn of the loop per request).
        self._state.tasks.add(task)

    async def _answer(self, request: _Request) -> None:
        keep_alive = request.keep_alive and not request.refused
        try:
            if request.refused:
                reply = self._app.too_large()
            else:
                body = request.body[0] if len(request.body) == 1 else b"".join(request.body)
                reply = await self._app.serve(request.method, request.path, request.headers, body)
            if reply.stream is not None:
                keep_alive = await self._relay(reply, reply.stream, keep_alive)
            elif request.method == "HEAD":  # the head alone, with the body's length
                self._write(_head(reply, len(reply.body), keep_alive))
            else:
                self._write(_head(reply, len(reply.body), keep_alive) + reply.body)
        except Exception:  # a bug of ours: the app answers its own errors
            _log.exception("gateway: answering %s %s failed", request.method, request.path)
            keep_alive = False
        finally:
            self._state.tasks.discard(self._serving)
            self._serving = None
        self._state.total_requests += 1
        self._after_answer(keep_alive)

    def _after_answer(self, keep_alive: bool) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        if not keep_alive or self._closing:
            transport.close()
            return
        if self._queue:
            transport.resume_reading()
            self._start_next()
        else:
            self._done_at = self._loop.time()
            self._arm_idle_timer()

    async def _relay(self, reply: Answer, stream: StreamReply, keep_alive: bool) -> bool:
        """Send a streamed answer chunk by chunk; whether the connection may be kept."""
        if self._transport is None or self._transport.is_closing():
            await stream.aclose()  # the client left while the stream was opened
            return False
        reply.headers["cache-control"] = "no-cache"
        chunked = self._parser.get_http_version() == "1.1"
        self._write(_head(reply, None if chunked else -1, keep_alive and chunked))
        self._relaying = True
        try:
            async for chunk in stream:
                if chunk:
                    await self._drained()
                    self._write(b"%x\r\n%b\r\n" % (len(chunk), chunk) if chunked else chunk)
        except Exception:
            # The status is sent; all that is left is to end the body where it broke.
            _log.exception("gateway: the upstream stream broke off")
        finally:
            self._relaying = False
            await stream.aclose()  # leaves the shared upstream stream to any other readers
        if chunked:
            self._write(_LAST_CHUNK)
        return keep_alive and chunked

    # -- writing -----------------------------------------------------------------

    def _write(self, data: bytes) -> None:
        transport = self._transport
        if transport is not None and not transport.is_closing():
            transport.write(data)

    async def _drained(self) -> None:
        """Wait while the peer reads slower than the stream arrives."""
        if self._writable is not None:
            await asyncio.shield(self._writable)

    def _release_writers(self) -> None:
        writable, self._writable = self._writable, None
        if writable is not None and not writable.done():
            writable.set_result(None)

    def _refuse_garbage(self) -> None:
        """Answer what does not parse as HTTP with 400, then hang up."""
        self._closing = True
        self._queue.clear()
        if self._serving is None:
            self._write(_BAD_REQUEST)
        if self._transport is not None:
            self._transport.close()

    # -- keep-alive --------------------------------------------------------------

    def _arm_idle_timer(self) -> None:
        """One timer per connection, moved along lazily: not one per request."""
        if self._idle_timer is None:
            when = self._done_at + self._keep_alive_s
            self._idle_timer = self._loop.call_at(when, self._idle_check)

    def _idle_check(self) -> None:
        self._idle_timer = None
        if self._serving is not None or self._queue:
            return  # re-armed once the answer is out
        # Silence since the last answer or the last byte heard, a half-sent request included.
        due = max(self._heard_at, self._done_at) + self._keep_alive_s
        if self._loop.time() < due:
            self._idle_timer = self._loop.call_at(due, self._idle_check)
        elif self._transport is not None:
            self._transport.close()


def gateway_app(app: Any) -> GatewayApp:
    """The :class:`GatewayApp` uvicorn loaded, under any middleware it wrapped around it."""
    found = app
    for _ in range(8):  # uvicorn wraps at most a few layers, each keeping ``.app``
        if isinstance(found, GatewayApp):
            return found
        found = getattr(found, "app", None)
    raise TypeError(f"GatewayProtocol serves a GatewayApp, not {type(app).__name__}")


def _path(url: bytes) -> str:
    """The decoded path of a request target (most are a bare path: no parsing needed)."""
    if url[:1] != b"/" or b"?" in url or b"#" in url:
        url = httptools.parse_url(url).path
    path = url.decode("latin-1")
    return urllib.parse.unquote(path) if "%" in path else path


def _head(reply: Answer, length: int | None, keep_alive: bool) -> bytes:
    """The status line and headers; ``length`` None means chunked, -1 means until close."""
    lines = [_status_line(reply.status)]
    for name, value in reply.headers.items():  # a loop: a comprehension is one more call
        lines.append(f"{name}: {value}\r\n")
    if length is None:
        lines.append("transfer-encoding: chunked\r\n")
    elif length >= 0:
        lines.append(f"content-length: {length}\r\n")
    if not keep_alive:
        lines.append("connection: close\r\n")
    lines.append("\r\n")
    return "".join(lines).encode()


_STATUS_LINES: dict[int, str] = {}


def _status_line(status: int) -> str:
    line = _STATUS_LINES.get(status)
    if line is None:
        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:
            phrase = ""
        line = _STATUS_LINES[status] = f"HTTP/1.1 {status} {phrase}\r\n"
    return line


_BAD_REQUEST = (
    b"HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain; charset=utf-8\r\n"
    b"content-length: 29\r\nconnection: close\r\n\r\nInvalid HTTP request received."
)
