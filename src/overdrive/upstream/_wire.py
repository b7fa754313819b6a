"""A lean HTTP/1.1 client for whole (unstreamed) upstream calls: keep-alive pool, one write.

Why not httpx here: on a fast upstream, httpx/httpcore/anyio cost most of the
gateway's CPU. httpcore scans every pooled connection (a ``poll()`` per idle
one) on each pool event, and the pool holds up to ``max_concurrency``
connections. This client keeps just what an OpenAI-compatible POST needs:

* a LIFO stack of idle connections (O(1) take and give back, and the most
  recently used connection is the one least likely to have been closed by
  the server's idle timeout), a bound on open connections, and waiting in
  arrival order when every connection is busy and the bound is reached;
* asyncio protocols parsed by httptools (llhttp): no stream wrappers, the
  request goes out in one ``write`` (request line, headers and body);
* a whole-answer timeout on the loop's timer, connect timeout on connect;
* the errors httpx raises, so the dispatcher's retry rules see no difference.

A connection is reused only after an answer that was framed exactly: one
final answer to the one request out, then nothing. Bytes nobody asked for
(while idle, or behind the answer in the same read), a 1xx then the close,
a 101, a status that is no HTTP status, a parse error or a body cut short
fail the exchange with a retryable ``httpx.RemoteProtocolError`` and close
the connection: the next caller, maybe another tenant, must never read the
rest of someone else's answer as its own. An answer's head and body are
bounded (``max_response_head_bytes``, ``max_response_bytes``); over either,
the call fails with :class:`~overdrive.UpstreamProtocolError`, not retried
(the same request would bring the same answer back).

Streamed calls, injected transports and proxies stay on httpx
(:func:`wire_pool_for` says when the lean client applies).
"""

from __future__ import annotations

import asyncio
import os
import ssl
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import NoReturn, cast

import httptools
import httpx

from .._errors import UpstreamProtocolError
from ._wire_response import WireHeaders, WireResponse

__all__ = ["AnswerBounds", "Origin", "WirePool", "wire_pool_for"]

# Environment variables that make httpx send through a proxy: then httpx it is.
_PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")
_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a base URL's requests go: computed once per upstream, not per call."""

    host: str  # for connecting (IPv6 without brackets)
    port: int
    tls: bool
    host_header: bytes  # host[:port] as the Host header carries it
    prefix: bytes  # the base URL's path, percent-encoded, without a trailing "/"

    @classmethod
    def parse(cls, base_url: str) -> Origin | None:
        """The origin of ``base_url``, or None when it needs more than this client does."""
        url = httpx.URL(base_url)
        if url.scheme not in _DEFAULT_PORTS or url.query or url.fragment or url.userinfo:
            return None  # userinfo means basic auth, which httpx does
        return cls(
            host=url.raw_host.decode("ascii"),
            port=url.port or _DEFAULT_PORTS[url.scheme],
            tls=url.scheme == "https",
            host_header=url.netloc,
            prefix=url.raw_path.rstrip(b"/"),
        )


@dataclass(frozen=True, slots=True)
class AnswerBounds:
    """What one upstream may send back, and the errors that name it when it sends more."""

    upstream: str  # its configured name, for the errors
    head_bytes: int = 64 * 1024  # status line and headers, interim (1xx) answers included
    body_bytes: int = 64 * 1024 * 1024

    def head_error(self) -> UpstreamProtocolError:
        limit = self.head_bytes
        return UpstreamProtocolError(
            self.upstream, f"its answer's head is over max_response_head_bytes ({limit} bytes)"
        )

    def body_error(self, announced: int | None = None) -> UpstreamProtocolError:
        what = "its answer's body is" if announced is None else f"it announced {announced} bytes,"
        limit = self.body_bytes
        return UpstreamProtocolError(
            self.upstream, f"{what} over max_response_bytes ({limit} bytes)"
        )


def proxy_configured() -> bool:
    """Whether httpx would look for a proxy in the environment (either case of the names)."""
    return any(os.environ.get(name) or os.environ.get(name.lower()) for name in _PROXY_VARIABLES)


def wire_pool_for(
    base_url: str,
    *,
    transport: httpx.AsyncBaseTransport | None,
    api_key: str | None,
    connections: int,
    timeout: float,
    connect_timeout: float,
    bounds: AnswerBounds | None = None,
) -> WirePool | None:
    """The lean client for an upstream, or None where httpx must send.

    httpx stays for an injected transport (tests answer through one), when a
    proxy is configured in the environment, and for base URLs with a query
    string or credentials.
    """
    if transport is not None or proxy_configured():
        return None
    origin = Origin.parse(base_url)
    if origin is None:
        return None
    headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
    return WirePool(
        origin,
        limit=connections,
        timeout=timeout,
        connect_timeout=connect_timeout,
        headers=headers,
        bounds=bounds,
    )


class _StaleConnectionError(httpx.RemoteProtocolError):
    """A kept-alive connection closed by the server before any byte of the answer."""


class _StopParsing(Exception):
    """Raised in a parser callback once the exchange has failed: llhttp stops at that byte."""


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection carrying one request at a time; the pool owns it.

    An exchange's state is reset when a request goes out. That is sound only
    because a connection goes back to the pool solely after an answer that
    ended exactly where its read ended (``keep_alive`` never turns true again
    once false): the parser then sits between messages.
    """

    __slots__ = (
        "_body",
        "_body_left",
        "_bounds",
        "_complete",
        "_deadline",
        "_headers",
        "_interim",
        "_lost_hook",
        "_parser",
        "_received",
        "_status",
        "_timer",
        "_transport",
        "_waiter",
        "dropped",
        "idle",
        "keep_alive",
        "lost",
        "requests",
    )

    def __init__(self, lost_hook: Callable[[_Connection], None], bounds: AnswerBounds) -> None:
        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self._waiter: asyncio.Future[WireResponse] | None = None
        # One timer outlives its request: it fires at the deadline it was set
        # for, and if a later request is out by then, re-arms for that one's.
        # Setting and cancelling a timer per request would cost more than a
        # small answer's whole parse.
        self._timer: asyncio.TimerHandle | None = None
        self._deadline = 0.0  # the current request's, on the loop's clock
        self._lost_hook = lost_hook
        self._bounds = bounds
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []
        self._body_left = bounds.body_bytes
        self._status = 0  # the final answer's, once its head is complete
        self._complete = False  # the final answer's last byte is parsed
        self._received = 0  # bytes of the current exchange
        self._interim = 0  # about the bytes of its interim (1xx) heads
        self.keep_alive = True  # once false, false for good
        self.requests = 0  # answered on this connection
        self.idle = False  # on the pool's idle stack
        self.dropped = False  # its slot is back in the pool
        self.lost = False

    @property
    def usable(self) -> bool:
        transport = self._transport
        return self.keep_alive and transport is not None and not transport.is_closing()

    def send(self, message: bytes, timeout: float) -> asyncio.Future[WireResponse]:
        """Write the request; the future gets the answer, or the error that ended it."""
        assert self._transport is not None
        loop = asyncio.get_running_loop()
        waiter = self._waiter = loop.create_future()
        self._received = self._interim = 0
        self._status = 0  # nothing of this answer yet (the last one's is done with)
        self._complete = False
        self._body_left = self._bounds.body_bytes
        if self.lost:  # closed since it was handed out: fail now, not at the timeout
            self._ended(None)
            return waiter
        self._deadline = loop.time() + timeout
        if self._timer is None:
            self._timer = loop.call_at(self._deadline, self._time_out, timeout)
        self._transport.write(message)
        return waiter

    def close(self) -> None:
        # abort, not close: nothing of ours is left to flush, and a TLS close
        # would wait for the peer's close_notify.
        transport = self._transport
        if transport is not None and not transport.is_closing():
            transport.abort()

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self._waiter is None:  # a server speaking out of turn: never reuse this
            self.keep_alive = False
            self.close()
            return
        self._received += len(data)
        try:
            self._parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            if self._waiter is not None:  # else a callback failed it and stopped the parser
                self._fail(httpx.RemoteProtocolError(f"malformed HTTP answer: {exc}"))
            return
        # Settled here, after the whole read: bytes behind the answer fail it.
        if self._complete:
            self._finish()
        elif not self._status and self._received > self._bounds.head_bytes:
            self._fail(self._bounds.head_error())  # everything so far is head

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.lost = True
        self.keep_alive = False
        if self._waiter is not None:
            self._ended(exc)
        self._lost_hook(self)

    # httptools callbacks: raising _StopParsing stops llhttp at the current byte

    def on_message_begin(self) -> None:
        if self._complete:  # a second answer (or garbage) behind the first, in one read
            self._stop(httpx.RemoteProtocolError("bytes after the complete answer"))
        self._headers = {}
        self._body = []

    def on_header(self, name: bytes, value: bytes) -> None:
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        previous = self._headers.get(key)
        self._headers[key] = text if previous is None else f"{previous}, {text}"

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        limit = self._bounds.head_bytes
        # Only an exchange this big so far can have a head over the bound:
        # the common small answer skips the sum.
        if self._received > limit and self._interim + _head_size(self._headers) > limit:
            self._stop(self._bounds.head_error())
        if 200 <= status < 600:
            self._final(status)
        elif status == 101 or not 100 <= status < 200:
            # We never ask to switch protocols; llhttp takes any 3 digits (0 too).
            self._stop(httpx.RemoteProtocolError(f"answered with status {status}"))
        else:  # interim (100 Continue, 103 Early Hints): the final answer follows
            self._interim += _head_size(self._headers) + _STATUS_LINE

    def on_body(self, body: bytes) -> None:
        self._body_left -= len(body)
        if self._body_left < 0:
            self._stop(self._bounds.body_error())
        self._body.append(body)

    def on_message_complete(self) -> None:
        if self._status:  # not an interim answer's end
            self._complete = True

    def _final(self, status: int) -> None:
        self._status = status
        if not self._parser.should_keep_alive():
            self.keep_alive = False
        length = self._headers.get("content-length")  # llhttp checked its digits
        if length is not None and int(length) > self._body_left:
            self._stop(self._bounds.body_error(int(length)))  # refused before reading it

    def _stop(self, error: Exception) -> NoReturn:
        self._fail(error)
        raise _StopParsing

    # ending the current request

    def _finish(self) -> None:
        waiter = self._settle()
        if waiter is not None and not waiter.done():
            headers = WireHeaders(self._headers)
            version = self._parser.get_http_version()
            waiter.set_result(WireResponse(self._status, headers, b"".join(self._body), version))

    def _fail(self, error: Exception) -> None:
        """End the exchange with ``error`` and the connection with it: its state is unknown."""
        self.keep_alive = False
        self.close()
        waiter = self._settle()
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)

    def _settle(self) -> asyncio.Future[WireResponse] | None:
        waiter, self._waiter = self._waiter, None
        self.requests += 1
        return waiter

    def _time_out(self, timeout: float) -> None:
        self._timer = None
        waiter = self._waiter
        if waiter is None:  # idle now: the next request arms a timer of its own
            return
        loop = waiter.get_loop()
        if loop.time() < self._deadline:  # set for an earlier request: wait for this one's
            self._timer = loop.call_at(self._deadline, self._time_out, timeout)
            return
        self._fail(httpx.ReadTimeout(f"no complete answer within {timeout:g}s"))

    def _ended(self, exc: Exception | None) -> None:
        """The server closed the connection while a request was out."""
        if self._status and exc is None and not _framed(self._headers):
            self._finish()  # no length given (HTTP/1.0 style): the body runs to the close
        elif not self._received and self.requests:
            self._fail(_StaleConnectionError("kept-alive connection closed before answering"))
        else:  # a 1xx then the close lands here too: no final answer came
            reason = f" ({exc})" if exc is not None else ""
            where = "mid-answer" if self._received else "without answering"
            self._fail(httpx.RemoteProtocolError(f"server disconnected {where}{reason}"))

    def __repr__(self) -> str:
        state = "lost" if self.lost else "idle" if self.idle else "busy"
        return f"_Connection({state}, requests={self.requests})"


def _framed(headers: dict[str, str]) -> bool:
    return "content-length" in headers or "transfer-encoding" in headers


# The shortest status line ("HTTP/1.1 100 \r\n") and the head's closing CRLF.
_STATUS_LINE = 17


def _head_size(headers: dict[str, str]) -> int:
    """About the bytes the headers took on the wire (": " and CRLF each)."""
    return sum(len(name) + len(value) + 4 for name, value in headers.items())


class WirePool:
    """Keep-alive connections to one origin, at most ``limit`` open; POSTs, whole answers.

    >>> async def main() -> None:  # doctest: +SKIP
    ...     pool = WirePool(Origin.parse("http://127.0.0.1:8080/v1"), limit=64, timeout=60.0)
    ...     response = await pool.post("/chat/completions", b'{"model": "m", ...}')
    ...     await pool.aclose()
    """

    __slots__ = (
        "_bounds",
        "_closed",
        "_connect_timeout",
        "_head",
        "_idle",
        "_limit",
        "_open",
        "_origin",
        "_ssl",
        "_targets",
        "_timeout",
        "_waiters",
    )

    def __init__(
        self,
        origin: Origin,
        *,
        limit: int,
        timeout: float,
        connect_timeout: float | None = None,
        headers: dict[str, str] | None = None,
        ssl_context: ssl.SSLContext | None = None,
        bounds: AnswerBounds | None = None,
    ) -> None:
        self._origin = origin
        self._bounds = bounds or AnswerBounds(f"{origin.host}:{origin.port}")
        self._limit = limit
        self._timeout = timeout
        self._connect_timeout = min(timeout, connect_timeout or timeout)
        self._head = _head(origin, headers or {})
        self._ssl = ssl_context
        self._targets: dict[str, bytes] = {}
        self._idle: list[_Connection] = []  # a stack: the last given back goes out first
        self._open = 0  # connections holding a slot, idle or busy or connecting
        self._waiters: deque[asyncio.Future[_Connection | None]] = deque()
        self._closed = False

    @property
    def open(self) -> int:
        return self._open

    @property
    def idle(self) -> int:
        return len(self._idle)

    async def post(self, path: str, body: bytes) -> WireResponse:
        """POST ``body`` (JSON) to ``path`` under the base URL; the whole answer.

        Raises what httpx would: ``ConnectError``/``ConnectTimeout``,
        ``ReadTimeout``, ``PoolTimeout``, ``RemoteProtocolError`` (for any
        misframed answer); and ``UpstreamProtocolError`` for an answer over
        the pool's :class:`AnswerBounds`.
        """
        if self._closed:
            raise RuntimeError("the upstream's connection pool has been closed")
        message = self._message(path, body)
        try:
            return await self._exchange(message, fresh=False)
        except _StaleConnectionError:
            # The server closed a kept-alive connection as we sent on it, and not
            # one byte came back. POST is not idempotent, but a server closes an
            # idle connection between requests, never after acting on one it
            # read; so, like browsers, send once more, on a new connection.
            return await self._exchange(message, fresh=True)

    async def _exchange(self, message: bytes, *, fresh: bool) -> WireResponse:
        # An idle connection is the common case: no coroutine to make for it.
        connection = (None if fresh else self._pop_idle()) or await self._acquire(fresh)
        try:
            response = await connection.send(message, self._timeout)
        except _StaleConnectionError:
            self._drop(connection)
            if fresh:  # a new connection closed unanswered: nothing stale about it
                raise httpx.RemoteProtocolError("server disconnected without answering") from None
            raise
        except BaseException:  # failed, timed out or cancelled: the state is unknown
            self._drop(connection)
            raise
        self._give_back(connection)
        return response

    def _message(self, path: str, body: bytes) -> bytes:
        target = self._targets.get(path)
        if target is None:
            target = self._targets[path] = self._target(path)
        length = str(len(body)).encode("ascii")
        return b"".join((b"POST ", target, self._head, length, b"\r\n\r\n", body))

    def _target(self, path: str) -> bytes:
        # As httpx joins a base URL and a relative path: the base's path, then this one.
        relative = httpx.URL(path.lstrip("/")).raw_path
        return self._origin.prefix + b"/" + relative

    # connections

    async def _acquire(self, fresh: bool) -> _Connection:
        """An idle connection (unless ``fresh``), a new one, or the next given back."""
        while True:
            connection = None if fresh else self._pop_idle()
            if connection is None:
                if self._open < self._limit or (fresh and self._evict_idle()):
                    self._open += 1
                    return await self._connect()
                connection = await self._wait()
                if connection is None:  # a slot, reserved for us
                    return await self._connect()
            if connection.usable:
                return connection
            self._drop(connection)  # lost while handed over

    def _pop_idle(self) -> _Connection | None:
        idle = self._idle
        while idle:
            connection = idle.pop()
            connection.idle = False
            if connection.usable:
                return connection
            self._drop(connection)
        return None

    def _evict_idle(self) -> bool:
        """Close the longest idle connection and keep its slot (for a fresh connection)."""
        if not self._idle:
            return False
        connection = self._idle.pop(0)
        connection.idle = False
        connection.dropped = True
        connection.close()
        self._open -= 1
        return True

    async def _connect(self) -> _Connection:
        """Open a connection in the slot already reserved; the slot is freed if it fails."""
        connection = _Connection(self._drop, self._bounds)
        try:
            await asyncio.wait_for(self._open_transport(connection), self._connect_timeout)
        except BaseException as exc:
            # Freed here, once, whatever the protocol was told before the failure.
            connection.dropped = True
            connection.close()
            self._free_slot()
            if isinstance(exc, OSError):  # refused, unreachable, DNS, TLS, timed out
                raise _connect_error(exc, self._origin) from exc
            raise
        return connection

    async def _open_transport(self, connection: _Connection) -> None:
        origin = self._origin
        await asyncio.get_running_loop().create_connection(
            lambda: connection,
            origin.host,
            origin.port,
            ssl=self._tls() if origin.tls else None,
            server_hostname=origin.host if origin.tls else None,
        )

    def _tls(self) -> ssl.SSLContext:
        # Made on first use: loading the trust store takes milliseconds. httpx's
        # own context, so both clients trust the same roots (and SSL_CERT_FILE).
        if self._ssl is None:
            self._ssl = httpx.create_ssl_context()
        return self._ssl

    async def _wait(self) -> _Connection | None:
        """Wait for a connection given back, or (None) for a freed slot, up to the timeout."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[_Connection | None] = loop.create_future()
        self._waiters.append(waiter)
        timer = loop.call_later(self._timeout, _expire, waiter, self._timeout)
        try:
            return await waiter
        except BaseException:
            self._abandon(waiter)
            raise
        finally:
            timer.cancel()

    def _abandon(self, waiter: asyncio.Future[_Connection | None]) -> None:
        """A waiter gave up (timed out or cancelled): pass on what it may have been given."""
        if not waiter.done() or waiter.cancelled() or waiter.exception() is not None:
            if waiter in self._waiters:
                self._waiters.remove(waiter)
            return
        connection = waiter.result()
        if connection is None:
            self._free_slot()
        else:
            self._give_back(connection)

    def _give_back(self, connection: _Connection) -> None:
        """After a complete answer: to the next waiter, onto the idle stack, or closed."""
        if self._closed or not connection.usable:
            self._drop(connection)
            return
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(connection)
                return
        connection.idle = True
        self._idle.append(connection)

    def _drop(self, connection: _Connection) -> None:
        """Close ``connection`` and free its slot; once, however often it is called."""
        if connection.dropped:
            return
        connection.dropped = True
        if connection.idle:
            connection.idle = False
            self._idle.remove(connection)
        connection.close()
        self._free_slot()

    def _free_slot(self) -> None:
        """One connection fewer: a waiter, if any, may open one in its place."""
        self._open -= 1
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self._open += 1
                waiter.set_result(None)
                return

    async def aclose(self) -> None:
        """Close every idle connection; busy ones close as their answers complete."""
        self._closed = True
        for connection in list(self._idle):
            self._drop(connection)
        while self._waiters:  # or they would open connections for a closed pool
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(RuntimeError("the upstream's connection pool was closed"))
        # Let the loop run the closes it scheduled, so no socket outlives the pool.
        await asyncio.sleep(0)

    def __repr__(self) -> str:
        origin = self._origin
        return (
            f"WirePool({origin.host}:{origin.port}, open={self._open}/{self._limit}, "
            f"idle={len(self._idle)}, waiting={len(self._waiters)})"
        )


def _head(origin: Origin, headers: dict[str, str]) -> bytes:
    """Everything of a request from the end of its path to the content-length value."""
    lines = [
        b" HTTP/1.1",
        b"host: " + origin.host_header,
        b"accept: */*",
        # Never a compressed body: decompressing costs more than loopback or LAN bytes.
        b"accept-encoding: identity",
        b"user-agent: overdrive",
        b"content-type: application/json",
        *(f"{name}: {value}".encode("latin-1") for name, value in headers.items()),
        b"content-length: ",
    ]
    return b"\r\n".join(lines)


def _expire(waiter: asyncio.Future[_Connection | None], timeout: float) -> None:
    if not waiter.done():
        waiter.set_exception(httpx.PoolTimeout(f"no connection free within {timeout:g}s"))


def _connect_error(exc: OSError, origin: Origin) -> httpx.TransportError:
    """The httpx error for a failed connect (TimeoutError is an OSError too)."""
    where = f"{origin.host}:{origin.port}"
    if isinstance(exc, TimeoutError):
        return httpx.ConnectTimeout(f"connecting to {where} timed out")
    return httpx.ConnectError(f"cannot connect to {where}: {exc}")
