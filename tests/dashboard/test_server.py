"""``od.dashboard()``: the dashboard's routes on a server of its own, for an in-process engine."""

from __future__ import annotations

import asyncio
import json
import socket

import httpx
import pytest

from overdrive import Overdrive
from overdrive.config import load_config
from overdrive.monitor.names import REQUESTS
from overdrive.sim import SimServer
from overdrive.testing import FakeClock
from tests.fakes import io_turns

from .conftest import MODEL, engine_config


async def raw(url: str, request: bytes) -> bytes:
    host, port = url.removeprefix("http://").split("/")[0].split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(request)
    answer = await reader.read()
    writer.close()
    await writer.wait_closed()
    return answer


async def test_serves_the_page_a_snapshot_and_the_feed_on_the_running_loop(sim: SimServer) -> None:
    od = Overdrive(load_config(engine_config(sim)), clock=FakeClock())
    server = od.dashboard(port=0)
    try:
        assert server.url.startswith("http://127.0.0.1:")
        assert server.url.endswith("/dashboard")
        await od.chat(model=MODEL, messages=[{"role": "user", "content": "hello"}])
        async with httpx.AsyncClient() as http:
            page = await http.get(server.url)
            assert page.status_code == 200
            assert "<title>overdrive dashboard</title>" in page.text
            assert "script-src 'self'" in page.headers["content-security-policy"]
            shot = (await http.get(f"{server.url}/snapshot")).json()
            assert shot["totals"]["requests"] == od.metrics.value(REQUESTS) == 1
            async with http.stream("GET", f"{server.url}/live?interval=5") as live:
                assert live.headers["content-type"] == "text/event-stream"
                lines = live.aiter_lines()
                assert await anext(lines) == "retry: 2000"
                assert await anext(lines) == ""
                assert await anext(lines) == "event: snapshot"
                data = json.loads((await anext(lines)).removeprefix("data: "))
                assert data["totals"]["requests"] == 1
    finally:
        await server.aclose()
        await od.aclose()


async def test_a_client_that_leaves_gives_its_feed_slot_back(sim: SimServer) -> None:
    od = Overdrive(load_config(engine_config(sim)), clock=FakeClock())
    server = od.dashboard(port=0)
    board = server.dashboard
    try:
        async with httpx.AsyncClient() as http, http.stream("GET", f"{server.url}/live") as live:
            await anext(live.aiter_lines())
            assert board.clients.active == 1
        for _ in range(200):  # the fake clock never ticks: only the hang-up can end the feed
            if board.clients.active == 0:
                break
            await io_turns()
        assert board.clients.active == 0
    finally:
        await server.aclose()
        await od.aclose()


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GET /dashboard/assets/../_server.py HTTP/1.1\r\n\r\n", b"404"),
        (b"GET /dashboard/assets/%2e%2e%2f_gate.py HTTP/1.1\r\n\r\n", b"404"),
        (b"GET /dashboard/assets/index.html HTTP/1.1\r\n\r\n", b"404"),
        (b"GET /etc/passwd HTTP/1.1\r\n\r\n", b"404"),
        (b"POST /dashboard HTTP/1.1\r\ncontent-length: 0\r\n\r\n", b"405"),
        (b"NONSENSE\r\n\r\n", b"400"),
    ],
)
async def test_only_its_routes_and_assets_are_served(
    sim: SimServer, request_bytes: bytes, status: bytes
) -> None:
    od = Overdrive(load_config(engine_config(sim)), clock=FakeClock())
    server = od.dashboard(port=0)
    try:
        answer = await raw(server.url, request_bytes)
        assert answer.split(b" ", 2)[1] == status
        assert b"import" not in answer
    finally:
        await server.aclose()
        await od.aclose()


async def test_assets_carry_their_content_types(sim: SimServer) -> None:
    od = Overdrive(load_config(engine_config(sim)), clock=FakeClock())
    server = od.dashboard(port=0)
    try:
        async with httpx.AsyncClient() as http:
            script = await http.get(f"{server.url}/assets/dashboard.js")
            style = await http.get(f"{server.url}/assets/dashboard.css")
        assert script.headers["content-type"] == "text/javascript; charset=utf-8"
        assert style.headers["content-type"] == "text/css; charset=utf-8"
        assert "new EventSource(" in script.text
        assert script.headers["x-content-type-options"]
    finally:
        await server.aclose()
        await od.aclose()


def test_a_sync_program_gets_it_on_the_engines_loop_thread(sim: SimServer) -> None:
    od = Overdrive.from_config(engine_config(sim))
    server = od.dashboard(port=0)
    try:
        assert httpx.get(server.url).status_code == 200
    finally:
        server.close()
        od.close()
    with pytest.raises(httpx.ConnectError):
        httpx.get(server.url)


def test_a_port_in_use_fails_at_once(sim: SimServer) -> None:
    od = Overdrive.from_config(engine_config(sim))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(OSError, match="in use"):
            od.dashboard(port=taken.getsockname()[1])
    od.close()
