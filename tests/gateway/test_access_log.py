"""The access log: one line per request, its fields, its shapes, and what it never holds."""

from __future__ import annotations

import asyncio
import io
import logging
import socket
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest

from overdrive.doors._answer import Answer
from overdrive.gateway import GatewayApp, _access_log, hash_key
from overdrive.gateway._access_log import AccessLog, AccessLogHandler
from overdrive.gateway._server import GatewayServer
from overdrive.sim import SimConfig, SimServer

SECRET = "sk-team-a-5f1c0e"
AUTH = {"authorization": f"Bearer {SECRET}"}


@pytest.fixture(scope="module")
def sim() -> Iterator[SimServer]:
    with SimServer(SimConfig(ttft_s=0.0, per_token_s=0.0, jitter=0.0)) as server:
        yield server


def config(sim: SimServer, style: str, **upstream: Any) -> dict[str, Any]:
    return {
        "upstreams": [
            {"name": "sim", "base_url": sim.base_url, "models": ["gpt-4o-mini"], **upstream}
        ],
        "routing": {"health": {"probes": False}},
        "retry": {"attempts": 0},
        "gateway": {
            "access_log": style,
            "keys": [{"name": "team-a", "key_sha256": hash_key(SECRET)}],
        },
    }


def chat(prompt: str) -> dict[str, Any]:
    return {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": prompt}]}


def access_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "overdrive.access"]


@pytest.fixture(autouse=True)
def _access_at_info(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="overdrive.access")


def test_a_text_line_per_request_names_key_model_upstream_and_cache(
    sim: SimServer, caplog: pytest.LogCaptureFixture
) -> None:
    prompt = "a private prompt 7d1e"
    with (
        GatewayServer(GatewayApp(config(sim, "text"))) as gateway,
        httpx.Client(base_url=gateway.url, headers=AUTH) as http,
    ):
        for _ in range(2):
            assert http.post("/v1/chat/completions", json=chat(prompt)).status_code == 200
        assert http.get("/health/live").status_code == 200
    miss, hit, live = access_lines(caplog)
    fields = miss.split(" ")
    assert fields[1:4] == ["POST", "/v1/chat/completions", "200"]
    assert fields[4:8] == ["key=team-a", "model=gpt-4o-mini", "upstream=sim", "cache=MISS"]
    assert fields[8].startswith("queue_ms=")
    assert fields[9].startswith("total_ms=")
    assert float(fields[10].removeprefix("cost_usd=")) > 0  # the sim reports usage; it is priced
    assert fields[0].endswith("Z")
    assert "T" in fields[0]
    assert " cache=HIT " in hit
    assert hit.endswith(" cost_usd=0.000000")  # the cache answered: nothing spent
    assert live.split(" ")[1:] == [
        "GET", "/health/live", "200", "key=-", "model=-", "upstream=-", "cache=-", "queue_ms=-",
        live.split(" ")[-2], "cost_usd=0.000000",
    ]  # fmt: skip
    for line in (miss, hit):
        assert SECRET not in line
        assert prompt not in line
        assert "private" not in line


def test_a_json_line_holds_the_same_fields(
    sim: SimServer, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        GatewayServer(GatewayApp(config(sim, "json"))) as gateway,
        httpx.Client(base_url=gateway.url, headers=AUTH) as http,
    ):
        assert http.post("/v1/chat/completions", json=chat("json shape")).status_code == 200
    [line] = access_lines(caplog)
    record = orjson.loads(line)
    assert set(record) == {
        "time", "method", "path", "status", "key", "model", "upstream", "cache", "queue_ms",
        "total_ms", "cost_usd",
    }  # fmt: skip
    assert record["status"] == 200
    assert (record["key"], record["model"], record["upstream"]) == ("team-a", "gpt-4o-mini", "sim")
    assert record["cache"] == "MISS"
    assert isinstance(record["queue_ms"], float)
    assert record["total_ms"] >= 0
    assert record["cost_usd"] > 0


def test_off_writes_nothing(sim: SimServer, caplog: pytest.LogCaptureFixture) -> None:
    with (
        GatewayServer(GatewayApp(config(sim, "off"))) as gateway,
        httpx.Client(base_url=gateway.url, headers=AUTH) as http,
    ):
        assert http.post("/v1/chat/completions", json=chat("off")).status_code == 200
    assert access_lines(caplog) == []


def test_an_upstream_failure_leaves_a_line(caplog: pytest.LogCaptureFixture) -> None:
    with (
        SimServer(SimConfig(ttft_s=0.0, per_token_s=0.0, error_rate=1.0)) as failing,
        GatewayServer(GatewayApp(config(failing, "text"))) as gateway,
        httpx.Client(base_url=gateway.url, headers=AUTH) as http,
    ):
        status = http.post("/v1/chat/completions", json=chat("fails")).status_code
    [line] = access_lines(caplog)
    assert status >= 500
    assert f" /v1/chat/completions {status} key=team-a " in line


def test_a_refused_head_leaves_a_line(sim: SimServer, caplog: pytest.LogCaptureFixture) -> None:
    with (
        GatewayServer(GatewayApp(config(sim, "text"))) as gateway,
        socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as sock,
    ):
        sock.sendall(b"GET / HTTP/1.1\r\nx-big: " + b"a" * 40_000 + b"\r\n\r\n")
        while sock.recv(65536):
            pass
    [line] = access_lines(caplog)
    assert line.split(" ")[1:4] == ["-", "-", "431"]


def test_a_path_cannot_forge_a_line(sim: SimServer, caplog: pytest.LogCaptureFixture) -> None:
    with (
        GatewayServer(GatewayApp(config(sim, "text"))) as gateway,
        httpx.Client(base_url=gateway.url) as http,
    ):
        http.get("/x%0A2025-01-01T00:00:00.000Z GET /forged 200 key=admin%22")
    [line] = access_lines(caplog)
    assert "\n" not in line
    path = line.split(" ")[2]
    assert path.startswith('"/x\\n2025')
    assert path.endswith('\\""')


def test_the_asgi_door_logs_too(sim: SimServer, caplog: pytest.LogCaptureFixture) -> None:
    async def run() -> int:
        app = GatewayApp(config(sim, "text"))
        await app.startup()
        try:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://gw") as http:
                reply = await http.post("/v1/chat/completions", json=chat("asgi"), headers=AUTH)
                return reply.status_code
        finally:
            await app.shutdown()

    assert asyncio.run(run()) == 200
    [line] = access_lines(caplog)
    assert " key=team-a model=gpt-4o-mini upstream=sim cache=MISS " in line


def test_a_long_or_odd_model_name_is_cut_and_escaped(caplog: pytest.LogCaptureFixture) -> None:
    reply = Answer(200, {}, model="m\n" + "x" * 10_000)
    AccessLog("text").record("POST", "/v1/chat/completions", 200, reply, 0.001)
    [line] = access_lines(caplog)
    assert "\n" not in line
    assert len(line) < 400


def test_nothing_is_formatted_when_the_logger_drops_info(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.WARNING, logger="overdrive.access")

    def never(*args: Any) -> None:
        raise AssertionError("formatted a line nobody logs")

    monkeypatch.setattr(_access_log, "_text_line", never)
    log = AccessLog("text")
    assert not log.enabled
    log.record("GET", "/health/live", 200, None, 0.001)
    assert access_lines(caplog) == []


class Recorder(io.StringIO):
    """A stream that counts its writes and says when one lands."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0
        self.landed = threading.Event()

    def write(self, text: str) -> int:
        self.writes += 1
        self.landed.set()
        return super().write(text)


def handler_on(stream: Recorder, **options: Any) -> AccessLogHandler:
    handler = AccessLogHandler(stream, **options)
    handler.setFormatter(logging.Formatter("%(message)s"))
    return handler


def emit(handler: AccessLogHandler, line: str) -> None:
    handler.handle(logging.LogRecord("overdrive.access", logging.INFO, "", 0, line, (), None))


def test_the_handler_writes_lines_in_batches_bounded_by_size() -> None:
    stream = Recorder()
    handler = handler_on(stream, interval=3600, max_buffer=100)
    try:
        for i in range(30):
            emit(handler, f"line {i:02d}")  # 7 characters and a newline each
        assert stream.writes == 2  # at 100 characters waiting: 13 lines, then 13 more
        assert stream.getvalue().splitlines() == [f"line {i:02d}" for i in range(26)]
    finally:
        handler.close()
    assert stream.getvalue().splitlines() == [f"line {i:02d}" for i in range(30)]  # closed: all


def test_the_handler_writes_a_waiting_line_within_its_interval() -> None:
    stream = Recorder()
    handler = handler_on(stream, interval=0.05)
    try:
        emit(handler, "a lone line")
        assert stream.landed.wait(5)
        assert stream.getvalue() == "a lone line\n"
    finally:
        handler.close()


def _one_answer() -> Answer:
    return Answer(200, {"x-overdrive-cache": "HIT"}, b"{}", model="gpt-4o-mini")


def test_a_sole_batching_handler_gets_the_line_without_a_record(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    logger = logging.getLogger("overdrive.access")
    stream = Recorder()
    handler = AccessLogHandler(stream, interval=3600)
    monkeypatch.setattr(logger, "handlers", [handler])
    monkeypatch.setattr(logger, "propagate", False)
    monkeypatch.setattr(logger, "level", logging.INFO)
    made: list[object] = []

    def make_record(*args: object, **kwargs: object) -> None:
        made.append(args)

    monkeypatch.setattr(logger, "makeRecord", make_record)
    try:
        AccessLog("text").record("GET", "/v1/models", 200, _one_answer(), 0.001)
        handler.flush()
    finally:
        handler.close()
    assert made == []
    assert " GET /v1/models 200 key=- model=gpt-4o-mini upstream=- cache=HIT" in stream.getvalue()


def test_a_filter_on_the_logger_still_sees_every_record(monkeypatch: pytest.MonkeyPatch) -> None:
    logger = logging.getLogger("overdrive.access")
    stream = Recorder()
    handler = AccessLogHandler(stream, interval=3600)
    seen: list[str] = []

    def note(record: logging.LogRecord) -> bool:
        seen.append(record.getMessage())
        return True

    monkeypatch.setattr(logger, "handlers", [handler])
    monkeypatch.setattr(logger, "propagate", False)
    monkeypatch.setattr(logger, "level", logging.INFO)
    monkeypatch.setattr(logger, "filters", [note])
    try:
        AccessLog("text").record("GET", "/v1/models", 200, _one_answer(), 0.001)
        handler.flush()
    finally:
        handler.close()
    assert len(seen) == 1
    assert stream.getvalue().strip() == seen[0]
