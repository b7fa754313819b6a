"""``od.mcp(session)``: a real MCP server over stdio, a real client session, through the door.

The server (``mcp_server.py``) runs as a subprocess speaking MCP on stdio;
its ``calls`` tool says how often each tool ran, read through the bare
session so the wrapper cannot shape the count. Pacing waits on the
engine's fake clock; only the round trips to the server take real time.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from mcp import Client, ClientSession, StdioServerParameters, stdio_client

from overdrive import ConfigError, Overdrive
from overdrive._asgi_server import free_port
from overdrive.monitor.names import TOOL_CALLS, TOOL_ERRORS
from overdrive.testing import FakeClock
from overdrive.tools import McpTools

T = TypeVar("T")
SERVER = Path(__file__).with_name("mcp_server.py")
UPSTREAM = {"name": "a", "base_url": "http://127.0.0.1:1/v1", "models": ["m"]}
# Real seconds after which a wait for the server is a hang, not a slow machine.
_HANG_S = 60.0


@contextlib.asynccontextmanager
async def connected() -> AsyncIterator[ClientSession]:
    params = StdioServerParameters(command=sys.executable, args=[str(SERVER)])
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        yield session


@contextlib.asynccontextmanager
async def engine(**config: Any) -> AsyncIterator[tuple[Overdrive, FakeClock]]:
    clock = FakeClock()
    od = Overdrive.from_config({"upstreams": [UPSTREAM], **config}, clock=clock)
    try:
        yield od, clock
    finally:
        await od.aclose()


async def ran(session: ClientSession, tool: str) -> int:
    """How many times ``tool`` ran on the server, asked past the wrapper."""
    result = await session.call_tool("calls", {"tool": tool})
    assert result.structured_content is not None
    return int(result.structured_content["result"])


async def one_finishes(calls: set[asyncio.Task[T]]) -> set[asyncio.Task[T]]:
    """Wait for one of ``calls`` to finish; the ones still pending (a hang is an error)."""
    async with asyncio.timeout(_HANG_S):
        done, pending = await asyncio.wait(calls, return_when=asyncio.FIRST_COMPLETED)
    assert len(done) == 1  # the next one cannot go before the fake clock moves
    return pending


def text(result: Any) -> str:
    return str(result.content[0].text)


async def test_a_read_only_tool_is_coalesced_then_cached() -> None:
    async with connected() as session, engine() as (od, _):
        docs = od.mcp(session, server="docs")
        answers = await asyncio.gather(
            *(docs.call_tool("search", {"query": "q", "delay": 0.3}) for _ in range(5))
        )
        assert {text(a) for a in answers} == {"results for q"}
        assert await ran(session, "search") == 1  # five callers, one call reached the server
        again = await docs.call_tool("search", {"query": "q", "delay": 0.3})
        assert text(again) == "results for q"
        assert await ran(session, "search") == 1  # answered from the cache
        other = await docs.call_tool("search", {"query": "other"})
        assert text(other) == "results for other"
        assert await ran(session, "search") == 2  # other arguments, another call
        metrics = od.metrics
        assert metrics.value(TOOL_CALLS, tool="docs.search", outcome="coalesced") == 4.0
        assert metrics.value(TOOL_CALLS, tool="docs.search", outcome="cached") == 1.0
        assert metrics.value(TOOL_CALLS, tool="docs.search", outcome="ok") == 2.0


@contextlib.contextmanager
def http_server() -> Iterator[str]:
    """The same server over streamable HTTP in a subprocess; its URL once it listens."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, str(SERVER), str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, _HANG_S)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        process.terminate()
        process.wait(10)


def wait_for_port(port: int, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while True:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        if time.monotonic() > deadline:
            raise TimeoutError(f"the MCP server never listened on {port}")
        time.sleep(0.05)


async def test_an_mcp_client_over_streamable_http_goes_through_the_door() -> None:
    with http_server() as url:
        async with Client(url) as client, engine() as (od, _):
            docs = od.mcp(client, server="docs")
            answers = await asyncio.gather(
                *(docs.call_tool("lookup", {"key": "k"}) for _ in range(3))
            )
            assert {text(a) for a in answers} == {"K"}
            await docs.call_tool("delete_note", {"note": "n"})
            await docs.call_tool("delete_note", {"note": "n"})
            lookups = await client.call_tool("calls", {"tool": "lookup"})
            deletes = await client.call_tool("calls", {"tool": "delete_note"})
            assert lookups.structured_content == {"result": 1}
            assert deletes.structured_content == {"result": 2}


async def test_an_idempotent_tool_said_not_destructive_is_cached() -> None:
    async with connected() as session, engine() as (od, _):
        docs = od.mcp(session, server="docs")
        for _ in range(3):
            assert text(await docs.call_tool("lookup", {"key": "k"})) == "K"
        assert await ran(session, "lookup") == 1


async def test_a_destructive_tool_is_never_cached_even_when_named_cacheable() -> None:
    async with connected() as session, engine() as (od, _):
        docs = od.mcp(session, server="docs", cacheable=["delete_note", "plain"])
        await asyncio.gather(*(docs.call_tool("delete_note", {"note": "n"}) for _ in range(3)))
        assert await ran(session, "delete_note") == 3  # each call ran: none joined, none cached
        for _ in range(2):
            await docs.call_tool("plain", {"value": "v"})
        assert await ran(session, "plain") == 1  # no hints, but the caller said so


async def test_a_tool_without_hints_is_not_cached_unless_named() -> None:
    async with connected() as session, engine() as (od, _):
        docs = od.mcp(session, server="docs")
        for _ in range(2):
            await docs.call_tool("plain", {"value": "v"})
        assert await ran(session, "plain") == 2


async def test_an_error_answer_is_handed_back_and_never_stored() -> None:
    async with connected() as session, engine() as (od, _):
        docs = od.mcp(session, server="docs")
        for _ in range(2):
            result = await docs.call_tool("broken", {"value": "v"})
            assert result.is_error
            assert "cannot do v" in text(result)
        assert await ran(session, "broken") == 2
        assert od.metrics.value(TOOL_ERRORS, tool="docs.broken", error="McpToolError") == 2.0


async def test_per_tool_pacing_holds_on_the_clock() -> None:
    tools = [{"name": "docs.plain", "rpm": 60}]
    async with connected() as session, engine(tools=tools) as (od, clock):
        docs = od.mcp(session, server="docs")
        pending = {
            asyncio.ensure_future(docs.call_tool("plain", {"value": str(i)})) for i in range(3)
        }
        for second in range(3):
            pending = await one_finishes(pending)
            assert await ran(session, "plain") == second + 1
            queue = od.tools.runners["docs.plain"].queue
            assert queue is not None
            assert queue.waiting == len(pending)  # the rest wait for their turn
            clock.advance(1.0)
        assert not pending


async def test_the_servers_pacing_holds_over_all_its_tools() -> None:
    async with connected() as session, engine() as (od, clock):
        docs = od.mcp(session, server="docs", rpm=60)
        pending = {
            asyncio.ensure_future(docs.call_tool("plain", {"value": "p"})),
            asyncio.ensure_future(docs.call_tool("delete_note", {"note": "n"})),
        }
        pending = await one_finishes(pending)
        assert await ran(session, "plain") + await ran(session, "delete_note") == 1
        queue = od.tools.runners["docs"].queue
        assert queue is not None
        assert queue.waiting == 1  # the other tool's call waits for the server's turn
        clock.advance(1.0)
        await asyncio.gather(*pending)
        assert await ran(session, "plain") + await ran(session, "delete_note") == 2


async def test_listings_are_kept_briefly_and_joined() -> None:
    async with connected() as session, engine() as (od, clock):
        docs = od.mcp(session, server="docs", list_ttl="10s")
        first, second = await asyncio.gather(docs.list_tools(), docs.list_tools())
        assert first is second  # joined in flight
        assert await docs.list_tools() is first  # kept
        clock.advance(11.0)
        assert await docs.list_tools() is not first  # expired: listed anew
        names = {tool.name for tool in first.tools}
        assert {"search", "lookup", "delete_note", "plain"} <= names


async def test_unlisted_tool_names_share_one_runner() -> None:
    async with connected() as session, engine() as (od, _):
        docs = od.mcp(session, server="docs")
        for name in ("nope_1", "nope_2", "nope_3"):
            with contextlib.suppress(Exception):
                await docs.call_tool(name, {})
        assert sorted(od.tools.runners) == ["docs", "docs.<unlisted>"]


class Unconnected:
    """Has a session's two methods; the checks fail before either is called."""

    async def call_tool(self, name: str, arguments: dict[str, Any] | None = None) -> Any:
        raise AssertionError("not called")

    async def list_tools(self) -> Any:
        raise AssertionError("not called")


def test_a_bad_server_name_option_or_session_is_refused_clearly() -> None:
    od = Overdrive.from_config({"upstreams": [UPSTREAM]})
    with pytest.raises(ConfigError) as caught:
        od.mcp(Unconnected(), server="a.b")
    assert caught.value.field == "server"
    with pytest.raises(ConfigError) as caught:
        od.mcp(Unconnected(), server="docs", tools={"search": {"rpm": 0}})
    assert caught.value.field == "rpm"
    not_a_session: Any = object()
    with pytest.raises(TypeError, match="expected an MCP client session"):
        od.mcp(not_a_session, server="docs")
    wrapped = od.mcp(Unconnected(), server="docs")
    assert isinstance(wrapped, McpTools)
    with pytest.raises(AttributeError):
        _ = wrapped.no_such_thing  # the session's attributes pass through, missing ones too
