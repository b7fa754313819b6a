"""The gateway's request limits on a real listening socket: what a hostile client cannot do.

Every test here opens raw sockets against a :class:`GatewayServer` whose
``[gateway]`` limits are small, so each limit is reached in a few KB and a
fraction of a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import select
import socket
import statistics
import threading
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any, cast

import pytest

from overdrive.coalesce import StreamReply
from overdrive.doors._answer import Answer
from overdrive.gateway import GatewayApp
from overdrive.gateway._protocol import GatewayProtocol
from overdrive.gateway._server import GatewayServer

MAX_LINE, MAX_HEAD = 1024, 4096
LIVE = b"GET /health/live HTTP/1.1\r\nhost: x\r\n\r\n"
LIVE_BODY = b'{"status":"live"}'


def config(**gateway: Any) -> dict[str, Any]:
    limits = {
        "max_header_bytes": MAX_LINE,
        "max_head_bytes": MAX_HEAD,
        "head_timeout": 0.5,
        "max_body_bytes": 1024,
        **gateway,
    }
    # Health and the API description never reach the upstream: any address will do.
    return {
        "upstreams": [{"name": "a", "base_url": "http://127.0.0.1:9/v1", "models": ["m"]}],
        "routing": {"health": {"probes": False}},
        "gateway": limits,
        # Unknown paths answer 404 here instead of going to that (absent) upstream.
        "doors": {"unknown_paths": "reject"},
    }


@contextlib.contextmanager
def serving(app: GatewayApp) -> Iterator[GatewayServer]:
    with GatewayServer(app) as server:
        yield server


@pytest.fixture(scope="module")
def gateway() -> Iterator[GatewayServer]:
    with serving(GatewayApp(config())) as server:
        yield server


def connect(server: GatewayServer) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=10)


def read_answer(sock: socket.socket) -> tuple[bytes, bytes]:
    """One whole answer framed by its content-length: (head, body)."""
    received = b""
    while b"\r\n\r\n" not in received:
        chunk = sock.recv(65536)
        assert chunk, f"closed before a whole head: {received!r}"
        received += chunk
    head, body = received.split(b"\r\n\r\n", 1)
    length = int(head.lower().split(b"content-length: ", 1)[1].split(b"\r\n", 1)[0])
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "closed mid-body"
        body += chunk
    assert len(body) == length, "more bytes than the answer's length"
    return head, body


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the gateway sends until it ends the connection."""
    received = b""
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(65536):
            received += chunk
    return received


def readable(sock: socket.socket, timeout: float) -> bool:
    return bool(select.select([sock], [], [], timeout)[0])


def feed_until_answered(sock: socket.socket, chunk: bytes, most: int) -> int:
    """Send ``chunk`` again and again until the gateway answers (or ``most`` bytes); bytes sent."""
    sent = 0
    while sent < most and not readable(sock, 0):
        try:
            sock.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            break
        sent += len(chunk)
    return sent


def protocols(server: GatewayServer) -> list[GatewayProtocol]:
    """The server's open connections, read on its own loop."""
    assert server.loop is not None
    assert server._server is not None
    state = server._server.server_state

    async def snapshot() -> list[GatewayProtocol]:
        return [c for c in state.connections if isinstance(c, GatewayProtocol)]

    return asyncio.run_coroutine_threadsafe(snapshot(), server.loop).result(5)


# --- the head: a bound per line, for the whole head, and a deadline ------------------------


def test_an_endless_header_value_gets_431_and_the_connection_ends(gateway: GatewayServer) -> None:
    with connect(gateway) as sock:
        sock.sendall(b"GET /health/live HTTP/1.1\r\nhost: x\r\nx-big: ")
        sent = feed_until_answered(sock, b"a" * 65536, most=64 * 1024 * 1024)
        answer = read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 431 ")
    assert b"connection: close\r\n" in answer
    assert b"request_header_fields_too_large" in answer
    assert sent < 64 * 1024 * 1024  # cut off, not read to the end


def test_a_head_over_max_head_bytes_of_short_lines_gets_431(gateway: GatewayServer) -> None:
    lines = b"".join(b"x-h%d: %s\r\n" % (i, b"v" * 100) for i in range(60))  # ~6.7 KB
    with connect(gateway) as sock:
        sock.sendall(b"GET /health/live HTTP/1.1\r\n" + lines + b"\r\n")
        answer = read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 431 ")


def head_of(size: int, line: int = MAX_LINE) -> bytes:
    """A GET /health/live head of exactly ``size`` bytes, padded with lines of ``line`` bytes."""
    start, end = b"GET /health/live HTTP/1.1\r\nhost: x\r\n", b"\r\n"
    pad, left = b"", size - len(start) - len(end)
    while left:
        take = min(line, left)
        assert take >= 8, "the padding cannot end in a line that short"
        pad += b"x-pad: " + b"a" * (take - 9) + b"\r\n"
        left -= take
    head = start + pad + end
    assert len(head) == size
    return head


@pytest.mark.parametrize("write", [MAX_HEAD, 100, 1], ids=["one write", "100 B writes", "1 B"])
def test_a_head_at_both_limits_is_served_and_one_byte_more_is_not(
    gateway: GatewayServer, write: int
) -> None:
    for size, status in ((MAX_HEAD, b"200"), (MAX_HEAD + 1, b"431")):
        head = head_of(size)
        with connect(gateway) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for at in range(0, len(head), write):
                sock.sendall(head[at : at + write])
            answer = read_answer(sock)[0]
        assert answer.startswith(b"HTTP/1.1 " + status), (size, answer[:40])


def test_one_line_over_max_header_bytes_gets_431(gateway: GatewayServer) -> None:
    with connect(gateway) as sock:
        sock.sendall(head_of(1200, line=MAX_LINE + 1)[:-2] + b"\r\n")
        answer = read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 431 ")


def test_a_pipelined_head_after_a_body_is_bounded_too(gateway: GatewayServer) -> None:
    body = b"{}" * 100
    first = b"POST /nowhere HTTP/1.1\r\nhost: x\r\ncontent-length: %d\r\n\r\n%b" % (len(body), body)
    with connect(gateway) as sock:
        # One read: the head that begins after the body is counted from the next read on.
        sock.sendall(first + b"GET /health/live HTTP/1.1\r\nx-big: ")
        assert read_answer(sock)[0].startswith(b"HTTP/1.1 404 ")  # the first is answered
        sent = feed_until_answered(sock, b"a" * 65536, most=64 * 1024 * 1024)
        answer = read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 431 ")
    assert sent < 64 * 1024 * 1024


def test_a_trickled_head_gets_408_at_its_deadline(gateway: GatewayServer) -> None:
    with connect(gateway) as sock:
        started = time.monotonic()
        sock.sendall(b"GET /health/live HTTP/1.1\r\nx-slow: ")
        # A byte every 50 ms: never silent for the keep-alive timeout, never a whole head.
        while not readable(sock, 0.05):
            sock.sendall(b"z")
        answer = read_until_closed(sock)
        took = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert b"request_timeout" in answer
    assert 0.45 <= took < 3.0  # the 0.5 s head_timeout, not pushed back by each byte


def test_the_loop_keeps_answering_while_endless_heads_pour_in(gateway: GatewayServer) -> None:
    stop, poured = threading.Event(), threading.Event()
    sent = [0, 0]

    def attack(me: int) -> None:
        while not stop.is_set():
            with contextlib.suppress(OSError), connect(gateway) as sock:
                sock.sendall(b"GET / HTTP/1.1\r\nx-big: ")
                while not stop.is_set():
                    sock.sendall(b"a" * 65536)
                    sent[me] += 65536
                    if min(sent) >= 32 * 1024 * 1024:
                        poured.set()

    attackers = [threading.Thread(target=attack, args=(i,), daemon=True) for i in range(2)]
    for thread in attackers:
        thread.start()
    try:
        # Unbounded, httptools grows each value by copying it: the loop's time goes there.
        assert poured.wait(60), f"the attackers could not pour their heads: {sent}"
        took = []
        with connect(gateway) as probe:
            for _ in range(30):
                started = time.perf_counter()
                probe.sendall(LIVE)
                assert read_answer(probe)[1] == LIVE_BODY
                took.append(time.perf_counter() - started)
    finally:
        stop.set()
        for thread in attackers:
            thread.join(10)
    assert statistics.median(took) < 0.02, took


# --- connections, pipelining, slow readers --------------------------------------------------


def test_connections_over_the_limit_get_503_and_close() -> None:
    with (
        serving(GatewayApp(config(max_connections=2))) as server,
        connect(server) as first,
        connect(server) as second,
    ):
        for sock in (first, second):  # both accepted and served
            sock.sendall(LIVE)
            assert read_answer(sock)[1] == LIVE_BODY
        with connect(server) as third:
            third.sendall(LIVE)
            refused = read_until_closed(third)
        assert refused.startswith(b"HTTP/1.1 503 ")
        assert b"connection: close\r\n" in refused
        assert b"too_many_connections" in refused
        first.close()
        second.sendall(LIVE)  # one round trip: the server has seen the first one go
        assert read_answer(second)[1] == LIVE_BODY
        with connect(server) as fourth:
            fourth.sendall(LIVE)
            assert read_answer(fourth)[1] == LIVE_BODY


def send_until_blocked(sock: socket.socket, data: bytes, most: int) -> int:
    """Send ``data`` over and over without reading until the gateway stops taking it."""
    sock.setblocking(False)
    sent = 0
    # Blocked, or (past stream_idle_timeout) dropped while still sending.
    with contextlib.suppress(BlockingIOError, ConnectionResetError, BrokenPipeError):
        while sent < most:
            # Gone quiet for a moment: the kernel buffers between us are full.
            if not select.select([], [sock], [], 0.5)[1]:
                break
            sent += sock.send(data)
    sock.setblocking(True)
    return sent


def test_a_pipelining_client_that_never_reads_costs_a_bounded_buffer() -> None:
    app = GatewayApp(config(write_buffer_bytes="16KiB", stream_idle_timeout=30))
    with serving(app) as server, connect(server) as sock:
        burst = b"GET /openapi.json HTTP/1.1\r\nhost: x\r\n\r\n" * 1000
        sent = send_until_blocked(sock, burst, most=256 * 1024 * 1024)
        [conn] = protocols(server)
        assert server.loop is not None

        async def inspect() -> tuple[int, int, int, bool]:
            transport = conn._transport
            assert transport is not None
            held = len(conn._unparsed or b"")
            return transport.get_write_buffer_size(), len(conn._queue), held, conn._reading

        buffered, queued, held, reading = asyncio.run_coroutine_threadsafe(
            inspect(), server.loop
        ).result(5)
    assert sent < 256 * 1024 * 1024  # the gateway stopped reading
    answer = len(app._openapi) + 200
    assert buffered <= 16 * 1024 + answer  # the high-water mark, and the answer that crossed it
    assert queued <= 4096 // 40 + 1  # what one piece of the read can hold
    assert held <= 256 * 1024  # at most one read held back, unparsed
    assert not reading


class EndlessStream:
    """A streamed answer that never ends, counting what it gave and whether it was closed."""

    def __init__(self) -> None:
        self.given = 0
        self.closed = threading.Event()

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[bytes]:
        while True:
            await asyncio.sleep(0)
            self.given += 65536
            yield b"data: " + b"x" * 65528 + b"\n\n"

    async def aclose(self) -> None:
        self.closed.set()


class StreamingApp(GatewayApp):
    """The gateway app, with ``/stream`` answered by an endless stream."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        super().__init__(config)
        self.stream = EndlessStream()

    async def serve(
        self, method: str, path: str, headers: Mapping[str, str], body: bytes
    ) -> Answer:
        if path != "/stream":
            return await super().serve(method, path, headers, body)
        return Answer(
            200, {"content-type": "text/event-stream"}, stream=cast(StreamReply, self.stream)
        )


def test_a_stream_reader_that_takes_nothing_is_dropped_and_the_stream_closed() -> None:
    app = StreamingApp(config(write_buffer_bytes="16KiB", stream_idle_timeout=0.3))
    with serving(app) as server, connect(server) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        started = time.monotonic()
        sock.sendall(b"GET /stream HTTP/1.1\r\nhost: x\r\n\r\n")
        assert app.stream.closed.wait(10), "the stream outlived a reader that took nothing"
        took = time.monotonic() - started
        assert not protocols(server)
    assert took >= 0.3
    # What it produced fits the socket buffers and the write buffer: it was not read on.
    assert app.stream.given < 16 * 1024 * 1024


# --- what every client is owed: answers before the close, HEAD, an early 413 ----------------


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /health/live HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n" + LIVE,
        b"GET /health/live HTTP/1.0\r\n\r\n" + LIVE,
        b"GET /health/live HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\nnot http",
    ],
    ids=["connection close", "http/1.0", "close then garbage"],
)
def test_a_final_request_is_answered_then_the_connection_ends(
    gateway: GatewayServer, request_bytes: bytes
) -> None:
    with connect(gateway) as sock:
        sock.sendall(request_bytes)
        received = read_until_closed(sock)
    assert received.count(b"HTTP/1.1 ") == 1
    assert received.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"connection: close\r\n" in received
    assert received.endswith(LIVE_BODY)


def test_http_1_0_with_a_chunked_body_is_answered_then_closed(gateway: GatewayServer) -> None:
    request = (
        b"GET /health/live HTTP/1.0\r\nconnection: keep-alive\r\n"
        b"transfer-encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n"
    )
    with connect(gateway) as sock:
        sock.sendall(request)
        received = read_until_closed(sock)
    assert received.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"connection: close\r\n" in received


def test_http_1_0_keep_alive_without_a_chunked_body_stays_open(gateway: GatewayServer) -> None:
    with connect(gateway) as sock:
        for _ in range(2):
            sock.sendall(b"GET /health/live HTTP/1.0\r\nconnection: keep-alive\r\n\r\n")
            head, body = read_answer(sock)
            assert body == LIVE_BODY
            assert b"connection: close" not in head


@pytest.mark.parametrize("path", ["/health/live", "/openapi.json", "/health/ready"])
def test_head_is_served_on_every_get_route(gateway: GatewayServer, path: str) -> None:
    with connect(gateway) as sock:
        sock.sendall(b"GET %b HTTP/1.1\r\nhost: x\r\n\r\n" % path.encode())
        got_head, got_body = read_answer(sock)
        sock.sendall(b"HEAD %b HTTP/1.1\r\nhost: x\r\n\r\n" % path.encode())
        received = b""
        while not received.endswith(b"\r\n\r\n"):
            received += sock.recv(65536)
        sock.sendall(LIVE)  # the head had no body: the next answer follows it directly
        assert read_answer(sock)[1] == LIVE_BODY
    assert received.split(b"\r\n", 1)[0] == got_head.split(b"\r\n", 1)[0]
    assert b"content-length: %d\r\n" % len(got_body) in received


def test_a_method_not_allowed_lists_head_beside_get(gateway: GatewayServer) -> None:
    with connect(gateway) as sock:
        sock.sendall(b"POST /health/live HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n")
        head, _ = read_answer(sock)
    assert head.startswith(b"HTTP/1.1 405 ")
    assert b"allow: GET, HEAD\r\n" in head


def test_expect_continue_with_an_oversize_length_gets_413_at_once(gateway: GatewayServer) -> None:
    with connect(gateway) as sock:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: 1000000\r\n"
            b"expect: 100-continue\r\n\r\n"
        )
        assert readable(sock, 5), "no answer without the body"
        head, body = read_answer(sock)
        sock.sendall(b"x" * 65536)  # a client that sends anyway is read and dropped, not reset
        rest = read_until_closed(sock)
    assert head.startswith(b"HTTP/1.1 413 ")
    assert head.endswith(b"\r\nconnection: close")
    assert b"100 Continue" not in head
    assert b"request_too_large" in body
    assert rest == b""
