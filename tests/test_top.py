"""``overdrive top``: frames from a gateway's snapshots or a saved run; bad input is one line."""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from rich.console import Console

from overdrive import Overdrive
from overdrive._top import TopSourceError, fetch_url, read_file, run_top
from overdrive.cli import main
from overdrive.gateway import GatewayApp, hash_key
from overdrive.gateway._server import GatewayServer
from overdrive.monitor.names import REQUESTS, UPSTREAM_REQUESTS
from overdrive.sim import SimConfig, SimServer

SECRET = "sk-top-5e0b"


@pytest.fixture(scope="module")
def sim() -> Iterator[SimServer]:
    with SimServer(SimConfig(ttft_s=0.0, per_token_s=0.0)) as server:
        yield server


def config(sim: SimServer, **extra: Any) -> dict[str, Any]:
    upstream = {"name": "sim", "base_url": sim.base_url, "models": ["gpt-4o-mini"]}
    return {"upstreams": [upstream], **extra}


def ask(n: int) -> dict[str, Any]:
    return {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"top {n}"}]}


def metric(text: str, name: str) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + "{")
    )


def test_live_frames_show_the_gateways_figures_and_a_rate(sim: SimServer) -> None:
    with (
        GatewayServer(GatewayApp(config(sim))) as gateway,
        httpx.Client(base_url=gateway.url) as http,
    ):
        for n in range(5):
            assert http.post("/v1/chat/completions", json=ask(n)).status_code == 200

        def between_frames(seconds: float) -> None:
            for n in range(5, 12):
                assert http.post("/v1/chat/completions", json=ask(n)).status_code == 200

        console = Console(width=140, record=True, file=io.StringIO())
        run_top(fetch_url(gateway.url), frames=2, console=console, sleep=between_frames)
        metrics = http.get("/metrics").text
    shown = console.export_text()
    assert f"requests {metric(metrics, REQUESTS):,.0f} (" in shown  # the second frame has a rate
    rate = re.search(r"requests 12 \(([\d.,]+)/s\)", shown)
    assert rate is not None
    assert float(rate.group(1).replace(",", "")) > 0
    upstream_row = next(line for line in shown.splitlines() if "│ sim " in line)
    assert f"{metric(metrics, UPSTREAM_REQUESTS):,.0f}" in upstream_row


def test_a_gateway_with_keys_needs_one(sim: SimServer, monkeypatch: pytest.MonkeyPatch) -> None:
    keys = {"keys": [{"name": "ops", "key_sha256": hash_key(SECRET)}]}
    with GatewayServer(GatewayApp(config(sim, gateway=keys))) as gateway:
        with pytest.raises(TopSourceError, match="answered 401"):
            fetch_url(gateway.url)()
        monkeypatch.setenv("TOP_KEY", SECRET)
        shot = fetch_url(gateway.url, "TOP_KEY")()
    assert shot["totals"]["requests"] == 0


async def test_a_saved_run_is_shown_once_and_still_reported(
    sim: SimServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "run.json"
    async with Overdrive.from_config(config(sim)) as od:
        for n in range(3):
            await od.chat(**ask(n))
        assert od.save_run(path) == path
    assert read_file(path)["totals"]["requests"] == 3
    assert main(["top", "--file", str(path)]) == 0
    assert "requests 3" in capsys.readouterr().out
    assert main(["report", "--file", str(path), "--json"]) == 0  # the report reads it still


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (None, "no run saved at"),
        (b"{not json", "is not JSON"),
        (b'{"seconds": 1, "counters": []}', "holds no snapshot"),
        (b'{"snapshot": {"totals": {}}}', "not a snapshot (no latency, upstreams, stages)"),
    ],
)
def test_a_bad_file_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes | None, says: str
) -> None:
    path = tmp_path / "run.json"
    if content is not None:
        path.write_bytes(content)
    assert main(["top", "--file", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("overdrive top: ")
    assert says in err


def test_an_unreachable_gateway_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["top", "--url", "http://127.0.0.1:9", "--frames", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("overdrive top: cannot reach http://127.0.0.1:9/dashboard/snapshot")
    assert err.count("\n") == 1
