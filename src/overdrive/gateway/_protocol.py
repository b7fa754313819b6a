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
encoding, HEAD on every GET route, 400 for what does not parse, and 413 (then
close) for a body over the app's ``max_body_bytes``: its rest is read and
dropped, not kept, so the client is not cut off mid-send and sees the answer;
with ``Expect: 100-continue`` the 413 comes at once and the body is not read.
``Connection: close``, HTTP/1.0, and HTTP/1.0 with a chunked body (RFC 9112
§6.1) are answered, then the connection ends; bytes sent after them are dropped.

What a hostile or broken client cannot do, with the limits of ``[gateway]``
(:attr:`GatewayApp.gateway`):

* send an endless head: bytes are counted as they arrive, so one header line
  over ``max_header_bytes`` or a head over ``max_head_bytes`` gets 431 (an
  endless request line 414) and the connection ends; the parser never holds
  more than that. (httptools keeps a header value growing until its line
  ends, so the count cannot wait for its ``on_header``.) The count is exact
  for a head that starts a read or follows a body of declared length; one
  that starts inside a piece, behind a bodyless or chunked request, is
  counted from the next piece: at most 4 KB of it go uncounted;
* trickle a head: the whole head must arrive within ``head_timeout`` s of its
  first byte, whatever comes in between (one timer per connection); then 408;
* open connections without end: past ``max_connections`` per worker a new one
  gets 503 with ``connection: close``;
* pipeline without reading: read is paused while the connection's write
  buffer is over ``write_buffer_bytes`` or a request waits its turn, and bytes
  already read are fed to the parser 4 KB at a time, so a read full of tiny
  requests queues one piece's worth of them (the rest waits as bytes), not
  thousands;
* take nothing: a client whose write buffer stays full for
  ``stream_idle_timeout`` s is dropped (a streamed answer's upstream stream is
  closed with it; the buffer is discarded, not flushed).

A refusal the client may still be sending into (431, an early 413, 503) is
written, then the connection half-closes and what the client still sends is
read and dropped for a moment, so its kernel does not reset the connection
before the refusal is read.

Each request writes one line to the ``overdrive.access`` logger
(:mod:`overdrive.gateway._access_log`), refusals included.

The bytes written (heads, canned refusals) are built in :mod:`._framing`. The
rest stays one module, and one class, on purpose: asyncio and httptools call
back into the protocol as bytes arrive, and every limit above is a check over
the same few fields of one connection, so it reads as one state machine.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import TYPE_CHECKING, Any, cast

import httptools

from ..doors import Answer, error_answer
from ._app import DOOR_HEADERS, GatewayApp, log_broken_stream
from ._framing import (
    BAD_REQUEST,
    CONTINUE,
    LAST_CHUNK,
    canned_answer,
    request_path,
    response_head,
)

if TYPE_CHECKING:
    import uvicorn
    from uvicorn.server import ServerState

    from ..coalesce import StreamReply

__all__ = ["GatewayProtocol"]

_log = logging.getLogger("overdrive.gateway")
# Complete requests a client may queue behind the one being answered before we stop
# reading (as uvicorn does): each may hold a body of up to ``max_body_bytes``.
_PIPELINE_DEPTH = 1
# A read larger than this is fed to the parser in pieces: between two pieces the head
# limits are checked and a full queue holds the rest back.
_PIECE = 4096
_MAX_URL = 64 * 1024
# After a refusal: how long, and how much, we read and drop what the client still sends.
_LINGER_S = 1.0
_LINGER_BYTES = 1024 * 1024
# A flood of connections past the limit is one warning per this many seconds, not one each.
_REFUSAL_WARNING_EVERY_S = 10.0


class _Request:
    """One request as it is parsed: what the app needs, and how to answer it."""

    __slots__ = (
        "began",
        "body",
        "clock",
        "headers",
        "keep_alive",
        "left",
        "method",
        "path",
        "refused",
        "size",
        "url",
    )

    def __init__(self, began: float) -> None:
        self.began = began  # loop time of the read that brought its first byte
        # For the access log: uvloop's loop time is cached per turn, in whole ms.
        self.clock = time.perf_counter()
        self.url = b""
        self.method = ""
        self.path = ""
        self.headers: dict[str, str] = {}
        self.body: list[bytes] = []
        self.size = 0
        self.left = 0  # of a declared Content-Length, the bytes still to come
        self.keep_alive = True
        # Set when the body is over the limit: answered 413, the rest of it dropped.
        self.refused = False


class GatewayProtocol(asyncio.Protocol):
    """HTTP/1.1 for a :class:`GatewayApp`, built by uvicorn once per connection.

    >>> uvicorn.run(GatewayApp("overdrive.toml"), http=GatewayProtocol)  # doctest: +SKIP
    """

    # Loop time of the last "over max_connections" warning, shared by the worker's connections.
    _refusals_warned_at = float("-inf")

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
        self._limits = limits = self._app.gateway
        self._access = self._app.access_log
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
        # The head being read: its bytes and its current line's, counted as they arrive.
        self._max_line = limits.max_header_bytes
        self._max_head = limits.max_head_bytes
        self._fresh_room = min(_PIECE, self._max_line, self._max_head)
        self._room = self._fresh_room  # bytes the parser may take in one piece now
        self._in_head = True  # the parser's next bytes belong to a request head
        self._heads_done = 0  # a change across one feed: a head ended in it
        self._head_bytes = self._line_bytes = 0
        self._head_from_start = True  # counted from its first byte (else from a later read)
        self._head_timer: asyncio.TimerHandle | None = None
        # Flow: bytes read but held back while a request waits its turn, and reading.
        self._unparsed: bytes | None = None
        self._reading = True
        self._paused_at = 0.0
        self._stall_timer: asyncio.TimerHandle | None = None
        # The end: no request is parsed after a final one; a refusal goes out last.
        self._final = False
        self._farewell: bytes | None = None
        self._linger = False
        self._lingering = False
        self._dropped = 0
        self._linger_timer: asyncio.TimerHandle | None = None

    # -- the connection ----------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports quack like asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)
        if len(self._connections) >= self._limits.max_connections:
            self._refuse_connection()
            return
        self._connections.add(self)
        self._transport.set_write_buffer_limits(high=self._limits.write_buffer_bytes)
        self._done_at = self._loop.time()
        self._arm_idle_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._connections.discard(self)
        self._closing = True
        self._queue.clear()
        self._unparsed = None
        for timer in (self._idle_timer, self._head_timer, self._stall_timer, self._linger_timer):
            if timer is not None:
                timer.cancel()
        self._release_writers()
        # A relayed stream has nobody left to read it; a whole answer is left to
        # finish, so the engine still caches it for the next caller.
        if self._relaying and self._serving is not None:
            self._serving.cancel()

    def data_received(self, data: bytes) -> None:
        self._heard_at = self._loop.time()
        if self._final or self._unparsed is not None:
            self._late_data(data)
        elif len(data) <= self._room:  # the common case: one request, one piece
            self._feed(data)
        else:
            self._feed_pieces(data)

    def eof_received(self) -> bool | None:
        # None: the transport closes itself, as under uvicorn. A client that half-closes
        # after its request gets no answer; HTTP clients do not do that.
        return None

    def pause_writing(self) -> None:
        if self._writable is None:
            self._writable = self._loop.create_future()
            self._paused_at = self._loop.time()
            if self._stall_timer is None:
                when = self._paused_at + self._limits.stream_idle_timeout
                self._stall_timer = self._loop.call_at(when, self._stall_check)
            self._update_reading()

    def resume_writing(self) -> None:
        self._release_writers()
        if self._serving is None:
            self._proceed()  # answers held back while the peer's buffer was full
        else:
            self._update_reading()

    def shutdown(self) -> None:
        """uvicorn's graceful drain: close now if idle, else after the answer in flight."""
        self._app.drain()
        self._closing = True
        self._queue.clear()
        self._unparsed = None
        if self._serving is None and self._transport is not None:
            self._transport.close()

    # -- feeding the parser, within the head limits ----------------------------

    def _feed(self, piece: bytes) -> bool:
        """Parse one piece; whether the parser may take the next."""
        was_in_head, heads = self._in_head, self._heads_done
        try:
            self._parser.feed_data(piece)
        except httptools.HttpParserUpgrade:
            self._final = True  # no upgrades: the request is answered as plain HTTP, then bye
            return False
        except httptools.HttpParserError:
            if not self._final:  # after a final request llhttp refuses more: they are dropped
                self._refuse(BAD_REQUEST, 400)
            return False
        request = self._parsing
        if request is None:
            return not self._final
        if self._in_head:
            # A piece that began mid-head and ended in the same head is all head bytes; a
            # head begun after another request's end in one piece counts from the next.
            return self._head_arriving(piece, was_in_head and heads == self._heads_done)
        # In a body of declared length, the next piece ends where it does: what follows
        # is the next head, counted from its first byte.
        self._room = request.left if request.left > 0 else _PIECE
        return not self._final

    def _feed_pieces(self, data: bytes) -> None:
        """Feed a large read piece by piece; hold the rest back while a request waits."""
        start, end = 0, len(data)
        while start < end:
            if len(self._queue) >= _PIPELINE_DEPTH:
                self._unparsed = data[start:]  # fed once the queue has room: one read at most
                self._update_reading()
                return
            size = self._room
            if not self._feed(data[start : start + size]):
                return
            start += size

    def _late_data(self, data: bytes) -> None:
        if self._lingering:
            self._dropped += len(data)
            if self._dropped > _LINGER_BYTES and self._transport is not None:
                self._transport.abort()
        elif not self._final and self._unparsed is not None:
            # Reading is paused while bytes are held; a read already under way still lands.
            self._unparsed = self._unparsed + data

    def _head_arriving(self, piece: bytes, counted: bool) -> bool:
        """Count a piece of an unfinished head; refuse the head once it is over a limit."""
        if self._head_timer is None:
            self._arm_head_timer()
        if not counted:
            self._head_from_start = False
            self._room = self._fresh_room
            return True
        self._head_bytes += len(piece)
        newline = piece.rfind(b"\n")
        self._line_bytes = (
            self._line_bytes + len(piece) if newline < 0 else len(piece) - newline - 1
        )
        # A piece is never longer than the room left, so a line that ended inside it
        # was within the limit: only the line still open, and the head, need checking.
        if self._line_bytes >= self._max_line or self._head_bytes >= self._max_head:
            self._refuse_head()
            return False
        self._room = min(
            _PIECE, self._max_line - self._line_bytes, self._max_head - self._head_bytes
        )
        return True

    def _refuse_head(self) -> None:
        if self._head_from_start and self._line_bytes == self._head_bytes:
            # No line of it has ended yet: this is the request line.
            limit = min(self._max_line, self._max_head)
            message = f"The request line is longer than the {limit} bytes this server accepts."
            self._refuse(canned_answer(414, message, "uri_too_long"), 414, linger=True)
            return
        message = (
            f"The request head is larger than this server accepts: a header line at most "
            f"{self._max_line} bytes, the whole head at most {self._max_head} bytes."
        )
        self._refuse(
            canned_answer(431, message, "request_header_fields_too_large"), 431, linger=True
        )

    # -- parsing (httptools callbacks) -------------------------------------------

    def on_message_begin(self) -> None:
        self._parsing = _Request(self._heard_at)

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
        self._in_head = False
        self._heads_done += 1
        self._head_bytes = self._line_bytes = 0
        self._head_from_start = True
        parser = self._parser
        request.method = parser.get_method().decode("ascii")
        request.keep_alive = parser.should_keep_alive()
        request.path = request_path(request.url)
        declared, request.size = request.size, 0
        request.left = declared
        expects = request.headers.pop("expect", None)
        if declared > self._app.max_body_bytes:
            request.refused = True  # and no 100 Continue: the client had better not send it
            if expects:
                self._refuse_early(request)
        elif expects and self._serving is None and not self._queue:
            self._write(CONTINUE)

    def on_chunk_header(self) -> None:
        # RFC 9112 §6.1: an HTTP/1.0 message with Transfer-Encoding has faulty framing;
        # answer it, then close. (Called for chunked bodies only, so free for the rest.)
        request = self._parsing
        if request is not None and request.keep_alive:
            request.keep_alive = self._parser.get_http_version() == "1.1"

    def on_body(self, body: bytes) -> None:
        request = self._parsing
        assert request is not None
        if request.left:  # a chunked body declares no length: nothing to count down
            request.left -= len(body)
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
        self._in_head = True
        self._room = self._fresh_room
        if self._closing or self._final:
            return  # after the last request (or one refused early): dropped
        if not request.keep_alive:
            self._final = True  # answered, then the connection ends
        self._enqueue(request)

    def _refuse_early(self, request: _Request) -> None:
        """413 now for ``Expect: 100-continue`` with an oversize length: its body is not read."""
        self._final = True
        self._linger = True
        self._enqueue(request)

    # -- answering ---------------------------------------------------------------

    def _enqueue(self, request: _Request) -> None:
        self._queue.append(request)
        if self._serving is None and self._writable is None:
            self._start_next()
        elif len(self._queue) >= _PIPELINE_DEPTH:
            self._update_reading()

    def _start_next(self) -> None:
        request = self._queue.popleft()
        task = self._loop.create_task(self._answer(request))
        self._serving = task
        # uvicorn's drain waits for these; _answer leaves the set itself as it ends
        # (a done callback would take one more turn of the loop per request).
        self._state.tasks.add(task)

    async def _answer(self, request: _Request) -> None:
        keep_alive = request.keep_alive and not request.refused
        reply: Answer | None = None
        try:
            if request.refused:
                reply = self._app.too_large(request.path)
            else:
                body = request.body[0] if len(request.body) == 1 else b"".join(request.body)
                reply = await self._app.serve(request.method, request.path, request.headers, body)
            if reply.stream is not None:
                keep_alive = await self._relay(reply, reply.stream, keep_alive)
            elif request.method == "HEAD":  # the head alone, with the body's length
                self._write(response_head(reply, len(reply.body), keep_alive))
            else:
                self._write(response_head(reply, len(reply.body), keep_alive) + reply.body)
        except Exception:  # a bug of ours: the app answers its own errors
            _log.exception("gateway: answering %s %s failed", request.method, request.path)
            keep_alive = False
        finally:
            self._state.tasks.discard(self._serving)
            self._serving = None
            if self._access.enabled:
                status = reply.status if reply is not None else 500
                total_s = time.perf_counter() - request.clock
                self._access.record(request.method, request.path, status, reply, total_s)
        self._state.total_requests += 1
        self._after_answer(keep_alive)

    def _after_answer(self, keep_alive: bool) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        if not keep_alive or self._closing:
            self._hang_up()
        else:
            self._proceed()

    def _proceed(self) -> None:
        """With no answer in flight: the next request, the bytes held back, or rest."""
        transport = self._transport
        if transport is None or transport.is_closing() or self._writable is not None:
            return  # resume_writing comes back here once the peer has taken some
        if self._queue:
            self._start_next()
        if self._unparsed is not None and len(self._queue) < _PIPELINE_DEPTH:
            held, self._unparsed = self._unparsed, None
            # A head in the held bytes is timed from now: the wait was ours, not the client's.
            self._heard_at = self._loop.time()
            self._feed_pieces(held)
        if self._serving is None:
            if self._final:
                self._finish()
                return
            self._done_at = self._loop.time()
            self._arm_idle_timer()
        self._update_reading()

    async def _relay(self, reply: Answer, stream: StreamReply, keep_alive: bool) -> bool:
        """Send a streamed answer chunk by chunk; whether the connection may be kept."""
        if self._transport is None or self._transport.is_closing():
            await stream.aclose()  # the client left while the stream was opened
            return False
        reply.headers["cache-control"] = "no-cache"
        chunked = self._parser.get_http_version() == "1.1"
        self._write(response_head(reply, None if chunked else -1, keep_alive and chunked))
        self._relaying = True
        try:
            async for chunk in stream:
                if chunk:
                    await self._drained()
                    self._write(b"%x\r\n%b\r\n" % (len(chunk), chunk) if chunked else chunk)
        except Exception as exc:
            # The status is sent: the body ends where it broke, without its last
            # chunk, and the connection closes, so the client sees a cut body,
            # never a clean end of a stream that did not end.
            log_broken_stream(exc)
            return False
        finally:
            self._relaying = False
            await stream.aclose()  # leaves the shared upstream stream to any other readers
        if chunked:
            self._write(LAST_CHUNK)
        return keep_alive and chunked

    # -- writing, and reading paused while it waits -------------------------------

    def _write(self, data: bytes) -> None:
        transport = self._transport
        if transport is not None and not transport.is_closing():
            transport.write(data)

    async def _drained(self) -> None:
        """Wait while the peer reads slower than the stream arrives.

        The wait is bounded: a peer that takes nothing for ``stream_idle_timeout``
        is dropped (:meth:`_stall_check`), which cancels this relay and closes the stream.
        """
        if self._writable is not None:
            await asyncio.shield(self._writable)

    def _release_writers(self) -> None:
        writable, self._writable = self._writable, None
        if writable is not None and not writable.done():
            writable.set_result(None)

    def _stall_check(self) -> None:
        self._stall_timer = None
        if self._writable is None or self._transport is None:
            return  # the peer took some since: armed again when its buffer next fills
        due = self._paused_at + self._limits.stream_idle_timeout
        if self._loop.time() < due:
            self._stall_timer = self._loop.call_at(due, self._stall_check)
            return
        _log.info("gateway: dropped a client that took nothing for %.0f s", due - self._paused_at)
        # abort, not close: close would wait for the peer to take the buffer it will not take.
        self._transport.abort()

    def _update_reading(self) -> None:
        """Read only while there is room: write buffer below its mark, no request waiting."""
        wanted = self._lingering or (
            self._writable is None and self._unparsed is None and len(self._queue) < _PIPELINE_DEPTH
        )
        transport = self._transport
        if wanted == self._reading or transport is None or transport.is_closing():
            return
        self._reading = wanted
        if wanted:
            transport.resume_reading()
        else:
            transport.pause_reading()

    # -- ending: refusals, hanging up ---------------------------------------------

    def _refuse(self, farewell: bytes, status: int, *, linger: bool = False) -> None:
        """End with ``farewell`` once the answers ahead of it are out; parse nothing more."""
        self._final = True
        self._linger = self._linger or linger
        self._farewell = farewell
        if self._access.enabled:
            now = time.perf_counter()
            began = self._parsing.clock if self._parsing is not None else now
            self._access.record("", "", status, None, now - began)
        if self._serving is None and not self._queue:
            self._finish()

    def _refuse_connection(self) -> None:
        """Over ``max_connections``: 503, and this connection is not served."""
        self._closing = True
        limit = self._limits.max_connections
        message = f"The gateway is at its limit of {limit} connections; try again shortly."
        reply = error_answer(503, message, "too_many_connections")
        reply.headers["retry-after"] = "1"
        now = self._loop.time()
        if now - GatewayProtocol._refusals_warned_at >= _REFUSAL_WARNING_EVERY_S:
            GatewayProtocol._refusals_warned_at = now
            _log.warning("gateway: refusing connections over max_connections=%d", limit)
        self._refuse(response_head(reply, len(reply.body), False) + reply.body, 503, linger=True)

    def _finish(self) -> None:
        farewell, self._farewell = self._farewell, None
        if farewell is not None:
            self._write(farewell)
        self._hang_up()

    def _hang_up(self) -> None:
        """Close; after a refusal, half-close and drop what the client still sends for a moment."""
        transport = self._transport
        if transport is None or transport.is_closing() or self._lingering:
            return
        if not self._linger or not transport.can_write_eof():
            transport.close()
            return
        self._lingering = self._final = True
        transport.write_eof()
        self._update_reading()
        self._linger_timer = self._loop.call_at(self._loop.time() + _LINGER_S, self._end_linger)

    def _end_linger(self) -> None:
        self._linger_timer = None
        if self._transport is not None:
            self._transport.abort()  # what is left unsent the client did not read in time

    def _refuse_head_late(self) -> None:
        """The head deadline passed: 408, once the answers ahead are out."""
        message = f"The request head did not arrive within {self._limits.head_timeout:g} s."
        self._refuse(canned_answer(408, message, "request_timeout"), 408)

    # -- timers: keep-alive, the head deadline ---------------------------------------

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

    def _arm_head_timer(self) -> None:
        """At the first read that leaves a head unfinished: due a head_timeout after its start."""
        request = self._parsing
        if request is not None:
            when = request.began + self._limits.head_timeout
            self._head_timer = self._loop.call_at(when, self._head_check)

    def _head_check(self) -> None:
        self._head_timer = None
        request = self._parsing
        if request is None or not self._in_head or self._final:
            return  # no head is arriving: the next unfinished one arms this again
        due = request.began + self._limits.head_timeout
        if self._loop.time() < due:  # a later head than the one this was armed for
            self._head_timer = self._loop.call_at(due, self._head_check)
        else:
            self._refuse_head_late()

    def __repr__(self) -> str:
        state = "serving" if self._serving is not None else "idle"
        return (
            f"GatewayProtocol({state}, queued={len(self._queue)}, reading={self._reading}, "
            f"final={self._final}, held={len(self._unparsed or b'')})"
        )


def gateway_app(app: Any) -> GatewayApp:
    """The :class:`GatewayApp` uvicorn loaded, under any middleware it wrapped around it."""
    found = app
    for _ in range(8):  # uvicorn wraps at most a few layers, each keeping ``.app``
        if isinstance(found, GatewayApp):
            return found
        found = getattr(found, "app", None)
    raise TypeError(f"GatewayProtocol serves a GatewayApp, not {type(app).__name__}")
