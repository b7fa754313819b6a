from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable, Coroutine, Iterator, Mapping
from types import SimpleNamespace
from typing import Any, cast

import orjson
import pytest

from overdrive.doors._answer import Answer
from overdrive.gateway import GatewayApp
from overdrive.gateway._protocol import GatewayProtocol, gateway_app
from overdrive.gateway._server import GatewayServer
from overdrive.testing import FakeClock


@pytest.fixture
def gateway() -> Iterator[GatewayServer]:
    # Health, and unknown paths when rejected, never reach the upstream: any address will do.
    config = {
        "upstreams": [{"name": "a", "base_url": "http://127.0.0.1:9/v1", "models": ["m"]}],
        "doors": {"unknown_paths": "reject"},
    }
    with GatewayServer(GatewayApp(config)) as server:
        yield server


def test_pipelined_requests_get_whole_answers_in_order(gateway: GatewayServer) -> None:
    requests = b"".join(
        b"GET /health/live HTTP/1.1\r\nhost: x\r\n\r\n"
        if i % 2 == 0
        else b"GET /nowhere HTTP/1.1\r\nhost: x\r\n\r\n"
        for i in range(4)
    )
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=5) as sock:
        sock.sendall(requests)
        received = b""
        while received.count(b"HTTP/1.1 ") < 4 or not received.endswith(b"}"):
            chunk = sock.recv(65536)
            assert chunk, f"the gateway closed early after {received!r}"
            received += chunk
    statuses = [part.split(b" ", 1)[0] for part in received.split(b"HTTP/1.1 ")[1:]]
    assert statuses == [b"200", b"404", b"200", b"404"]
    assert b'{"status":"live"}' in received


# --- the protocol on its own: a recording transport, an app that answers at once ------------


class RecordingTransport:
    """Keeps what the protocol writes and whether it closed or paused the connection."""

    def __init__(self) -> None:
        self.written = b""
        self.closed = False
        self.aborted = False
        self.reading = True
        self.high_water: int | None = None

    def write(self, data: bytes) -> None:
        assert not self.closed, "written after close"
        self.written += data

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = self.aborted = True

    def can_write_eof(self) -> bool:
        return False  # refusals close at once here; the lingering close is tried on sockets

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self.high_water = high

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True


class SteppedLoop:
    """The running loop, with time read from a FakeClock and timers fired by hand."""

    def __init__(self, clock: FakeClock) -> None:
        self._real = asyncio.get_running_loop()
        self._clock = clock
        self.timers: list[tuple[float, Callable[[], None]]] = []

    def time(self) -> float:
        return self._clock.now()

    def call_at(self, when: float, callback: Callable[[], None]) -> asyncio.TimerHandle:
        self.timers.append((when, callback))
        return self._real.call_at(self._real.time() + 3600, lambda: None)

    def fire_due(self) -> None:
        due = [t for t in self.timers if t[0] <= self._clock.now()]
        self.timers = [t for t in self.timers if t[0] > self._clock.now()]
        for _, callback in due:
            callback()

    def create_task(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        return self._real.create_task(coro)

    def create_future(self) -> asyncio.Future[None]:
        return self._real.create_future()


class Stream:
    """A streamed reply's body: chunks as they are released, and whether it was closed."""

    def __init__(self) -> None:
        self.chunks: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.closed = False

    def __aiter__(self) -> Stream:
        return self

    async def __anext__(self) -> bytes:
        chunk = await self.chunks.get()
        if chunk is None:
            raise StopAsyncIteration
        return chunk

    async def aclose(self) -> None:
        self.closed = True


class EchoApp(GatewayApp):
    """Answers with the request it got; ``/stream`` answers with ``self.stream``."""

    def __init__(self, max_body_bytes: int = 1000) -> None:
        super().__init__({"upstreams": []}, max_body_bytes=max_body_bytes)
        self.stream = Stream()
        self.hold = asyncio.Event()
        self.hold.set()

    async def serve(
        self, method: str, path: str, headers: Mapping[str, str], body: bytes
    ) -> Answer:
        await self.hold.wait()
        if path == "/stream":
            return Answer(200, {"content-type": "text/event-stream"}, stream=self.stream)  # type: ignore[arg-type]
        echo = orjson.dumps(
            {"method": method, "path": path, "headers": headers, "body": body.decode()}
        )
        return Answer(200, {"content-type": "application/json"}, echo)


class Connection:
    """One protocol instance on a recording transport, as uvicorn would make it."""

    def __init__(
        self, app: EchoApp, loop: SteppedLoop, keep_alive_s: int = 5, state: Any = None
    ) -> None:
        config = SimpleNamespace(loaded=True, loaded_app=app, timeout_keep_alive=keep_alive_s)
        self.state = state or SimpleNamespace(connections=set(), tasks=set(), total_requests=0)
        self.protocol = GatewayProtocol(config, self.state, {}, loop)  # type: ignore[arg-type]
        self.transport = RecordingTransport()
        self.protocol.connection_made(self.transport)  # type: ignore[arg-type]

    def send(self, data: bytes) -> None:
        self.protocol.data_received(data)

    async def settle(self) -> None:
        for _ in range(5):
            await asyncio.sleep(0)

    def answers(self) -> list[bytes]:
        return [b"HTTP/1.1 " + part for part in self.transport.written.split(b"HTTP/1.1 ")[1:]]


@pytest.fixture
async def clock_loop() -> tuple[FakeClock, SteppedLoop]:
    clock = FakeClock(100.0)
    return clock, SteppedLoop(clock)


def streaming(
    loop: SteppedLoop, request: bytes = b"GET /stream HTTP/1.1\r\nhost: x\r\n\r\n"
) -> tuple[EchoApp, Connection]:
    """A connection whose one request is answered with the app's stream."""
    app = EchoApp()
    conn = Connection(app, loop)
    conn.send(request)
    return app, conn


def post(path: str, body: bytes, *extra: bytes) -> bytes:
    head = [b"POST " + path.encode() + b" HTTP/1.1", b"host: x", *extra]
    head.append(b"content-length: %d" % len(body))
    return b"\r\n".join(head) + b"\r\n\r\n" + body


async def test_an_answer_is_one_write_with_its_length_and_the_door_headers_only(
    clock_loop: tuple[FakeClock, SteppedLoop],
) -> None:
    conn = Connection(EchoApp(), clock_loop[1])
    conn.send(post("/v1/chat/completions?x=1", b"{}", b"Authorization: Bearer k", b"X-Other: y"))
    await conn.settle()
    [answer] = conn.answers()
    head, body = answer.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"content-length: %d" % len(body) in head
    assert orjson.loads(body) == {
        "method": "POST",
        "path": "/v1/chat/completions",
        "headers": {"authorization": "Bearer k"},
        "body": "{}",
    }
    assert not conn.transport.closed
    assert conn.state.total_requests == 1


async def test_a_quoted_path_is_decoded(clock_loop: tuple[FakeClock, SteppedLoop]) -> None:
    conn = Connection(EchoApp(), clock_loop[1])
    conn.send(b"GET /health/%6Cive HTTP/1.1\r\nhost: x\r\n\r\n")
    await conn.settle()
    assert b'"path":"/health/live"' in conn.transport.written


async def test_a_chunked_body_is_joined(clock_loop: tuple[FakeClock, SteppedLoop]) -> None:
    conn = Connection(EchoApp(), clock_loop[1])
    conn.send(b"POST /e HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n")
    conn.send(b"3\r\nabc\r\n")
    conn.send(b"2\r\nde\r\n0\r\n\r\n")
    await conn.settle()
    assert b'"body":"abcde"' in conn.transport.written


async def test_pipelined_requests_wait_their_turn(
    clock_loop: tuple[FakeClock, SteppedLoop],
) -> None:
    app = EchoApp()
    app.hold.clear()
    conn = Connection(app, clock_loop[1])
    conn.send(b"".join(post(f"/{i}", b"") for i in range(20)))
    await conn.settle()
    assert conn.transport.written == b""
    assert not conn.transport.reading  # too many queued: the client is held back
    app.hold.set()
    await conn.settle()
    for _ in range(20):
        await conn.settle()
    paths = [orjson.loads(a.split(b"\r\n\r\n", 1)[1])["path"] for a in conn.answers()]
    assert paths == [f"/{i}" for i in range(20)]
    assert conn.transport.reading


async def test_what_does_not_parse_gets_400_and_the_connection_closes(
    clock_loop: tuple[FakeClock, SteppedLoop],
) -> None:
    conn = Connection(EchoApp(), clock_loop[1])
    conn.send(b"NOT HTTP AT ALL\r\n\r\n")
    await conn.settle()
    assert conn.transport.written.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert conn.transport.closed


async def test_an_endless_request_target_gets_414_and_the_connection_closes(
    clock_loop: tuple[FakeClock, SteppedLoop],
) -> None:
    conn = Connection(EchoApp(), clock_loop[1])
    conn.send(b"GET /" + b"a" * 70_000)
    await conn.settle()
    assert conn.transport.written.startswith(b"HTTP/1.1 414 ")
    assert b"uri_too_long" in conn.transport.written
    assert conn.transport.closed


async def test_a_declared_oversize_body_is_dropped_and_refused(
    clock_loop: tuple[FakeClock, SteppedLoop],
) -> None:
    conn = Connection(EchoApp(max_body_bytes=10), clock_loop[1])
    conn.send(b"POST /e HTTP/1.1\r\nhost: x\r\ncontent-length: 11\r\nexpect: 100-continue\r\n\r\n")
    await conn.settle()
    assert b"100 Continue" not in conn.transport.written  # it must not send the body
    conn.send(b"x" * 11)
    await conn.settle()
    [answer] = conn.answers()
    assert answer.startswith(b"HTTP/1.1 413 ")
    assert b"connection: close\r\n" in answer
    assert b"request_too_large" in answer
    assert conn.transport.closed


async def test_a_chunked_body_over_the_limit_is_refused(
    clock_loop: tuple[FakeClock, SteppedLoop],
) -> None:
    conn = Connection(EchoApp(max_body_bytes=10), clock_loop[1])
    conn.send(b"POST /e HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n")
    conn.send(b"8\r\n12345678\r\n8\r\n12345678\r\n0\r\n\r\n")
    await conn.settle()
    assert conn.answers()[0].startswith(b"HTTP/1.1 413 ")
    assert conn.transport.closed


async def test_expect_continue_is_answered_before_the_body(
    clock_loop: tuple[FakeClock, SteppedLoop],
) -> None:
    conn = Connection(EchoApp(), clock_loop[1])
    conn.send(b"POST /e HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\nexpect: 100-continue\r\n\r\n")
    assert conn.transport.written == b"HTTP/1.1 100 Continue\r\n\r\n"
    conn.send(b"{}")
    await conn.settle()
    assert conn.answers()[1].startswith(b"HTTP/1.1 200 OK")
    assert b'"expect"' not in conn.transport.written  # not handed to the app


async def test_http_1_0_and_connection_close_end_the_connection(
    clock_loop: tuple[FakeClock, SteppedLoop],
) -> None:
    for request in (
        b"GET /a HTTP/1.0\r\n\r\n",
        b"GET /a HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    ):
        conn = Connection(EchoApp(), clock_loop[1])
        conn.send(request)
        await conn.settle()
        assert b"connection: close\r\n" in conn.transport.written
        assert conn.transport.closed


async def test_head_gets_the_head_alone(clock_loop: tuple[FakeClock, SteppedLoop]) -> None:
    conn = Connection(EchoApp(), clock_loop[1])
    conn.send(b"HEAD /a HTTP/1.1\r\nhost: x\r\n\r\n")
    await conn.settle()
    head, body = conn.transport.written.split(b"\r\n\r\n", 1)
    assert body == b""
    assert b"content-length: " in head


async def test_a_stream_is_relayed_in_chunks_then_closed(
    clock_loop: tuple[FakeClock, SteppedLoop],
) -> None:
    app, conn = streaming(clock_loop[1])
    await conn.settle()
    assert b"transfer-encoding: chunked\r\n" in conn.transport.written
    assert b"cache-control: no-cache\r\n" in conn.transport.written
    for chunk in (b"data: 1\n\n", b"", b"data: [DONE]\n\n", None):
        app.stream.chunks.put_nowait(chunk)
    await conn.settle()
    body = conn.transport.written.split(b"\r\n\r\n", 1)[1]
    assert body == b"9\r\ndata: 1\n\n\r\ne\r\ndata: [DONE]\n\n\r\n0\r\n\r\n"
    assert app.stream.closed
    assert not conn.transport.closed


async def test_a_stream_to_http_1_0_ends_with_the_connection(
    clock_loop: tuple[FakeClock, SteppedLoop],
) -> None:
    app, conn = streaming(clock_loop[1], b"GET /stream HTTP/1.0\r\n\r\n")
    app.stream.chunks.put_nowait(b"data: 1\n\n")
    app.stream.chunks.put_nowait(None)
    await conn.settle()
    head, body = conn.transport.written.split(b"\r\n\r\n", 1)
    assert b"transfer-encoding" not in head
    assert b"content-length" not in head
    assert body == b"data: 1\n\n"
    assert conn.transport.closed


async def test_hanging_up_mid_stream_closes_the_stream(
    clock_loop: tuple[FakeClock, SteppedLoop],
) -> None:
    app, conn = streaming(clock_loop[1])
    app.stream.chunks.put_nowait(b"data: 1\n\n")
    await conn.settle()
    conn.transport.closed = True
    conn.protocol.connection_lost(None)
    await conn.settle()
    assert app.stream.closed
    assert not conn.state.tasks
    assert not conn.state.connections


async def test_a_slow_reader_holds_the_stream_back(
    clock_loop: tuple[FakeClock, SteppedLoop],
) -> None:
    app, conn = streaming(clock_loop[1])
    await conn.settle()
    conn.protocol.pause_writing()
    app.stream.chunks.put_nowait(b"late")
    await conn.settle()
    assert b"late" not in conn.transport.written
    conn.protocol.resume_writing()
    await conn.settle()
    assert b"4\r\nlate\r\n" in conn.transport.written


async def test_silence_closes_a_kept_alive_connection(
    clock_loop: tuple[FakeClock, SteppedLoop],
) -> None:
    clock, loop = clock_loop
    conn = Connection(EchoApp(), loop, keep_alive_s=5)
    conn.send(post("/a", b""))
    await conn.settle()
    clock.advance(3)
    conn.send(b"POST /b HTTP/1.1\r\n")  # a request begins: heard, so not silent
    clock.advance(3)
    loop.fire_due()
    assert not conn.transport.closed
    clock.advance(2)
    loop.fire_due()
    assert conn.transport.closed  # 5 s with nothing heard


async def test_a_busy_connection_is_not_timed_out(
    clock_loop: tuple[FakeClock, SteppedLoop],
) -> None:
    clock, loop = clock_loop
    app = EchoApp()
    app.hold.clear()
    conn = Connection(app, loop, keep_alive_s=5)
    conn.send(post("/slow", b""))
    await conn.settle()
    clock.advance(60)
    loop.fire_due()
    assert not conn.transport.closed
    app.hold.set()
    await conn.settle()
    assert conn.answers()
    assert not conn.transport.closed
    clock.advance(5)
    loop.fire_due()
    assert conn.transport.closed


async def test_shutdown_closes_idle_connections_and_busy_ones_after_their_answer(
    clock_loop: tuple[FakeClock, SteppedLoop],
) -> None:
    first = EchoApp()
    idle = Connection(first, clock_loop[1])
    assert not first.draining
    idle.protocol.shutdown()
    assert idle.transport.closed
    assert first.draining  # readiness says so from the first connection told

    app = EchoApp()
    app.hold.clear()
    busy = Connection(app, clock_loop[1])
    busy.send(post("/a", b"") + post("/queued", b""))
    await busy.settle()
    busy.protocol.shutdown()
    assert not busy.transport.closed
    app.hold.set()
    await busy.settle()
    [answer] = busy.answers()
    assert b'"path":"/a"' in answer
    assert b"connection: close" not in answer
    assert busy.transport.closed


def test_the_protocol_finds_the_app_under_middleware() -> None:
    app = GatewayApp({"upstreams": []})
    assert gateway_app(SimpleNamespace(app=SimpleNamespace(app=app))) is app
    with pytest.raises(TypeError, match="serves a GatewayApp, not SimpleNamespace"):
        gateway_app(SimpleNamespace(app=None))


# --- limits, seen from inside: what the parser is fed, timers on the fake clock -------------


class CountingParser:
    """Wraps the protocol's parser, counting the bytes it is fed."""

    def __init__(self, parser: Any) -> None:
        self._parser = parser
        self.fed = 0

    def feed_data(self, data: bytes) -> None:
        self.fed += len(data)
        self._parser.feed_data(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._parser, name)


def counted(conn: Connection) -> CountingParser:
    parser = CountingParser(conn.protocol._parser)
    conn.protocol._parser = cast(Any, parser)  # a test double, duck-typed
    return parser


async def test_an_endless_header_feeds_the_parser_no_more_than_the_line_limit(
    clock_loop: tuple[FakeClock, SteppedLoop],
) -> None:
    conn = Connection(EchoApp(), clock_loop[1])
    parser = counted(conn)
    conn.send(b"GET /a HTTP/1.1\r\nx-big: ")
    for _ in range(64):  # 4 MB in 64 KB reads, as the attack sent it
        conn.send(b"a" * 65536)
    await conn.settle()
    limit = conn.protocol._max_line
    assert limit < parser.fed <= limit + 64  # the head's start, then the line to its limit
    [answer] = conn.answers()
    assert answer.startswith(b"HTTP/1.1 431 ")
    assert conn.transport.closed


async def test_many_short_header_lines_stop_at_the_head_limit(
    clock_loop: tuple[FakeClock, SteppedLoop],
) -> None:
    conn = Connection(EchoApp(), clock_loop[1])
    parser = counted(conn)
    conn.send(b"GET /a HTTP/1.1\r\n")
    for i in range(5000):
        conn.send(b"x-%d: %s\r\n" % (i, b"v" * 50))
    await conn.settle()
    assert parser.fed == conn.protocol._max_head  # not one byte of the head past its limit
    assert conn.answers()[0].startswith(b"HTTP/1.1 431 ")


async def test_a_trickled_head_gets_408_at_its_deadline_however_it_trickles(
    clock_loop: tuple[FakeClock, SteppedLoop],
) -> None:
    clock, loop = clock_loop
    conn = Connection(EchoApp(), loop, keep_alive_s=5)
    conn.send(b"GET /a HTTP/1.1\r\n")
    for _ in range(9):  # a byte a second: never silent for the 5 s keep-alive
        clock.advance(1)
        conn.send(b"x")
        loop.fire_due()
    assert not conn.transport.closed
    clock.advance(1)  # 10 s since its first byte: the default head_timeout
    loop.fire_due()
    [answer] = conn.answers()
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert conn.transport.closed


async def test_the_head_deadline_is_one_timer_moved_to_the_next_head(
    clock_loop: tuple[FakeClock, SteppedLoop],
) -> None:
    clock, loop = clock_loop
    conn = Connection(EchoApp(), loop, keep_alive_s=60)
    conn.send(b"GET /a HTTP/1.1\r\n")  # a head in two reads: the deadline is armed
    conn.send(b"host: x\r\n\r\n")
    await conn.settle()
    clock.advance(8)
    conn.send(b"GET /b HTTP/1.1\r\n")  # the next head begins 8 s later, and stalls
    clock.advance(2)
    loop.fire_due()  # the first deadline: not this head's
    assert not conn.transport.closed
    head_timers = [t for t in loop.timers if t[1] == conn.protocol._head_check]
    assert [when for when, _ in head_timers] == [clock.now() + 8]
    clock.advance(8)
    loop.fire_due()
    assert conn.answers()[-1].startswith(b"HTTP/1.1 408 ")


async def test_a_read_full_of_pipelined_requests_queues_a_piece_of_them(
    clock_loop: tuple[FakeClock, SteppedLoop],
) -> None:
    app = EchoApp()
    app.hold.clear()
    conn = Connection(app, clock_loop[1])
    parser = counted(conn)
    request = b"GET /p HTTP/1.1\r\n\r\n"
    conn.send(request * 10_000)  # one 190 KB read
    await conn.settle()
    protocol = conn.protocol
    assert not conn.transport.reading
    assert len(protocol._queue) <= 4096 // len(request) + 1  # one piece's worth, not 10,000
    assert parser.fed <= 2 * 4096
    assert protocol._unparsed is not None  # the rest is held, as it came, until there is room
    app.hold.set()
    for _ in range(100_000):  # every answer, in as many turns of the loop as it takes
        if conn.state.total_requests == 10_000:
            break
        await asyncio.sleep(0)
    assert len(conn.answers()) == 10_000
    assert conn.transport.reading


async def test_a_full_write_buffer_stops_reading_and_answering(
    clock_loop: tuple[FakeClock, SteppedLoop],
) -> None:
    conn = Connection(EchoApp(), clock_loop[1])
    assert conn.transport.high_water == conn.protocol._limits.write_buffer_bytes
    conn.send(post("/1", b""))
    await conn.settle()
    conn.protocol.pause_writing()  # the peer's buffer is past the mark
    assert not conn.transport.reading
    conn.send(post("/2", b""))  # the read already under way
    await conn.settle()
    assert len(conn.answers()) == 1  # not answered into a full buffer
    conn.protocol.resume_writing()
    await conn.settle()
    assert len(conn.answers()) == 2
    assert conn.transport.reading


async def test_a_pipelining_client_that_takes_nothing_is_dropped_after_the_idle_timeout(
    clock_loop: tuple[FakeClock, SteppedLoop],
) -> None:
    clock, loop = clock_loop
    conn = Connection(EchoApp(), loop)
    conn.send(post("/1", b""))
    await conn.settle()
    conn.protocol.pause_writing()  # the client takes none of its answers
    conn.send(post("/2", b"") + post("/3", b""))
    await conn.settle()
    clock.advance(conn.protocol._limits.stream_idle_timeout - 1)
    loop.fire_due()
    assert not conn.transport.aborted
    clock.advance(1)
    loop.fire_due()
    assert conn.transport.aborted  # dropped, its unread answers with it
    assert len(conn.answers()) == 1  # nothing more was answered into the full buffer


async def test_a_stream_whose_reader_takes_nothing_is_dropped_after_the_idle_timeout(
    clock_loop: tuple[FakeClock, SteppedLoop],
) -> None:
    clock, loop = clock_loop
    app, conn = streaming(loop)
    await conn.settle()
    conn.protocol.pause_writing()
    app.stream.chunks.put_nowait(b"data: 1\n\n")
    await conn.settle()
    clock.advance(conn.protocol._limits.stream_idle_timeout - 1)
    loop.fire_due()
    assert not conn.transport.aborted
    clock.advance(1)
    loop.fire_due()
    assert conn.transport.aborted  # dropped, its buffer not flushed
    conn.protocol.connection_lost(None)  # what the transport does after abort()
    await conn.settle()
    assert app.stream.closed
    assert not conn.state.tasks


async def test_a_reader_that_takes_a_little_is_not_dropped(
    clock_loop: tuple[FakeClock, SteppedLoop],
) -> None:
    clock, loop = clock_loop
    _app, conn = streaming(loop)
    await conn.settle()
    idle = conn.protocol._limits.stream_idle_timeout
    for _ in range(4):
        conn.protocol.pause_writing()
        clock.advance(idle * 0.9)
        loop.fire_due()
        conn.protocol.resume_writing()
    assert not conn.transport.aborted


async def test_an_early_413_waits_for_the_answer_ahead_of_it(
    clock_loop: tuple[FakeClock, SteppedLoop],
) -> None:
    app = EchoApp(max_body_bytes=10)
    app.hold.clear()
    conn = Connection(app, clock_loop[1])
    conn.send(post("/first", b""))
    conn.send(b"POST /e HTTP/1.1\r\nhost: x\r\ncontent-length: 99\r\nexpect: 100-continue\r\n\r\n")
    await conn.settle()
    assert conn.transport.written == b""  # no 100 Continue, and nothing ahead of /first
    app.hold.set()
    await conn.settle()
    first, refused = conn.answers()
    assert b'"path":"/first"' in first
    assert refused.startswith(b"HTTP/1.1 413 ")
    assert conn.transport.closed


async def test_garbage_after_a_request_gets_its_answer_then_400(
    clock_loop: tuple[FakeClock, SteppedLoop],
) -> None:
    conn = Connection(EchoApp(), clock_loop[1])
    conn.send(post("/a", b"") + b"NOT HTTP\r\n\r\n")
    await conn.settle()
    ok, bad = conn.answers()
    assert ok.startswith(b"HTTP/1.1 200 ")
    assert bad.startswith(b"HTTP/1.1 400 ")
    assert conn.transport.closed


async def test_connections_past_the_limit_are_refused(
    clock_loop: tuple[FakeClock, SteppedLoop],
) -> None:
    app = EchoApp()
    first = Connection(app, clock_loop[1])
    first.state.connections.update(object() for _ in range(app.gateway.max_connections - 1))
    extra = Connection(app, clock_loop[1], state=first.state)
    [refused] = extra.answers()
    assert refused.startswith(b"HTTP/1.1 503 ")
    assert b"retry-after: 1\r\n" in refused
    assert extra.transport.closed
    assert extra.protocol not in first.state.connections
    assert first.protocol in first.state.connections
