"""An upstream that misbehaves, met through the whole engine and its production clients.

The fake below the engine is a real socket (``hostile_upstream.py``): whole
calls run the lean wire client, streamed calls httpx. The first request of
each test gets the misbehaviour; every later one a proper answer that
echoes its own prompt. For every misbehaviour:

* no caller ever gets an answer that is not its own (each checks the echo);
* nothing is logged as an error, and nothing reaches the loop's exception
  handler (asyncio's "Fatal error: protocol.data_received() call failed");
* nothing wrong is cached: asking again is its own answer, and not a hit
  when the first ask failed;
* no connection leaks: the pool ends empty and the fake sees every socket closed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import ssl
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme
import uvloop

from overdrive import Overdrive, UpstreamProtocolError
from overdrive._calls import Result, chat_call
from overdrive.coalesce._stream_flight import sse_lines
from overdrive.upstream._httpx_guard import guarded_transport
from overdrive.upstream._upstream import _guarded
from overdrive.upstream._wire import WirePool

from .hostile_upstream import (
    HostileUpstream,
    Reply,
    Request,
    answer,
    chat_body,
    chunked,
    echo,
    sse_answer,
)

INTRUDER = "INTRUDER: an answer to nobody here"
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
SWITCH = b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n"
# The start of an answer that, read as the next caller's, would be someone else's.
PARTIAL = b"HTTP/1.1 200 OK\r\ncontent-length: 900\r\n\r\n" + chat_body(INTRUDER)[:60]
HUGE_HEADER = b"x-huge: " + b"h" * 200_000  # over the default bound, and over h11's
BODY_BOUND = 64 * 1024
OVERSIZE = " ".join(["x" * 1000] * 100)  # about 100 KB of text

Misbehaviour = Callable[[Request], Reply]


def _whole(request: Request) -> bytes:
    return answer(chat_body(echo(request)))


def _streamed(request: Request) -> bytes:
    return sse_answer(echo(request))


WHOLE: dict[str, Misbehaviour] = {
    "extra partial answer": lambda r: Reply(_whole(r) + PARTIAL),
    "extra whole answer": lambda r: Reply(_whole(r) + answer(chat_body(INTRUDER))),
    "100 then close": lambda r: Reply(CONTINUE, then="close"),
    "101": lambda r: Reply(SWITCH + answer(chat_body(INTRUDER))),
    "huge head": lambda r: Reply(answer(chat_body(echo(r)), headers=[HUGE_HEADER])),
    "oversize body": lambda r: Reply(answer(chat_body(f"{echo(r)} {OVERSIZE}"))),
    "truncated chunked": lambda r: Reply(
        chunked(chat_body(echo(r))[:50], content_type=b"application/json", end=False),
        then="close",
    ),
    "reset mid-body": lambda r: Reply(_whole(r)[:-20], then="reset"),
}

STREAMED: dict[str, Misbehaviour] = {
    "extra partial answer": lambda r: Reply(_streamed(r) + PARTIAL),
    "extra whole answer": lambda r: Reply(_streamed(r) + answer(chat_body(INTRUDER))),
    "100 then close": lambda r: Reply(CONTINUE, then="close"),
    "101": lambda r: Reply(SWITCH + sse_answer(INTRUDER)),
    "huge head": lambda r: Reply(sse_answer(echo(r), headers=[HUGE_HEADER])),
    "oversize body": lambda r: Reply(sse_answer(f"{echo(r)} {OVERSIZE}")),
    "truncated chunked": lambda r: Reply(sse_answer(echo(r), end=False), then="close"),
    "reset mid-body": lambda r: Reply(sse_answer(echo(r), end=False), then="reset"),
}

# Over a bound, the call fails without a retry: the same ask brings the same answer back.
REFUSED = {"huge head", "oversize body"}
# Streamed bodies the relay has begun to pass on when the upstream breaks them off.
CUT_SHORT = {"truncated chunked", "reset mid-body"}


def first_gets(misbehaviour: Misbehaviour) -> Callable[[Request], Reply]:
    """The script: the first request of all misbehaves, every later one echoes its prompt."""

    def script(request: Request) -> Reply:
        if request.index == 0:
            return misbehaviour(request)
        return Reply(_streamed(request) if request.json().get("stream") else _whole(request))

    return script


LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop,
    "uvloop": uvloop.new_event_loop,  # what the gateway serves on: its transports differ
}


def run_on(loop: str, scenario: Coroutine[Any, Any, None]) -> list[dict[str, Any]]:
    """Run ``scenario`` on a new loop of that kind; what reached its exception handler.

    asyncio's "Fatal error: protocol.data_received() call failed" is reported
    there, as are callbacks that raised and tasks whose error nobody took.
    """
    seen: list[dict[str, Any]] = []
    with asyncio.Runner(loop_factory=LOOPS[loop]) as runner:
        runner.get_loop().set_exception_handler(lambda _, context: seen.append(context))
        runner.run(scenario)
    return seen


@pytest.fixture
def error_logs(caplog: pytest.LogCaptureFixture) -> Callable[[], list[str]]:
    caplog.set_level(logging.WARNING)
    return lambda: [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


@asynccontextmanager
async def engine(upstream: HostileUpstream) -> AsyncIterator[Overdrive]:
    config = {
        "upstreams": [
            {
                "name": "hostile",
                "base_url": upstream.base_url,
                "models": ["m"],
                "max_response_bytes": BODY_BOUND,
                "timeout": "5s",
            }
        ],
        "retry": {"base": "1ms", "cap": "5ms"},
        "routing": {"health": {"probes": False}},
    }
    async with Overdrive.from_config(config) as od:
        yield od


def wire_of(od: Overdrive) -> WirePool:
    wire = od.upstreams()[0]._wire
    assert wire is not None  # no injected transport: the production client sends
    return wire


# --- whole calls: the lean wire client -----------------------------------------------------


async def ask(od: Overdrive, prompt: str, namespace: str) -> Result:
    call = chat_call({"model": "m", "messages": [{"role": "user", "content": prompt}]})
    return await od.request(dataclasses.replace(call, namespace=namespace))


def said(result: Result) -> str:
    assert result.status == 200
    content: str = json.loads(result.body)["choices"][0]["message"]["content"]
    return content


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize("misbehaviour", WHOLE)
def test_a_whole_call_gets_its_own_answer_or_a_clean_error(
    misbehaviour: str, loop: str, error_logs: Callable[[], list[str]]
) -> None:
    assert run_on(loop, whole_calls(WHOLE[misbehaviour], misbehaviour in REFUSED)) == []
    assert error_logs() == []


async def whole_calls(misbehaviour: Misbehaviour, refused: bool) -> None:
    async with HostileUpstream(first_gets(misbehaviour)) as upstream:
        async with engine(upstream) as od:
            wire = wire_of(od)
            if refused:
                with pytest.raises(UpstreamProtocolError, match="max_response") as refusal:
                    await ask(od, "alpha", "tenant-a")
                assert refusal.value.upstream == "hostile"
            else:  # retried on a connection of its own
                assert said(await ask(od, "alpha", "tenant-a")) == "echo: alpha"
            # The next caller, another tenant, would be the one to read what was left.
            assert said(await ask(od, "beta", "tenant-b")) == "echo: beta"
            assert upstream.requests[1].on_connection == 0  # the misbehaving one was not reused
            prompts = [(f"p{i}", f"tenant-{i % 3}") for i in range(12)]
            results = await asyncio.gather(*(ask(od, *p) for p in prompts))
            assert [said(r) for r in results] == [f"echo: {prompt}" for prompt, _ in prompts]
            again = await ask(od, "alpha", "tenant-a")
            assert said(again) == "echo: alpha"
            if refused:
                assert again.source == "upstream"  # the refused answer was not kept
            assert wire.open == wire.idle  # every connection back, none lost busy
        assert wire.open == 0
        await upstream.wait_all_closed()


# --- streamed calls: httpx ---------------------------------------------------------------


@dataclasses.dataclass
class Streamed:
    source: str
    text: str
    error: BaseException | None


async def stream(od: Overdrive, prompt: str, namespace: str) -> Streamed:
    body = {"model": "m", "messages": [{"role": "user", "content": prompt}], "stream": True}
    reply = await od.open_stream(dataclasses.replace(chat_call(body), namespace=namespace))
    pieces: list[str] = []
    error: BaseException | None = None
    try:
        assert reply.status == 200
        async for line in sse_lines(reply):
            if line.startswith("data: ") and line != "data: [DONE]":
                pieces.append(json.loads(line[6:])["choices"][0]["delta"].get("content", ""))
    except Exception as exc:  # a stream broken off mid-way
        error = exc
    finally:
        await reply.aclose()
    return Streamed(reply.source, "".join(pieces), error)


def whole_stream(streamed: Streamed, prompt: str) -> None:
    assert streamed.error is None
    assert streamed.text == f"echo: {prompt}"


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize("misbehaviour", STREAMED)
def test_a_streamed_call_gets_its_own_answer_or_a_clean_break(
    misbehaviour: str, loop: str, error_logs: Callable[[], list[str]]
) -> None:
    broken = misbehaviour in CUT_SHORT or misbehaviour == "oversize body"
    assert run_on(loop, streamed_calls(STREAMED[misbehaviour], broken)) == []
    assert error_logs() == []


async def streamed_calls(misbehaviour: Misbehaviour, broken: bool) -> None:
    async with HostileUpstream(first_gets(misbehaviour)) as upstream:
        async with engine(upstream) as od:
            first = await stream(od, "alpha", "tenant-a")
            if broken:
                assert first.error is not None  # broken off: the caller is told
                assert f"echo: alpha {OVERSIZE}".startswith(first.text)  # its own, so far
            else:
                whole_stream(first, "alpha")
            whole_stream(await stream(od, "beta", "tenant-b"), "beta")
            prompts = [(f"p{i}", f"tenant-{i % 3}") for i in range(6)]
            streamed = await asyncio.gather(*(stream(od, *p) for p in prompts))
            for each, (prompt, _) in zip(streamed, prompts, strict=True):
                whole_stream(each, prompt)
            again = await stream(od, "alpha", "tenant-a")
            whole_stream(again, "alpha")
            if first.error is not None:
                assert again.source == "upstream"  # the broken stream was not kept
        await upstream.wait_all_closed()


# --- httpx's connections: the framing guard ----------------------------------------------

BEHIND = answer(b'{"mine": 0}') + answer(chat_body(INTRUDER))


def numbered(request: Request) -> Reply:
    """The first request gets its answer and another behind it; each later one its number."""
    return Reply(BEHIND if request.index == 0 else answer(b'{"mine": %d}' % request.index))


async def three_posts(client: httpx.AsyncClient, url: str) -> list[bytes]:
    answers = []
    for _ in range(3):
        async with client.stream("POST", url, content=b"{}") as response:
            answers.append(await response.aread())
    return answers


async def test_stock_httpx_reads_bytes_behind_an_answer_as_the_next_ones() -> None:
    # Why the guard exists: h11 keeps what came behind an answer and httpcore
    # reuses the connection. Should this ever fail, httpx stopped doing so.
    async with HostileUpstream(numbered) as upstream, httpx.AsyncClient() as client:
        answers = await three_posts(client, f"{upstream.base_url}/x")
    assert answers[1] == chat_body(INTRUDER)


async def test_the_guard_closes_a_connection_with_bytes_behind_an_answer() -> None:
    transport = guarded_transport(httpx.Limits(max_connections=4))
    async with HostileUpstream(numbered) as upstream:
        async with httpx.AsyncClient(transport=transport) as client:
            answers = await three_posts(client, f"{upstream.base_url}/x")
        await upstream.wait_all_closed()
    assert answers == [b'{"mine": 0}', b'{"mine": 1}', b'{"mine": 2}']
    assert upstream.connections == 2  # a new one after the spoiled one, then kept


def interim_then_chunked(request: Request) -> Reply:
    body = chunked(b'{"mine": ', b"%d}" % request.index, content_type=b"application/json")
    return Reply(b"HTTP/1.1 100 Continue\r\n\r\n" + body)


async def test_the_guard_keeps_a_connection_whose_answers_end_cleanly() -> None:
    # An interim answer, then the answer in chunks: clean framing, nothing behind.
    transport = guarded_transport(httpx.Limits(max_connections=4))
    upstream = HostileUpstream(interim_then_chunked)
    async with upstream, httpx.AsyncClient(transport=transport) as client:
        answers = await three_posts(client, f"{upstream.base_url}/x")
    assert answers == [b'{"mine": 0}', b'{"mine": 1}', b'{"mine": 2}']
    assert upstream.connections == 1


async def test_the_guard_follows_answers_through_tls(tmp_path: Path) -> None:
    authority = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1").configure_cert(server)
    pem = tmp_path / "ca.pem"
    authority.cert_pem.write_to_path(str(pem))
    with pytest.MonkeyPatch.context() as env:
        env.setenv("SSL_CERT_FILE", str(pem))  # read as httpx reads it
        transport = guarded_transport(httpx.Limits(max_connections=4))
    async with HostileUpstream(numbered, tls=server) as upstream:
        async with httpx.AsyncClient(transport=transport) as client:
            answers = await three_posts(client, f"{upstream.base_url}/x")
        await upstream.wait_all_closed()
    assert answers == [b'{"mine": 0}', b'{"mine": 1}', b'{"mine": 2}']
    assert upstream.connections == 2


def test_through_a_proxy_httpx_sends_with_its_own_transport(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for variable in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(variable, raising=False)
        monkeypatch.delenv(variable.lower(), raising=False)
    limits = httpx.Limits(max_connections=1)
    assert isinstance(_guarded(limits), httpx.AsyncHTTPTransport)
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
    assert _guarded(limits) is None  # or httpx would stop reading the proxy from the environment
