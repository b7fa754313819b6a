"""``od.dashboard()``: the dashboard's routes on a small HTTP/1.1 server of its own.

The gateway serves the dashboard among its routes; an engine inside an
application has no server, so this one serves just the dashboard: GET and
HEAD, one request per connection (``connection: close``), a head of at most
16 KB read within 10 s, at most 32 connections at once. It runs on the
event loop the engine is used from (or the engine's own loop thread, for a
sync program) and asks for no key: it listens on loopback by default, for
the engine's own operator.

>>> server = od.dashboard(port=8765)  # doctest: +SKIP
>>> server.url  # doctest: +SKIP
'http://127.0.0.1:8765/dashboard'
>>> server.close()  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import socket
import urllib.parse
from collections.abc import Callable, Coroutine
from http import HTTPStatus
from typing import Any

from ..coalesce import StreamReply
from ..doors import Answer, error_answer
from ._routes import PAGE_PATH, Dashboard
from ._snapshot import Engine

__all__ = ["DashboardServer", "serve_dashboard"]

_MAX_HEAD = 16 * 1024
_HEAD_TIMEOUT_S = 10.0
_MAX_CONNECTIONS = 32
_log = logging.getLogger("overdrive.dashboard")
Submit = Callable[[Coroutine[Any, Any, None]], concurrent.futures.Future[None]]


class DashboardServer:
    """A running dashboard: its :attr:`url`; :meth:`close` (or :meth:`aclose`) stops it."""

    __slots__ = ("_connections", "_dashboard", "_engine", "_loop", "_server", "_sock", "url")

    def __init__(self, engine: Engine, sock: socket.socket, dashboard: Dashboard) -> None:
        self._engine, self._sock, self._dashboard = engine, sock, dashboard
        host, port = sock.getsockname()[:2]
        shown = f"[{host}]" if ":" in host else host
        self.url = f"http://{shown}:{port}{PAGE_PATH}"
        self._server: asyncio.Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._connections: set[asyncio.Task[None]] = set()

    @property
    def dashboard(self) -> Dashboard:
        """The routes it serves (and the live feeds running: ``.clients``)."""
        return self._dashboard

    async def start(self) -> None:
        """Serve on the running loop (the socket is bound and listening already)."""
        self._loop = asyncio.get_running_loop()
        # The reader's limit bounds what a head may buffer: past it, readuntil gives up.
        self._server = await asyncio.start_server(
            self._connection, sock=self._sock, limit=_MAX_HEAD
        )

    async def aclose(self) -> None:
        """Stop listening and end the connections (live feeds included)."""
        loop = self._loop
        if loop is not None and loop is not asyncio.get_running_loop():
            await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(self._stop(), loop))
        else:
            await self._stop()

    def close(self) -> None:
        """:meth:`aclose` from a thread with no running loop (a sync program)."""
        loop = self._loop
        if loop is None or loop.is_closed():
            self._sock.close()
        else:
            asyncio.run_coroutine_threadsafe(self._stop(), loop).result()

    async def _stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        if server is not None:
            await server.wait_closed()
        self._sock.close()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        if len(self._connections) >= _MAX_CONNECTIONS:
            message = "The dashboard is at its connection limit; try again shortly."
            await _write_whole(writer, error_answer(503, message, "too_many_connections"))
            return
        self._connections.add(task)
        try:
            await self._serve_one(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass  # the client left or sent garbage: nothing to answer
        except asyncio.CancelledError:
            # Cancelled by _stop only. asyncio's stream server reads a cancelled
            # connection task's exception() and logs a traceback: end it plainly.
            pass
        finally:
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _serve_one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), _HEAD_TIMEOUT_S)
        except TimeoutError:
            return
        request = _parse_head(head)
        if request is None:
            await _write_whole(writer, error_answer(400, "Bad request.", "bad_request"))
            return
        method, path, query, headers = request
        reply = await self._dashboard.answer(self._engine, method, path, headers, query=query)
        if reply.stream is None:
            await _write_whole(writer, reply, head_only=method == "HEAD")
        else:
            await _relay(reply, reader, writer, head_only=method == "HEAD")

    def __repr__(self) -> str:
        state = "serving" if self._server is not None else "stopped"
        return f"DashboardServer({self.url}, {state}, connections={len(self._connections)})"


def serve_dashboard(
    engine: Engine,
    *,
    host: str = "127.0.0.1",
    port: int = 8765,
    submit: Submit | None = None,
    dashboard: Dashboard | None = None,
) -> DashboardServer:
    """Bind ``host:port`` now (so :attr:`~DashboardServer.url` is known, a taken port fails
    here) and serve there: on the running loop, else through ``submit`` (the engine's loop)."""
    sock = socket.create_server((host, port))
    sock.setblocking(False)
    server = DashboardServer(engine, sock, dashboard or Dashboard())
    try:
        loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
    except RuntimeError:
        loop = None
    if loop is not None:
        # Connections wait in the listen backlog until the task has run once.
        _background.add(task := loop.create_task(server.start()))
        task.add_done_callback(_background.discard)
    elif submit is not None:
        submit(server.start()).result()
    else:
        sock.close()
        raise RuntimeError("serve_dashboard needs a running event loop or a submit function")
    return server


# Start-up tasks, held until done: the loop keeps only a weak reference to a task.
_background: set[asyncio.Task[None]] = set()


def _parse_head(head: bytes) -> tuple[str, str, str, dict[str, str]] | None:
    """Method, decoded path, raw query and lower-cased headers; None if it does not parse."""
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1.") or len(head) > _MAX_HEAD:
        return None
    target = urllib.parse.urlsplit(parts[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if colon:
            headers[name.strip().lower()] = value.strip()
    return parts[0], urllib.parse.unquote(target.path), target.query, headers


def _head(reply: Answer, length: int | None) -> bytes:
    lines = [f"HTTP/1.1 {reply.status} {HTTPStatus(reply.status).phrase}"]
    lines += [f"{name}: {value}" for name, value in reply.headers.items()]
    if length is not None:
        lines.append(f"content-length: {length}")
    lines += ["connection: close", "", ""]
    return "\r\n".join(lines).encode("latin-1")


async def _write_whole(
    writer: asyncio.StreamWriter, reply: Answer, head_only: bool = False
) -> None:
    writer.write(_head(reply, len(reply.body)) + (b"" if head_only else reply.body))
    await writer.drain()


async def _relay(
    reply: Answer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, head_only: bool
) -> None:
    """Write the stream's chunks until it ends or the client hangs up; then close it.

    The client's end is watched beside the stream, so a feed waiting for its
    next tick gives its slot back as soon as the client leaves.
    """
    stream = reply.stream
    assert stream is not None
    reply.headers["cache-control"] = "no-cache"
    writer.write(_head(reply, None))
    pump = asyncio.ensure_future(_pump(stream, writer, head_only))
    gone = asyncio.ensure_future(reader.read(1))  # EOF (or a byte we ignore): the client left
    try:
        await asyncio.wait((pump, gone), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (pump, gone):
            task.cancel()
        await asyncio.gather(pump, gone, return_exceptions=True)
        await stream.aclose()


async def _pump(stream: StreamReply, writer: asyncio.StreamWriter, head_only: bool) -> None:
    await writer.drain()
    if head_only:
        return
    async for chunk in stream:
        writer.write(chunk)
        await writer.drain()
