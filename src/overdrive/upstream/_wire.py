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

Here: the pool (:class:`WirePool`), the client made of it
(:class:`WireClient`) and when it applies (:func:`wire_client_for`). How one
connection reads an answer, and why one that misframes is never reused, is
``_wire_connection.py``. An answer over the pool's bounds fails the call with
:class:`~overdrive.UpstreamProtocolError`, not retried (the same request
would bring the same answer back).

Streamed calls, probes, injected transports and proxies stay on httpx.
"""

from __future__ import annotations

import asyncio
import os
import ssl
from collections import deque
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from ._client import AnswerBounds, UpstreamClient
from ._wire_connection import StaleConnectionError, WireConnection
from ._wire_response import UpstreamResponse, WireResponse

__all__ = ["Origin", "WireClient", "WirePool", "proxy_configured", "wire_client_for"]

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


def proxy_configured() -> bool:
    """Whether httpx would look for a proxy in the environment (either case of the names)."""
    return any(os.environ.get(name) or os.environ.get(name.lower()) for name in _PROXY_VARIABLES)


def wire_client_for(
    base_url: str,
    others: UpstreamClient,
    *,
    api_key: str | None,
    connections: int,
    timeout: float,
    connect_timeout: float,
    bounds: AnswerBounds | None = None,
    headers: Mapping[str, str] | None = None,
) -> WireClient | None:
    """The lean client for an upstream (its streams and probes to ``others``), or None.

    None where httpx must send: when a proxy is configured in the
    environment, and for base URLs with a query string or credentials.
    """
    origin = None if proxy_configured() else Origin.parse(base_url)
    if origin is None:
        return None
    # ``headers`` go on every request too (an Anthropic upstream's x-api-key and version).
    sent = {"authorization": f"Bearer {api_key}"} if api_key else {}
    sent.update(headers or {})
    return WireClient(
        origin,
        others,
        limit=connections,
        timeout=timeout,
        connect_timeout=connect_timeout,
        headers=sent,
        bounds=bounds,
    )


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
        "_generation",
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
        self._idle: list[WireConnection] = []  # a stack: the last given back goes out first
        self._open = 0  # connections holding a slot, idle or busy or connecting
        self._waiters: deque[asyncio.Future[WireConnection | None]] = deque()
        self._closed = False
        # Bumped when the loop the connections were made on is gone (forget_loop):
        # a connection of an older generation holds no slot and is never reused.
        self._generation = 0

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
        except StaleConnectionError:
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
        except StaleConnectionError:
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

    async def _acquire(self, fresh: bool) -> WireConnection:
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

    def _pop_idle(self) -> WireConnection | None:
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

    async def _connect(self) -> WireConnection:
        """Open a connection in the slot already reserved; the slot is freed if it fails."""
        connection = WireConnection(self._drop, self._bounds)
        connection.generation = self._generation
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

    async def _open_transport(self, connection: WireConnection) -> None:
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

    async def _wait(self) -> WireConnection | None:
        """Wait for a connection given back, or (None) for a freed slot, up to the timeout."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[WireConnection | None] = loop.create_future()
        self._waiters.append(waiter)
        timer = loop.call_later(self._timeout, _expire, waiter, self._timeout)
        try:
            return await waiter
        except BaseException:
            self._abandon(waiter)
            raise
        finally:
            timer.cancel()

    def _abandon(self, waiter: asyncio.Future[WireConnection | None]) -> None:
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

    def _give_back(self, connection: WireConnection) -> None:
        """After a complete answer: to the next waiter, onto the idle stack, or closed."""
        if self._closed or not connection.usable or connection.generation != self._generation:
            self._drop(connection)
            return
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(connection)
                return
        connection.idle = True
        self._idle.append(connection)

    def _drop(self, connection: WireConnection) -> None:
        """Close ``connection`` and free its slot; once, however often it is called."""
        if connection.dropped:
            return
        connection.dropped = True
        if connection.generation != self._generation:  # of a loop gone: no slot of ours
            connection.close()
            return
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

    async def forget_loop(self) -> None:
        """The event loop every connection was made on is gone: start afresh on the running one.

        Their futures and timers belong to that loop and will never fire:
        idle connections are closed (their sockets shut down), waiters
        forgotten, and busy ones no longer count, whatever becomes of them.
        """
        self._generation += 1
        idle, self._idle = self._idle, []
        for connection in idle:
            connection.idle = False
            connection.dropped = True
            connection.close()
        self._waiters.clear()
        self._open = 0

    async def close_idle(self) -> None:
        """Close the idle connections now (their loop is shutting down); the pool stays open."""
        for connection in list(self._idle):
            self._drop(connection)
        await asyncio.sleep(0)  # the loop runs the closes it scheduled

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
            f"{type(self).__name__}({origin.host}:{origin.port}, open={self._open}/{self._limit}, "
            f"idle={len(self._idle)}, waiting={len(self._waiters)})"
        )


class WireClient(WirePool, UpstreamClient):
    """The lean client as an :class:`UpstreamClient`: whole calls on its own pool.

    Its ``post`` is the pool's own, so a whole call costs no layer more. It
    reads every answer whole, so what must be read as it comes (a stream) or
    judged by its head alone (a probe) goes to ``others``, the endpoint's
    httpx client; closing the one closes the other.
    """

    __slots__ = ("_others",)

    def __init__(
        self,
        origin: Origin,
        others: UpstreamClient,
        *,
        limit: int,
        timeout: float,
        connect_timeout: float | None = None,
        headers: dict[str, str] | None = None,
        ssl_context: ssl.SSLContext | None = None,
        bounds: AnswerBounds | None = None,
    ) -> None:
        super().__init__(
            origin,
            limit=limit,
            timeout=timeout,
            connect_timeout=connect_timeout,
            headers=headers,
            ssl_context=ssl_context,
            bounds=bounds,
        )
        self._others = others

    def stream(self, path: str, body: bytes) -> Coroutine[Any, Any, UpstreamResponse]:
        return self._others.stream(path, body)

    def probe(self, path: str, max_wait: float) -> Coroutine[Any, Any, bool]:
        return self._others.probe(path, max_wait)

    async def aclose(self) -> None:
        try:
            await super().aclose()
        finally:
            await self._others.aclose()

    async def close_idle(self) -> None:
        await super().close_idle()
        await self._others.close_idle()

    async def forget_loop(self) -> None:
        await super().forget_loop()
        await self._others.forget_loop()


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


def _expire(waiter: asyncio.Future[WireConnection | None], timeout: float) -> None:
    if not waiter.done():
        waiter.set_exception(httpx.PoolTimeout(f"no connection free within {timeout:g}s"))


def _connect_error(exc: OSError, origin: Origin) -> httpx.TransportError:
    """The httpx error for a failed connect (TimeoutError is an OSError too)."""
    where = f"{origin.host}:{origin.port}"
    if isinstance(exc, TimeoutError):
        return httpx.ConnectTimeout(f"connecting to {where} timed out")
    return httpx.ConnectError(f"cannot connect to {where}: {exc}")
