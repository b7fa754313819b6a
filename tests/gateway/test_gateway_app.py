"""The gateway app in-process: before startup, on a bug, at a bad config."""

from __future__ import annotations

from pathlib import Path
from typing import Any, NoReturn

import httpx
import pytest

from overdrive import ConfigError, Overdrive
from overdrive.cli import main
from overdrive.gateway import GatewayApp

CONFIG: dict[str, Any] = {
    "upstreams": [{"name": "a", "base_url": "http://127.0.0.1:9/v1", "models": ["m"]}],
    "routing": {"health": {"probes": False}},
}


def asgi_client(app: GatewayApp) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw")


async def test_before_startup_only_liveness_answers() -> None:
    app = GatewayApp(CONFIG)
    async with asgi_client(app) as http:
        live = await http.get("/health/live")
        ready = await http.get("/health/ready")
        models = await http.get("/v1/models")
    assert live.status_code == 200
    assert (ready.status_code, models.status_code) == (503, 503)
    assert models.json()["error"]["code"] == "not_ready"


async def test_a_bug_answers_500_in_the_openai_shape(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    app = GatewayApp(CONFIG)
    await app.startup()
    assert app.engine is not None

    async def broken(*args: Any) -> NoReturn:
        raise RuntimeError("boom")

    monkeypatch.setattr(app.engine, "request", broken)
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}]}
    try:
        async with asgi_client(app) as http:
            failed = await http.post("/v1/chat/completions", json=body)
            after = await http.get("/v1/models")
    finally:
        await app.shutdown()
    assert failed.status_code == 500
    assert failed.json()["error"]["code"] == "server_error"
    assert "boom" not in failed.text  # internals stay in the log
    assert "boom" in caplog.text
    assert after.status_code == 200
    assert app.engine is None


async def test_bad_config_fails_at_startup() -> None:
    with pytest.raises(ConfigError):
        await GatewayApp({"upstreams": []}).startup()


def test_max_body_bytes_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_body_bytes"):
        GatewayApp(CONFIG, max_body_bytes=0)


def test_cli_gateway_rejects_a_missing_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["gateway", "--config", str(tmp_path / "none.toml")]) == 2
    assert "cannot read" in capsys.readouterr().err


async def test_body_limit_comes_from_the_gateway_config() -> None:
    config = {**CONFIG, "gateway": {"max_body_bytes": "1KiB"}}
    app = GatewayApp(config)
    await app.startup()
    try:
        assert "max_body_bytes=1024" in repr(app)
    finally:
        await app.shutdown()
    with pytest.raises(ConfigError, match=r"gateway\.max_body_bytes"):
        Overdrive.from_config({**CONFIG, "gateway": {"max_body_bytes": 0}})


async def test_readiness_answers_503_once_a_drain_begins() -> None:
    app = GatewayApp(CONFIG)
    await app.startup()
    try:
        async with asgi_client(app) as http:
            before = await http.get("/health/ready")
            app.drain()
            during = await http.get("/health/ready")
            live = await http.get("/health/live")
    finally:
        await app.shutdown()
    assert before.status_code == 200
    assert during.status_code == 503
    assert during.json() == {"status": "draining"}
    assert live.status_code == 200  # alive, just not taking new work
