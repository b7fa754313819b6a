"""`overdrive report` on any run: a file an app saved, a running gateway; bad input in one line."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from overdrive import Overdrive
from overdrive.cli import main
from overdrive.gateway import REPORT_PATH, GatewayApp, hash_key
from overdrive.gateway._server import GatewayServer
from overdrive.sim import SimConfig, SimServer

MODEL = "gpt-4o-mini"
SECRET = "sk-report-5e1"


@pytest.fixture(scope="module")
def sim() -> Iterator[SimServer]:
    with SimServer(SimConfig(ttft_s=0.0, per_token_s=0.0, models=(MODEL,))) as server:
        yield server


def upstreams(sim: SimServer) -> list[dict[str, Any]]:
    return [{"name": "sim", "base_url": sim.base_url, "models": [MODEL]}]


def report(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(["report", *argv])
    out, err = capsys.readouterr()
    return code, out, err


async def test_a_run_an_app_saved_is_reported(
    sim: SimServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with Overdrive.from_config({"upstreams": upstreams(sim)}) as od:
        for n in range(5):
            await od.chat(model=MODEL, messages=[{"role": "user", "content": f"q{n % 3}"}])
        saved = od.save_run(tmp_path / "runs" / "app.json")
    assert saved == tmp_path / "runs" / "app.json"
    code, out, _ = report(["--file", str(saved), "--json"], capsys)
    assert code == 0
    analysis = json.loads(out)
    assert analysis["requests"] == 5
    assert analysis["served_locally"]["cache"] == pytest.approx(2 / 5)  # q0 and q1 again


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (b'{"seconds": 1, "counters": [', "is not a saved run: "),
        (b"[1, 2]", "is not a saved run: expected a JSON object, got list"),
        (b'{"counters": [{"labels": {}}]}', "is not a saved run: KeyError"),
        (b'{"counters": 5}', "is not a saved run: TypeError"),
    ],
    ids=["truncated", "a list", "a counter without a name", "counters not a list"],
)
def test_a_file_that_is_not_a_run_is_one_clear_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes, says: str
) -> None:
    path = tmp_path / "run.json"
    path.write_bytes(content)
    code, out, err = report(["--file", str(path)], capsys)
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1
    assert err.startswith(f"overdrive report: {path} {says}")


def test_a_missing_file_or_a_directory_is_one_clear_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = report(["--file", str(tmp_path / "none.json")], capsys)
    assert code == 2
    assert err.startswith(f"overdrive report: no run saved at {tmp_path / 'none.json'}; ")
    assert "od.save_run(path)" in err
    code, _, err = report(["--file", str(tmp_path)], capsys)
    assert (code, err.strip()) == (
        2,
        f"overdrive report: {tmp_path} is a directory, not a saved run",
    )


@pytest.fixture(scope="module")
def gateway(sim: SimServer) -> Iterator[GatewayServer]:
    config = {
        "upstreams": upstreams(sim),
        "gateway": {"keys": [{"name": "ops", "key_sha256": hash_key(SECRET)}]},
    }
    with GatewayServer(GatewayApp(config)) as server:
        auth = {"authorization": f"Bearer {SECRET}"}
        with httpx.Client(base_url=server.url, headers=auth) as http:
            for n in range(4):
                body = {"model": MODEL, "messages": [{"role": "user", "content": f"g{n}"}]}
                assert http.post("/v1/chat/completions", json=body).status_code == 200
        yield server


def test_a_running_gateway_is_reported_through_its_key(
    gateway: GatewayServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OD_REPORT_KEY", SECRET)
    code, out, _ = report(["--url", gateway.url, "--key-env", "OD_REPORT_KEY", "--json"], capsys)
    assert code == 0
    assert json.loads(out)["requests"] == 4
    served = httpx.get(gateway.url + REPORT_PATH, headers={"authorization": f"Bearer {SECRET}"})
    assert served.json()["analysis"]["requests"] == 4
    assert served.json()["sample"]["counters"]


def test_a_gateway_that_refuses_or_is_not_there_is_one_clear_line(
    gateway: GatewayServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = report(["--url", gateway.url], capsys)
    assert code == 2
    assert err.startswith(f"overdrive report: {gateway.url}{REPORT_PATH} answered 401: ")
    assert err.count("\n") == 1
    code, _, err = report(["--url", gateway.url, "--key-env", "OD_UNSET_KEY"], capsys)
    assert (code, err.strip()) == (2, "overdrive report: --key-env OD_UNSET_KEY is not set")
    code, _, err = report(["--url", "http://127.0.0.1:9"], capsys)
    assert code == 2
    assert err.startswith(f"overdrive report: cannot reach http://127.0.0.1:9{REPORT_PATH}: ")


def test_file_and_url_are_one_or_the_other(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["report", "--file", "a.json", "--url", "http://127.0.0.1:9"])
    assert "not allowed with argument" in capsys.readouterr().err
