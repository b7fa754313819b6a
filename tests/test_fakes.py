"""The fake upstream itself: real framing on a real socket, and the turns its exchanges take.

The engine tests lean on two promises of ``tests.fakes``: their calls reach it
through the production clients (whole answers through the wire client, streams
and probes through httpx), and an exchange completes within the loop turns
``finish`` gives between steps of the fake clock. Both are held here, and so
is the socket server every raw fake stands on (``SocketServer``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from typing import Any

import httpx
import pytest

from overdrive import UpstreamUnavailableError
from overdrive.testing import FakeClock
from tests.fakes import (
    IO_TURNS,
    FakeServer,
    FakeUpstream,
    SocketServer,
    chat_response,
    engine,
    finish,
    hang_up,
    read_request,
    refusing_url,
)
from tests.stream_upstream import StreamUpstream
from tests.upstream.hostile_upstream import HostileUpstream
from tests.upstream.test_wire import RawServer

HELLO = [{"role": "user", "content": "hello"}]
EVENTS = b'data: {"choices": [{"delta": {"content": "w"}}]}\n\n' * 3 + b"data: [DONE]\n\n"


class Events(httpx.AsyncByteStream):
    """A body made as a stream, so the fake sends it chunked."""

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for line in EVENTS.split(b"\n\n")[:-1]:
            yield line + b"\n\n"


async def turns(work: Awaitable[Any]) -> int:
    """Loop turns until ``work`` is done (no fake time passes)."""
    task = asyncio.ensure_future(work)
    count = 0
    while not task.done():
        await asyncio.sleep(0)
        count += 1
    task.result()
    return count


async def test_whole_calls_go_through_the_wire_client_and_streams_through_httpx(
    clock: FakeClock,
) -> None:
    async with FakeUpstream(clock) as fake, engine(fake, clock) as od:
        await od.chat(model="m", messages=HELLO)
        await od.embed(["a"], model="e")
        fake.script = [lambda request: httpx.Response(200, content=EVENTS)]
        chunks = [c async for c in od.stream_chat(model="m", messages=HELLO)]
    assert len(chunks) == 3
    agents = [request.headers["user-agent"] for request in fake.requests]
    assert agents[:2] == ["overdrive", "overdrive"]  # the lean wire client's
    assert agents[2].startswith("python-httpx/")


@pytest.mark.parametrize("stream", [False, True])
async def test_an_exchange_fits_in_the_turns_finish_gives_it(
    clock: FakeClock, stream: bool
) -> None:
    async def chat(content: str) -> None:
        ask = [{"role": "user", "content": content}]
        if stream:
            assert [c async for c in od.stream_chat(model="m", messages=ask)]
        else:
            await od.chat(model="m", messages=ask)

    answer = (lambda r: httpx.Response(200, stream=Events())) if stream else None
    async with FakeUpstream(clock) as fake, engine(fake, clock) as od:
        fake.script = [answer, answer] if answer is not None else []
        fresh, reused = await turns(chat("a")), await turns(chat("b"))
    assert fake.connections == 1
    assert fresh <= IO_TURNS  # the whole call, the engine's part included
    assert reused <= fresh


async def test_a_probe_fits_in_the_turns_finish_gives_it(clock: FakeClock) -> None:
    server = FakeServer(lambda request: httpx.Response(200))
    async with server, engine(server, clock) as od:
        (upstream,) = od.upstreams()
        assert await turns(upstream.probe("/models", 5.0)) <= IO_TURNS
    assert [r.method for r in server.requests] == ["GET"]


async def test_content_goes_with_its_length_and_a_stream_chunked() -> None:
    answers = iter([httpx.Response(200, content=EVENTS), httpx.Response(200, stream=Events())])
    async with FakeServer(lambda request: next(answers)) as server, httpx.AsyncClient() as http:
        whole = await http.get(server.url)
        async with http.stream("GET", server.url) as streamed:
            parts = [part async for part in streamed.aiter_raw()]
    assert whole.headers["content-length"] == str(len(EVENTS))
    assert whole.content == EVENTS
    assert streamed.headers["transfer-encoding"] == "chunked"
    assert b"".join(parts) == EVENTS


async def test_a_hang_up_ends_the_connection_unanswered(clock: FakeClock) -> None:
    async with FakeUpstream(clock, script=[hang_up] * 4) as fake, engine(fake, clock) as od:
        with pytest.raises(UpstreamUnavailableError, match="RemoteProtocolError"):
            await finish(clock, od.chat(model="m", messages=HELLO))
    assert len(fake.calls) == 4  # one try and three retries, each on a fresh connection
    assert fake.connections == 4


async def test_a_hang_up_on_a_kept_alive_connection_is_sent_again_on_a_new_one(
    clock: FakeClock,
) -> None:
    def ok(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=chat_response("m"))

    async with FakeUpstream(clock, script=[ok, hang_up]) as fake, engine(fake, clock) as od:
        await od.chat(model="m", messages=HELLO)
        await od.chat(model="m", messages=[{"role": "user", "content": "again"}])
    assert len(fake.calls) == 3  # the second call twice: hung up on, then answered
    assert fake.connections == 2
    assert od.metrics.value("overdrive_retries_total") == 0  # the wire client's own resend


async def test_a_refusing_port_refuses(clock: FakeClock) -> None:
    with refusing_url() as url:
        async with engine(url, clock) as od:
            with pytest.raises(UpstreamUnavailableError, match="ConnectError"):
                await finish(clock, od.chat(model="m", messages=HELLO))


async def test_a_client_that_leaves_cancels_the_work_on_its_request() -> None:
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def slow(request: httpx.Request) -> httpx.Response:
        started.set()
        try:
            await asyncio.Event().wait()  # until the connection goes
        except asyncio.CancelledError:
            cancelled.set()
            raise
        raise AssertionError("never answered")

    async with FakeServer(slow) as server, httpx.AsyncClient() as http:
        request = asyncio.ensure_future(http.get(server.url))
        await started.wait()
        request.cancel()
        await server.settled()
    assert cancelled.is_set()


async def test_a_failing_handler_fails_the_test_when_the_server_closes() -> None:
    def broken(request: httpx.Request) -> httpx.Response:
        raise KeyError("no such answer")

    server = FakeServer(broken)

    async def ask_once() -> None:
        async with server, httpx.AsyncClient() as http:
            with pytest.raises(httpx.RemoteProtocolError):  # closed unanswered meanwhile
                await http.get(server.url)

    with pytest.raises(KeyError, match="no such answer"):
        await ask_once()
    assert len(server.errors) == 1


# --- the socket server under every raw fake ------------------------------------------------


async def test_every_raw_fake_stands_on_the_one_socket_server() -> None:
    for fake in (FakeServer, StreamUpstream, HostileUpstream, RawServer):
        assert issubclass(fake, SocketServer)


async def test_a_connection_closes_once_served_after_what_was_written() -> None:
    async def once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await read_request(reader)
        assert request is not None
        head, body = request
        writer.write(b"%d %s;" % (len(head), body) * 10_000)  # more than one send takes

    async with SocketServer(once) as server:
        assert server.url == f"http://127.0.0.1:{server.port}/v1"
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"POST /v1/x HTTP/1.1\r\ncontent-length: 2\r\n\r\nhi")
        answer = await reader.read()  # to the end: the server closed after its bytes
        writer.close()
        await server.wait_all_closed()
    assert answer == b"42 hi;" * 10_000
    assert (server.connections, server.open_sockets) == (1, 0)


async def test_a_client_that_leaves_ends_its_connection_quietly() -> None:
    loop = asyncio.get_running_loop()
    seen: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _, context: seen.append(context))
    asked = asyncio.Event()

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        asked.set()
        await read_request(reader)  # the body never comes: IncompleteReadError

    try:
        async with SocketServer(answer) as server:
            _, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(b"POST / HTTP/1.1\r\ncontent-length: 9\r\n\r\nhalf")
            await asked.wait()
            writer.close()
            await server.wait_all_closed()
    finally:
        loop.set_exception_handler(previous)
    assert seen == []  # nothing for the loop's handler: no "exception never retrieved"


async def test_closing_the_server_cancels_and_closes_the_connections_still_served() -> None:
    cancelled: list[bool] = []
    waiting = asyncio.Event()

    async def forever(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            writer.write(b"hello")
            waiting.set()
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    async with SocketServer(forever) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        await waiting.wait()
        assert server.open_sockets == 1
    assert (cancelled, server.open_sockets) == ([True], 0)
    assert await reader.read() == b"hello"  # then the end: the server closed it
    writer.close()


async def test_a_request_is_read_as_sent() -> None:
    reader = asyncio.StreamReader()
    post = b"POST /x HTTP/1.1\r\nContent-Length: 3\r\n\r\n"
    reader.feed_data(post + b"abc" + b"GET / HTTP/1.1\r\n\r\n")
    reader.feed_eof()
    assert await read_request(reader) == (post, b"abc")
    assert await read_request(reader) == (b"GET / HTTP/1.1\r\n\r\n", b"")
    assert await read_request(reader) is None
