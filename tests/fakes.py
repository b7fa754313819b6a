"""Scripted upstreams on real loopback sockets, for unit tests of the engine's own logic.

The test double sits below the production path: the engine reaches these
servers through its real clients (the lean wire client for whole answers,
httpx for streams and probes) over TCP, so every engine test runs their
framing, pooling and error mapping; only what the server answers is
scripted. Integration tests use the simulated upstream (``overdrive.sim``).

>>> async with FakeUpstream(clock) as fake, engine(fake, clock) as od:  # doctest: +SKIP
...     fake.script = [status(503)]  # the first call fails, its retry succeeds
...     await finish(clock, od.chat(model="m", messages=[...]))
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import socket
import ssl
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from types import TracebackType
from typing import Any, Self, TypeVar

import httptools
import httpx

from overdrive import Overdrive
from overdrive.testing import FakeClock

Responder = Callable[[httpx.Request], httpx.Response]
# What a server answers a request with; it may wait (on a gate, on the fake clock) first.
Handler = Callable[[httpx.Request], "Awaitable[httpx.Response] | httpx.Response"]
# What a raw-socket server does with one connection.
Serve = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
T = TypeVar("T")

# Loop turns to give sockets between two steps of the fake clock. Loopback
# delivers a write to the peer within the send call, so each hop of an
# exchange (connect, accept, request, answer, the client taking it) costs a
# turn, not real time: a call on a fresh connection takes about 16 turns
# through the wire client, a probe through httpx 18 and a stream 21
# (tests/test_fakes.py holds them to this bound). Fake time that passed while
# bytes were on their way would show up as upstream latency; an exchange that
# needs a few turns more only spills into the next 10 ms step. Every turn
# costs real time on every step, so the bound is kept close.
IO_TURNS = 24
# Real seconds a test waits for something the fake server should see, so a
# broken engine fails the test instead of hanging it.
_PATIENCE = 10.0
_NO_BODY = frozenset({204, 304})
_READ_BYTES = 64 * 1024
# A request head longer than this is not one an overdrive client sends.
_MAX_REQUEST_HEAD = 64 * 1024
_STEP = 0.01  # seconds of fake time per step


async def io_turns(count: int = IO_TURNS, until: asyncio.Future[Any] | None = None) -> None:
    """Let the loop run ``count`` times (without fake time passing), or until ``until`` is done."""
    for _ in range(count):
        if until is not None and until.done():
            return
        await asyncio.sleep(0)


async def pass_time(
    clock: FakeClock, seconds: float, until: asyncio.Future[Any] | None = None
) -> None:
    """Step the fake clock by ``seconds`` (or until ``until`` is done), 10 ms at a time.

    Between steps the loop gets :data:`IO_TURNS` turns, so an exchange on a
    loopback socket completes within the step it started in: the sockets
    cost the calls no fake time, as when the double replaced the socket.
    (``FakeClock.run_for`` gives five turns a step: too few for a round trip.)
    """
    for _ in range(round(seconds / _STEP)):
        if until is not None and until.done():
            return
        clock.advance(_STEP)
        await io_turns(until=until)


async def finish(clock: FakeClock, work: Awaitable[T], seconds: float = 120.0) -> T:
    """Run ``work`` while stepping the fake clock until it completes."""
    task = asyncio.ensure_future(work)
    await io_turns(until=task)  # what needs no fake time takes none
    await pass_time(clock, seconds, until=task)
    return await task


class HangUp(Exception):
    """Raised by a handler: the server closes the connection without answering."""


def hang_up(request: httpx.Request) -> httpx.Response:
    """A responder: close the connection without a byte of answer (a crashed or overloaded server).

    The client sees the connection end; a connect error needs a port that
    refuses instead (:func:`refusing_url`). On a kept-alive connection the
    wire client takes this for a server closing an idle connection and sends
    once more on a new one, so the next responder answers that.
    """
    raise HangUp


@contextlib.contextmanager
def refusing_url() -> Iterator[str]:
    """A base URL whose port is bound but not listening: every connection to it is refused.

    Held for the block, so no other server can take the port meanwhile.
    """
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/v1"


class SocketServer:
    """A TCP server on 127.0.0.1 (HTTPS given ``tls``) that runs :meth:`serve` per connection.

    The one base of the raw-socket fakes: it accepts, counts the connections
    (``connections`` accepted, ``open_sockets`` not closed yet), runs each
    one's :meth:`serve` as a task of its own and closes the socket once that
    returns (after what it wrote is sent). A client that leaves ends its
    connection quietly: ``ConnectionError`` or a read cut short is no error.
    Leaving ``async with`` cancels every connection still served and waits
    for it, so no socket outlives the test's loop. Subclasses override
    :meth:`serve`, or pass a ``serve`` function::

        async def hello(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await read_request(reader)
            writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")

        async with SocketServer(hello) as server:
            ...  # point a client at server.url
    """

    def __init__(self, serve: Serve | None = None, *, tls: ssl.SSLContext | None = None) -> None:
        self._serve = serve
        self._tls = tls
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self._changed = asyncio.Event()  # set as a connection closes
        self.connections = 0
        self.open_sockets = 0

    @property
    def port(self) -> int:
        assert self._server is not None, "use the server in `async with`"
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    @property
    def origin(self) -> str:
        return f"{'https' if self._tls else 'http'}://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """The base URL to configure an upstream with."""
        return f"{self.origin}/v1"

    @property
    def base_url(self) -> str:
        """:attr:`url`, by the name of the config field it goes in."""
        return self.url

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._accepted, "127.0.0.1", 0, ssl=self._tls)
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        assert self._server is not None
        self._server.close()
        for handler in list(self._handlers):
            handler.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        await self._server.wait_closed()

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Converse on one connection; it is closed once this returns."""
        if self._serve is None:
            raise NotImplementedError("pass a serve function, or override serve")
        await self._serve(reader, writer)

    async def wait_all_closed(self) -> None:
        """Return once every accepted connection is closed; TimeoutError if one stays open."""
        async with asyncio.timeout(_PATIENCE):
            while self.open_sockets:
                self._changed.clear()
                await self._changed.wait()

    async def _accepted(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self.connections += 1
        self.open_sockets += 1
        closing = False
        try:
            await self.serve(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client left: this connection is done
        except asyncio.CancelledError:
            closing = True  # the server is: ending quietly spares the loop a "never retrieved"
        finally:
            self._handlers.discard(task)
            await _close(writer, abort=closing)
            self.open_sockets -= 1
            self._changed.set()

    def __repr__(self) -> str:
        where = self.origin if self._server is not None else "not started"
        return f"{type(self).__name__}({where}, open={self.open_sockets})"


async def _close(writer: asyncio.StreamWriter, *, abort: bool) -> None:
    """Close after what was written is sent; ``abort``: at once (nobody waits for the rest)."""
    if abort:
        writer.transport.abort()
    else:
        writer.close()  # a no-op after an abort or a reset
    with contextlib.suppress(Exception):  # a reset or a TLS close the peer cut short
        await writer.wait_closed()


async def read_request(
    reader: asyncio.StreamReader, max_head: int = _MAX_REQUEST_HEAD
) -> tuple[bytes, bytes] | None:
    """One request as sent: its head, then a body of its content-length; None at end of stream.

    Raises ``asyncio.LimitOverrunError`` for a head over ``max_head`` bytes,
    which no client under test sends.
    """
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    if len(head) > max_head:
        raise asyncio.LimitOverrunError("request head too long", len(head))
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return head, await reader.readexactly(length)


class FakeServer(SocketServer):
    """An HTTP/1.1 server on 127.0.0.1 that answers each request with what ``handler`` returns.

    Requests reach the handler as ``httpx.Request`` and its ``httpx.Response``
    goes back on the socket: with its Content-Length when it was made with
    content, chunked (each chunk as the stream yields it) when made with a
    stream. A connection the client closes cancels the handler of the request
    it carried, as a real server's work ends with its connection. A handler
    that raises :class:`HangUp` closes the connection unanswered; any other
    exception also closes it, and is raised again when the server closes, so
    a failed assertion inside a handler fails the test.
    """

    def __init__(self, handler: Handler) -> None:
        super().__init__()
        self._handler = handler
        self._answering: set[asyncio.Task[None]] = set()
        self.errors: list[BaseException] = []
        self.requests: list[httpx.Request] = []  # every one received, in order

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await super().__aexit__(kind, error, traceback)
        for task in self._answering:  # their connections are gone; never wait on their work
            task.cancel()
        await asyncio.gather(*self._answering, return_exceptions=True)
        if self.errors and error is None:
            raise self.errors[0]

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Read while the requests read so far are answered, until the client closes."""
        connection = _ServerConnection(self, writer)
        try:
            while data := await reader.read(_READ_BYTES):
                connection.feed(data)
        finally:
            connection.lost()

    async def settled(self) -> None:
        """Wait until no request is being answered (a handler cancelled counts as done)."""
        async with asyncio.timeout(_PATIENCE):
            while self._answering:
                await asyncio.wait(set(self._answering))

    def _answer(self, connection: _ServerConnection) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(connection.answer_all())
        self._answering.add(task)
        task.add_done_callback(self._answering.discard)
        return task

    async def _respond(self, request: httpx.Request) -> httpx.Response:
        answer = self._handler(request)
        if inspect.isawaitable(answer):
            return await answer
        return answer


class _ServerConnection:
    """One accepted connection: parses requests, answers them one at a time, in order."""

    def __init__(self, server: FakeServer, writer: asyncio.StreamWriter) -> None:
        self._server = server
        self._writer = writer
        self._parser = httptools.HttpRequestParser(self)
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._body: list[bytes] = []
        self._pending: deque[httpx.Request] = deque()
        self._task: asyncio.Task[None] | None = None

    def feed(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            self._writer.transport.abort()  # the clients under test never send this

    def lost(self) -> None:
        if self._task is not None:
            self._task.cancel()  # the client left: so does the work on its request

    # httptools callbacks

    def on_message_begin(self) -> None:
        self._url, self._headers, self._body = b"", [], []

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        method = self._parser.get_method().decode("ascii")
        url = self._server.origin + self._url.decode("ascii")
        request = httpx.Request(method, url, headers=self._headers, content=b"".join(self._body))
        self._server.requests.append(request)
        self._pending.append(request)
        if self._task is None:
            self._task = self._server._answer(self)

    # answering

    async def answer_all(self) -> None:
        """Answer the requests received so far, in order, until one closes the connection."""
        try:
            while self._pending and await self._answer(self._pending.popleft()):
                pass
        finally:
            self._task = None

    async def _answer(self, request: httpx.Request) -> bool:
        """Answer one request; False once the connection is closed."""
        try:
            response = await self._server._respond(request)
            await self._send(response)
        except HangUp:
            self._writer.close()
            return False
        except ConnectionError:  # the client left while it was answered
            return False
        except Exception as exc:  # a broken handler: fail the test, not the loop
            self._server.errors.append(exc)
            self._writer.close()
            return False
        if _closes(request.headers) or _closes(response.headers):
            self._writer.close()
            return False
        return True

    async def _send(self, response: httpx.Response) -> None:
        write = self._writer.write
        if response.status_code in _NO_BODY or "content-length" in response.headers:
            await response.aread()
            write(_head(response) + response.content)
        elif isinstance(response.stream, httpx.ByteStream):  # made with content: its length
            content = await response.aread()
            write(_head(response, f"content-length: {len(content)}") + content)
        else:  # made with a stream: each chunk as it comes
            write(_head(response, "transfer-encoding: chunked"))
            async for chunk in response.aiter_raw():
                if chunk:
                    write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                    await self._writer.drain()  # a client reading slowly holds the stream back
            write(b"0\r\n\r\n")


def _head(response: httpx.Response, *extra: str) -> bytes:
    lines = [f"HTTP/1.1 {response.status_code} {response.reason_phrase}".encode("ascii")]
    lines += [name + b": " + value for name, value in response.headers.raw]
    lines += [line.encode("ascii") for line in extra]
    return b"\r\n".join(lines) + b"\r\n\r\n"


def _closes(headers: httpx.Headers) -> bool:
    value: str = headers.get("connection", "")
    return value.lower() == "close"


def chat_response(model: str, content: str = "hello", completion_tokens: int = 2) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 5, "completion_tokens": completion_tokens, "total_tokens": 7},
    }


def embeddings_response(model: str, count: int) -> dict[str, Any]:
    data = [{"object": "embedding", "index": i, "embedding": [float(i), 0.5]} for i in range(count)]
    return {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": count, "total_tokens": count},
    }


class FakeUpstream(FakeServer):
    """Answers from a script of responders, then with a default success; records every call.

    ``calls`` holds (fake time, path, JSON body) of each request as it
    arrives; with ``gate`` set, answers wait for it to open.
    """

    def __init__(
        self,
        clock: FakeClock | None = None,
        script: list[Responder] | None = None,
        gate: asyncio.Event | None = None,
    ) -> None:
        super().__init__(self.answer)
        self.clock = clock
        self.script = script if script is not None else []
        self.gate = gate
        self.calls: list[tuple[float, str, dict[str, Any]]] = []
        self._arrival = asyncio.Event()  # set, and replaced, as each call arrives

    async def answer(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        self.calls.append((self.clock.now() if self.clock else 0.0, request.url.path, body))
        self._arrival.set()
        self._arrival = asyncio.Event()
        if self.gate is not None:
            await self.gate.wait()
        if self.script:
            return self.script.pop(0)(request)
        if request.url.path.endswith("/embeddings"):
            inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
            return httpx.Response(200, json=embeddings_response(body["model"], len(inputs)))
        return httpx.Response(200, json=chat_response(body["model"]))

    async def received(self, count: int) -> None:
        """Wait until ``count`` calls have arrived (within real seconds, or the test fails)."""
        async with asyncio.timeout(_PATIENCE):
            while len(self.calls) < count:
                await self._arrival.wait()


def status(code: int, headers: dict[str, str] | None = None) -> Responder:
    def respond(request: httpx.Request) -> httpx.Response:
        error = {
            "error": {"message": f"status {code}", "type": "test", "param": None, "code": None}
        }
        return httpx.Response(code, json=error, headers=headers)

    return respond


def raw(code: int, content: bytes) -> Responder:
    return lambda request: httpx.Response(code, content=content)


def engine(upstream: FakeServer | str, clock: FakeClock, **overrides: Any) -> Overdrive:
    """An engine with one upstream "a" (models m and e) at ``upstream`` (a server or a URL)."""
    url = upstream if isinstance(upstream, str) else upstream.url
    settings = {"name": "a", "base_url": url, "models": ["m", "e"], **overrides}
    config: dict[str, Any] = {"upstreams": [settings], "retry": {"base": "100ms", "cap": "1s"}}
    return Overdrive.from_config(config, clock=clock)
