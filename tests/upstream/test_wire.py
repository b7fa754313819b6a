"""The lean HTTP/1.1 client against real servers: the sim, and raw asyncio servers."""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme

from overdrive import Overdrive, UpstreamProtocolError
from overdrive.sim import SimConfig, SimServer
from overdrive.upstream._client import AnswerBounds
from overdrive.upstream._wire import Origin, WirePool
from overdrive.upstream._wire_response import WireHeaders
from tests.fakes import SocketServer, read_request

CHAT = b'{"model": "m", "messages": [{"role": "user", "content": "hi"}]}'
OK_BODY = b'{"ok": true}'

# How a raw server answers request number ``index`` (0-based) on a connection;
# False closes the connection after it.
Respond = Callable[[asyncio.StreamWriter, int], Awaitable[bool]]


class RawServer(SocketServer):
    """A bare HTTP/1.1 server on loopback: reads each request whole, answers by script."""

    def __init__(self, respond: Respond, tls: ssl.SSLContext | None = None) -> None:
        super().__init__(tls=tls)
        self._respond = respond
        self.requests = 0

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        index = 0
        while await read_request(reader) is not None:
            self.requests += 1
            if not await self._respond(writer, index):
                return
            index += 1


def answer(body: bytes = OK_BODY, *extra: bytes) -> bytes:
    head = [b"HTTP/1.1 200 OK", b"content-length: %d" % len(body), *extra]
    return b"\r\n".join(head) + b"\r\n\r\n" + body


async def keep_answering(writer: asyncio.StreamWriter, index: int) -> bool:
    writer.write(answer())
    return True


def pool_for(url: str, *, limit: int = 8, timeout: float = 5.0, **options: Any) -> WirePool:
    origin = Origin.parse(url)
    assert origin is not None
    return WirePool(origin, limit=limit, timeout=timeout, **options)


@pytest.fixture(scope="module")
def sim() -> Iterator[SimServer]:
    with SimServer(SimConfig(ttft_s=0.0, per_token_s=0.0, api_key="sim-key")) as server:
        yield server


@pytest.fixture
async def sim_pool(sim: SimServer) -> AsyncIterator[WirePool]:
    pool = pool_for(sim.base_url, headers={"authorization": "Bearer sim-key"})
    yield pool
    await pool.aclose()


# --- against the sim ---------------------------------------------------------------------


async def test_answers_from_the_sim_on_one_kept_alive_connection(sim_pool: WirePool) -> None:
    for _ in range(20):
        response = await sim_pool.post("/chat/completions", CHAT)
        assert response.status_code == 200
        assert json.loads(response.content)["object"] == "chat.completion"
    assert (sim_pool.open, sim_pool.idle) == (1, 1)


async def test_the_sims_status_and_headers_come_through(sim: SimServer) -> None:
    pool = pool_for(sim.base_url)  # no key: the sim refuses
    response = await pool.post("/chat/completions", CHAT)
    assert response.status_code == 401
    assert response.headers["Content-Type"].startswith("application/json")
    assert "CONTENT-LENGTH" in response.headers
    assert await response.aread() == response.content
    await pool.aclose()


async def test_200_concurrent_requests_share_a_bounded_pool(sim: SimServer) -> None:
    pool = pool_for(sim.base_url, limit=8, headers={"authorization": "Bearer sim-key"})
    most = 0

    async def one() -> int:
        nonlocal most
        response = await pool.post("/chat/completions", CHAT)
        most = max(most, pool.open)
        return response.status_code

    statuses = await asyncio.gather(*(one() for _ in range(200)))
    assert statuses == [200] * 200
    assert most <= 8
    assert pool.open <= 8
    await pool.aclose()


async def test_the_engine_sends_through_the_lean_client(sim: SimServer) -> None:
    upstream = {"name": "sim", "base_url": sim.base_url, "models": ["m"], "api_key_env": "SIM_K"}
    config = {"upstreams": [upstream], "routing": {"health": {"probes": False}}}
    with pytest.MonkeyPatch.context() as env:
        env.setenv("SIM_K", "sim-key")
        async with Overdrive.from_config(config) as od:
            wire = od._upstreams[0]._wire
            assert wire is not None
            reply = await od.chat(model="m", messages=[{"role": "user", "content": "hi"}])
            assert reply["object"] == "chat.completion"
            assert wire.open == 1


# --- framing -----------------------------------------------------------------------------


async def test_a_chunked_answer_is_read_whole() -> None:
    async def chunked(writer: asyncio.StreamWriter, index: int) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        for part in (b'{"ok": ', b"true}"):
            writer.write(b"%x\r\n%s\r\n" % (len(part), part))
            await writer.drain()
        writer.write(b"0\r\n\r\n")
        return True

    async with RawServer(chunked) as server:
        pool = pool_for(server.url)
        for _ in range(3):
            assert (await pool.post("/chat/completions", CHAT)).content == OK_BODY
        await pool.aclose()
    assert server.connections == 1


async def test_an_http_1_0_answer_without_length_runs_to_the_close() -> None:
    async def old(writer: asyncio.StreamWriter, index: int) -> bool:
        writer.write(b"HTTP/1.0 200 OK\r\ncontent-type: application/json\r\n\r\n" + OK_BODY)
        return False

    async with RawServer(old) as server:
        pool = pool_for(server.url)
        for _ in range(2):
            response = await pool.post("/chat/completions", CHAT)
            assert (response.content, response.http_version) == (OK_BODY, "1.0")
        await pool.aclose()
    assert server.connections == 2


async def test_connection_close_is_honoured() -> None:
    async def closing(writer: asyncio.StreamWriter, index: int) -> bool:
        writer.write(answer(OK_BODY, b"connection: close"))
        return False

    async with RawServer(closing) as server:
        pool = pool_for(server.url)
        for _ in range(3):
            assert (await pool.post("/chat/completions", CHAT)).content == OK_BODY
        assert pool.open == 0
        await pool.aclose()
    assert server.connections == 3


async def test_the_request_carries_host_path_and_one_body() -> None:
    seen: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await reader.readuntil(b"\r\n\r\n") + await reader.readexactly(len(CHAT)))
        writer.write(answer())

    async with SocketServer(serve) as server:
        port = server.port
        pool = pool_for(f"{server.url}/", headers={"authorization": "Bearer k"})
        await pool.post("/chat/completions", CHAT)
        await pool.aclose()
    head, _, body = seen[0].partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"POST /v1/chat/completions HTTP/1.1"
    assert {b"host: 127.0.0.1:%d" % port, b"accept-encoding: identity"} <= set(lines)
    assert {b"authorization: Bearer k", b"content-length: %d" % len(CHAT)} <= set(lines)
    assert body == CHAT


# --- servers that close ------------------------------------------------------------------


async def test_an_idle_connection_the_server_closed_is_not_used() -> None:
    async def one_per_connection(writer: asyncio.StreamWriter, index: int) -> bool:
        writer.write(answer())  # says nothing of closing, then closes
        return False

    async with RawServer(one_per_connection) as server:
        pool = pool_for(server.url)
        await pool.post("/chat/completions", CHAT)
        await asyncio.sleep(0.05)  # the close reaches the client while idle
        assert (pool.open, pool.idle) == (0, 0)
        assert (await pool.post("/chat/completions", CHAT)).content == OK_BODY
        await pool.aclose()
    assert (server.connections, server.requests) == (2, 2)


async def test_a_request_on_a_connection_closed_unanswered_goes_again_once() -> None:
    async def first_only(writer: asyncio.StreamWriter, index: int) -> bool:
        if index == 0:
            writer.write(answer())
            return True
        return False  # reads the second request, then closes without a byte

    async with RawServer(first_only) as server:
        pool = pool_for(server.url)
        await pool.post("/chat/completions", CHAT)
        assert (await pool.post("/chat/completions", CHAT)).content == OK_BODY
        await pool.aclose()
    assert (server.connections, server.requests) == (2, 3)


async def test_a_new_connection_closed_unanswered_is_an_error() -> None:
    async def never(writer: asyncio.StreamWriter, index: int) -> bool:
        return False

    async with RawServer(never) as server:
        pool = pool_for(server.url)
        with pytest.raises(httpx.RemoteProtocolError, match="without answering"):
            await pool.post("/chat/completions", CHAT)
        assert pool.open == 0
        await pool.aclose()
    assert server.requests == 1  # not sent again: nothing says the server did not act


async def test_a_close_mid_answer_is_a_protocol_error() -> None:
    async def half(writer: asyncio.StreamWriter, index: int) -> bool:
        writer.write(answer()[:-4])
        return False

    async with RawServer(half) as server:
        pool = pool_for(server.url)
        with pytest.raises(httpx.RemoteProtocolError, match="mid-answer"):
            await pool.post("/chat/completions", CHAT)
        assert pool.open == 0
        await pool.aclose()


async def test_garbage_is_a_protocol_error() -> None:
    async def garbage(writer: asyncio.StreamWriter, index: int) -> bool:
        writer.write(b"NOT HTTP AT ALL\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(1)
        return False

    async with RawServer(garbage) as server:
        pool = pool_for(server.url)
        with pytest.raises(httpx.RemoteProtocolError, match="malformed"):
            await pool.post("/chat/completions", CHAT)
        assert pool.open == 0
        await pool.aclose()


async def test_the_dispatcher_retries_an_answer_cut_short() -> None:
    cut = False

    async def cut_first(writer: asyncio.StreamWriter, index: int) -> bool:
        nonlocal cut
        if not cut:
            cut = True
            writer.write(answer(b'{"cut": "short"}')[:-4])
            return False
        writer.write(answer(json.dumps(_chat_answer()).encode()))
        return True

    async with RawServer(cut_first) as server:
        config = {
            "upstreams": [{"name": "raw", "base_url": server.url, "models": ["m"]}],
            "retry": {"base": "1ms", "cap": "5ms"},
            "routing": {"health": {"probes": False}},
        }
        async with Overdrive.from_config(config) as od:
            reply = await od.chat(model="m", messages=[{"role": "user", "content": "hi"}])
            assert reply["choices"][0]["message"]["content"] == "hello"
            assert od.metrics.value("overdrive_retries_total", upstream="raw") == 1
    assert server.requests == 2


def _chat_answer() -> dict[str, Any]:
    return {
        "id": "c",
        "object": "chat.completion",
        "created": 0,
        "model": "m",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "hello"},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }


# --- failures to connect and to answer in time -------------------------------------------


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_a_refused_connection_is_a_connect_error() -> None:
    pool = pool_for(f"http://127.0.0.1:{_closed_port()}/v1")
    with pytest.raises(httpx.ConnectError, match="cannot connect"):
        await pool.post("/chat/completions", CHAT)
    assert pool.open == 0
    await pool.aclose()


async def test_a_slow_answer_is_a_read_timeout_and_the_connection_goes() -> None:
    async def slow(writer: asyncio.StreamWriter, index: int) -> bool:
        await asyncio.sleep(10)
        return False

    async with RawServer(slow) as server:
        pool = pool_for(server.url, timeout=0.1)
        with pytest.raises(httpx.ReadTimeout):
            await pool.post("/chat/completions", CHAT)
        assert pool.open == 0
        await pool.aclose()


async def test_each_request_on_a_kept_alive_connection_has_its_own_deadline() -> None:
    # The first request's timer is still armed when the second goes out on the
    # same connection: it must re-arm for the second's deadline, not fire early.
    async def slower_each_time(writer: asyncio.StreamWriter, index: int) -> bool:
        if index == 2:
            await asyncio.Event().wait()  # never answers: the server task is cancelled at the end
        await asyncio.sleep(0.15 if index == 0 else 0.1)
        writer.write(answer())
        return True

    async with RawServer(slower_each_time) as server:
        pool = pool_for(server.url, limit=1, timeout=0.2)
        first = await pool.post("/chat/completions", CHAT)
        second = await pool.post("/chat/completions", CHAT)  # ends after the first's deadline
        assert (first.status_code, second.status_code) == (200, 200)
        assert server.connections == 1
        loop = asyncio.get_running_loop()
        sent = loop.time()
        with pytest.raises(httpx.ReadTimeout):
            await pool.post("/chat/completions", CHAT)
        assert loop.time() - sent >= 0.2
        await pool.aclose()


async def test_a_cancelled_request_frees_its_connection() -> None:
    async def slow(writer: asyncio.StreamWriter, index: int) -> bool:
        await asyncio.sleep(10)
        return False

    async with RawServer(slow) as server:
        pool = pool_for(server.url, limit=1)
        sending = asyncio.ensure_future(pool.post("/chat/completions", CHAT))
        queued = asyncio.ensure_future(pool.post("/chat/completions", CHAT))
        await asyncio.sleep(0.05)
        assert pool.open == 1
        sending.cancel()
        queued.cancel()
        await asyncio.gather(sending, queued, return_exceptions=True)
        assert pool.open == 0
        await pool.aclose()


async def test_waiting_for_a_connection_times_out() -> None:
    async def slowish(writer: asyncio.StreamWriter, index: int) -> bool:
        await asyncio.sleep(0.15)
        writer.write(answer())
        return True

    async with RawServer(slowish) as server:
        pool = pool_for(server.url, limit=1, timeout=0.2)
        # The second waits 0.15 s for the connection, then holds it 0.15 s:
        # the third, waiting since the start, gives up after 0.2 s.
        first, second = (asyncio.ensure_future(pool.post("/x", CHAT)) for _ in range(2))
        await asyncio.sleep(0.01)
        with pytest.raises(httpx.PoolTimeout):
            await pool.post("/x", CHAT)
        assert [r.status_code for r in await asyncio.gather(first, second)] == [200, 200]
        assert (pool.open, server.connections) == (1, 1)
        await pool.aclose()


# --- TLS ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> tuple[ssl.SSLContext, Path]:
    """A server context for 127.0.0.1 and the PEM file of the authority that signed it."""
    authority = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1").configure_cert(server)
    pem = tmp_path_factory.mktemp("tls") / "ca.pem"
    authority.cert_pem.write_to_path(str(pem))
    return server, pem


async def test_https_through_tls(certificates: tuple[ssl.SSLContext, Path]) -> None:
    server_context, authority = certificates
    client = ssl.create_default_context(cafile=str(authority))
    async with RawServer(keep_answering, tls=server_context) as server:
        pool = pool_for(server.url, ssl_context=client)
        for _ in range(3):
            assert (await pool.post("/chat/completions", CHAT)).content == OK_BODY
        await pool.aclose()
    assert server.connections == 1


async def test_https_trusts_what_httpx_trusts(
    certificates: tuple[ssl.SSLContext, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    server_context, authority = certificates
    async with RawServer(keep_answering, tls=server_context) as server:
        untrusted = pool_for(server.url)
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            await untrusted.post("/chat/completions", CHAT)
        await untrusted.aclose()
        monkeypatch.setenv("SSL_CERT_FILE", str(authority))  # as httpx reads it
        pool = pool_for(server.url)
        assert (await pool.post("/chat/completions", CHAT)).content == OK_BODY
        await pool.aclose()


# --- when httpx sends instead ------------------------------------------------------------


def test_an_origin_is_computed_once_from_the_base_url() -> None:
    origin = Origin.parse("https://api.example.com/v1")
    assert origin == Origin("api.example.com", 443, True, b"api.example.com", b"/v1")
    v6 = Origin.parse("http://[::1]:8080")
    assert v6 == Origin("::1", 8080, False, b"[::1]:8080", b"")


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1/v1?api-version=1", "http://user:pw@127.0.0.1/v1"]
)
def test_base_urls_the_lean_client_leaves_to_httpx(url: str) -> None:
    assert Origin.parse(url) is None


def test_headers_are_looked_up_in_any_case() -> None:
    headers = WireHeaders({"x-ratelimit-remaining-requests": "0"})
    assert headers.get("X-RateLimit-Remaining-Requests") == "0"
    assert headers.get("retry-after") is None
    assert dict(headers) == {"x-ratelimit-remaining-requests": "0"}


async def test_repeated_headers_are_joined() -> None:
    async def twice(writer: asyncio.StreamWriter, index: int) -> bool:
        writer.write(answer(OK_BODY, b"X-Tag: a", b"x-tag: b"))
        return True

    async with RawServer(twice) as server:
        pool = pool_for(server.url)
        assert (await pool.post("/chat/completions", CHAT)).headers["x-tag"] == "a, b"
        await pool.aclose()


async def test_a_handshake_that_never_ends_is_a_connect_timeout() -> None:
    async def mute(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # takes the ClientHello, never answers it

    async with SocketServer(mute) as server:  # plain TCP, asked for TLS
        pool = pool_for(f"https://127.0.0.1:{server.port}/v1", timeout=5.0, connect_timeout=0.1)
        with pytest.raises(httpx.ConnectTimeout):
            await pool.post("/chat/completions", CHAT)
        assert pool.open == 0
        await pool.aclose()


async def test_a_connection_closed_before_the_request_went_out_goes_again() -> None:
    async with RawServer(keep_answering) as server:
        pool = pool_for(server.url)
        await pool.post("/chat/completions", CHAT)
        assert pool.idle == 1
        # Handed out and closed before the write: fails at once, not at the timeout.
        connection = pool._pop_idle()
        assert connection is not None
        connection.close()
        await asyncio.sleep(0.01)
        with pytest.raises(httpx.RemoteProtocolError, match="before answering"):
            await connection.send(b"", 60.0)
        assert (pool.open, pool.idle) == (0, 0)
        assert (await pool.post("/chat/completions", CHAT)).content == OK_BODY
        await pool.aclose()


# --- framing anomalies: the connection is never used again --------------------------------

PARTIAL = b'HTTP/1.1 200 OK\r\ncontent-length: 40\r\n\r\n{"theirs": '


@pytest.fixture
async def loop_errors() -> AsyncIterator[list[dict[str, Any]]]:
    """What reaches the loop's exception handler ("Fatal error: ..." among it) during a test."""
    loop = asyncio.get_running_loop()
    seen: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _, context: seen.append(context))
    yield seen
    loop.set_exception_handler(previous)


def answers(first: bytes, then: bytes = b"") -> Respond:
    """The first request of all gets ``first`` (in one write); the rest ``then`` or their number."""
    count = 0

    async def respond(writer: asyncio.StreamWriter, index: int) -> bool:
        nonlocal count
        writer.write(first if count == 0 else answer(then or b'{"n": %d}' % count))
        count += 1
        return True

    return respond


@pytest.mark.parametrize(
    "behind",
    [
        pytest.param(answer(b'{"theirs": 1}'), id="a whole answer"),
        pytest.param(PARTIAL, id="a partial answer"),
        pytest.param(b"xyz", id="garbage"),
        pytest.param(b"ok-and-more", id="a body longer than announced"),
    ],
)
async def test_bytes_behind_the_answer_in_one_read_fail_it_and_its_connection(
    behind: bytes, loop_errors: list[dict[str, Any]]
) -> None:
    async with RawServer(answers(answer(b"ok") + behind)) as server:
        pool = pool_for(server.url)
        with pytest.raises(httpx.RemoteProtocolError, match="after the complete answer"):
            await pool.post("/chat/completions", CHAT)
        assert (pool.open, pool.idle) == (0, 0)
        # The next caller's answer is its own, from a connection of its own.
        assert (await pool.post("/chat/completions", CHAT)).content == b'{"n": 1}'
        await pool.aclose()
    assert server.connections == 2
    assert loop_errors == []


async def test_a_stray_line_break_behind_the_answer_is_harmless() -> None:
    # llhttp skips CR/LF between messages: no byte of an answer can hide in it.
    async with RawServer(answers(answer(OK_BODY) + b"\r\n")) as server:
        pool = pool_for(server.url)
        for _ in range(2):
            assert (await pool.post("/chat/completions", CHAT)).status_code == 200
        await pool.aclose()
    assert server.connections == 1


async def test_bytes_after_connection_close_fail_the_answer() -> None:
    closing = answer(OK_BODY, b"connection: close") + answer(b'{"theirs": 1}')
    async with RawServer(answers(closing)) as server:
        pool = pool_for(server.url)
        with pytest.raises(httpx.RemoteProtocolError, match="Connection: close"):
            await pool.post("/chat/completions", CHAT)
        assert pool.open == 0
        await pool.aclose()


async def test_bytes_sent_to_an_idle_connection_close_it() -> None:
    speak = asyncio.Event()
    closed = asyncio.Event()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(answer())
        await speak.wait()
        writer.write(PARTIAL)  # nobody asked
        await reader.read()  # until the client closes
        closed.set()

    async with SocketServer(serve) as server:
        pool = pool_for(server.url)
        await pool.post("/chat/completions", CHAT)
        assert pool.idle == 1
        speak.set()
        await asyncio.wait_for(closed.wait(), 5.0)
        assert (pool.open, pool.idle) == (0, 0)
        await pool.aclose()


async def test_an_answer_split_over_reads_is_still_one_answer() -> None:
    async def trickle(writer: asyncio.StreamWriter, index: int) -> bool:
        whole = answer(b'{"n": %d}' % index)
        for at in range(0, len(whole), 7):
            writer.write(whole[at : at + 7])
            await writer.drain()
        return True

    async with RawServer(trickle) as server:
        pool = pool_for(server.url)
        for index in range(3):
            assert (await pool.post("/chat/completions", CHAT)).content == b'{"n": %d}' % index
        await pool.aclose()
    assert server.connections == 1


# --- interim and unasked statuses --------------------------------------------------------

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


async def test_a_100_then_the_answer_is_the_answer() -> None:
    async def interim(writer: asyncio.StreamWriter, index: int) -> bool:
        writer.write(CONTINUE)
        await writer.drain()
        writer.write(b"HTTP/1.1 103 Early Hints\r\nlink: </x>\r\n\r\n" + answer())
        return True

    async with RawServer(interim) as server:
        pool = pool_for(server.url)
        for _ in range(2):
            response = await pool.post("/chat/completions", CHAT)
            assert (response.status_code, response.content) == (200, OK_BODY)
            assert "link" not in response.headers
        await pool.aclose()
    assert server.connections == 1


async def test_a_100_then_the_close_is_no_answer() -> None:
    async def then_close(writer: asyncio.StreamWriter, index: int) -> bool:
        writer.write(CONTINUE)
        return False

    async with RawServer(then_close) as server:
        pool = pool_for(server.url)
        with pytest.raises(httpx.RemoteProtocolError, match="mid-answer"):
            await pool.post("/chat/completions", CHAT)
        assert pool.open == 0
        await pool.aclose()


@pytest.mark.parametrize(
    "head",
    [
        pytest.param(b"HTTP/1.1 101 Switching Protocols\r\nupgrade: h2c\r\n", id="101 upgrade"),
        pytest.param(b"HTTP/1.1 101 Switching Protocols\r\n", id="101 bare"),
        pytest.param(b"HTTP/1.1 000 Zero\r\ncontent-length: 0\r\n", id="000"),
        pytest.param(b"HTTP/1.1 099 Low\r\ncontent-length: 0\r\n", id="099"),
        pytest.param(b"HTTP/1.1 600 High\r\ncontent-length: 0\r\n", id="600"),
    ],
)
async def test_a_status_never_asked_for_is_a_protocol_error(
    head: bytes, loop_errors: list[dict[str, Any]]
) -> None:
    async with RawServer(answers(head + b"\r\n" + answer(b'{"theirs": 1}'))) as server:
        pool = pool_for(server.url)
        with pytest.raises(httpx.RemoteProtocolError, match="status"):
            await pool.post("/chat/completions", CHAT)
        assert pool.open == 0
        assert (await pool.post("/chat/completions", CHAT)).status_code == 200
        await pool.aclose()
    assert loop_errors == []  # no "Fatal error: protocol.data_received() call failed"


# --- bounds on what an upstream sends back -----------------------------------------------

SMALL = AnswerBounds("tiny", head_bytes=1024, body_bytes=2048)


async def test_a_head_over_the_bound_in_one_read_is_refused_naming_upstream_and_limit() -> None:
    big = answer(OK_BODY, b"x-big: " + b"a" * 2000)
    async with RawServer(answers(big)) as server:
        pool = pool_for(server.url, bounds=SMALL)
        with pytest.raises(UpstreamProtocolError, match="max_response_head_bytes") as caught:
            await pool.post("/chat/completions", CHAT)
        assert caught.value.upstream == "tiny"
        assert "1024 bytes" in str(caught.value)
        assert pool.open == 0
        await pool.aclose()


async def test_an_endless_header_is_cut_off_at_the_bound() -> None:
    # httptools gathers a header value whole before calling back: the bound
    # must hold across reads, or this value would grow until the timeout.
    async def endless(writer: asyncio.StreamWriter, index: int) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nx-endless: ")
        while True:  # until the client closes: drain() raises then
            writer.write(b"a" * 512)
            await writer.drain()

    async with RawServer(endless) as server:
        pool = pool_for(server.url, timeout=60.0, bounds=SMALL)
        with pytest.raises(UpstreamProtocolError, match="max_response_head_bytes"):
            await pool.post("/chat/completions", CHAT)
        assert pool.open == 0
        await pool.aclose()


async def test_interim_answers_count_towards_the_head_bound() -> None:
    async def many(writer: asyncio.StreamWriter, index: int) -> bool:
        writer.write(CONTINUE * 100 + answer())
        return True

    async with RawServer(many) as server:
        pool = pool_for(server.url, bounds=SMALL)
        with pytest.raises(UpstreamProtocolError, match="max_response_head_bytes"):
            await pool.post("/chat/completions", CHAT)
        await pool.aclose()


async def test_an_announced_body_over_the_bound_is_refused_before_it_is_read() -> None:
    async def announce(writer: asyncio.StreamWriter, index: int) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 999999\r\n\r\n{")
        await asyncio.Event().wait()  # never sends the rest: the refusal cannot wait for it
        return False

    async with RawServer(announce) as server:
        pool = pool_for(server.url, bounds=SMALL)
        with pytest.raises(UpstreamProtocolError, match=r"announced 999999 bytes, over max_resp"):
            await pool.post("/chat/completions", CHAT)
        assert pool.open == 0
        await pool.aclose()


@pytest.mark.parametrize("framing", ["chunked", "to the close"])
async def test_a_body_growing_over_the_bound_is_refused(framing: str) -> None:
    async def grow(writer: asyncio.StreamWriter, index: int) -> bool:
        if framing == "chunked":
            writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
            writer.write(b"400\r\n" + b"a" * 1024 + b"\r\n" * 1)
            writer.write(b"400\r\n" + b"a" * 1024 + b"\r\n" * 1)
            writer.write(b"400\r\n" + b"a" * 1024 + b"\r\n0\r\n\r\n")
            return True
        writer.write(b"HTTP/1.0 200 OK\r\n\r\n" + b"a" * 3000)
        return False

    async with RawServer(grow) as server:
        pool = pool_for(server.url, bounds=SMALL)
        with pytest.raises(UpstreamProtocolError, match="body is over max_response_bytes"):
            await pool.post("/chat/completions", CHAT)
        assert pool.open == 0
        await pool.aclose()


async def test_an_answer_at_the_bounds_is_taken_and_its_connection_kept() -> None:
    body = b"b" * SMALL.body_bytes
    async with RawServer(answers(answer(body), then=OK_BODY)) as server:
        pool = pool_for(server.url, bounds=SMALL)
        assert (await pool.post("/chat/completions", CHAT)).content == body
        assert (await pool.post("/chat/completions", CHAT)).content == OK_BODY
        await pool.aclose()
    assert server.connections == 1


def test_an_upstream_gives_its_configured_bounds_to_its_lean_client() -> None:
    upstream = {
        "name": "bounded",
        "base_url": "http://127.0.0.1:9/v1",
        "models": ["m"],
        "max_response_head_bytes": "4KB",
        "max_response_bytes": "1MB",
    }
    od = Overdrive.from_config({"upstreams": [upstream]})
    (only,) = od.upstreams()
    assert only.bounds == AnswerBounds("bounded", 4000, 1_000_000)
    assert only._wire is not None
    assert only._wire._bounds is only.bounds
