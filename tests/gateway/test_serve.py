"""``overdrive gateway`` as a real process: draining on SIGTERM, and several workers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from overdrive._asgi_server import free_port
from overdrive.sim import SimConfig, SimServer

START_TIMEOUT_S = 30.0


@pytest.fixture(scope="module")
def slow_sim() -> Iterator[SimServer]:
    # 40 tokens at 50 ms each: a stream that takes about two seconds.
    with SimServer(SimConfig(ttft_s=0.0, per_token_s=0.05, jitter=0.0)) as server:
        yield server


def start_gateway(sim: SimServer, tmp_path: Path, *args: str) -> tuple[subprocess.Popen[str], str]:
    config = tmp_path / "gateway.toml"
    config.write_text(
        f'[[upstreams]]\nname = "sim"\nbase_url = "{sim.base_url}"\nmodels = ["gpt-4o-mini"]\n'
        '[gateway]\ndrain_timeout = "20s"\n'
    )
    port = free_port()
    command = [sys.executable, "-m", "overdrive", "gateway", "--config", str(config)]
    process = subprocess.Popen(
        [*command, "--port", str(port), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if httpx.get(url + "/health/ready", timeout=1).status_code == 200:
                return process, url
        except httpx.TransportError:
            time.sleep(0.1)
    process.kill()
    output, _ = process.communicate()
    raise AssertionError(f"the gateway did not start:\n{output}")


def stop(process: subprocess.Popen[str]) -> str:
    if process.poll() is None:
        process.kill()
    output, _ = process.communicate(timeout=30)
    return output


def test_sigterm_lets_a_stream_in_flight_finish(slow_sim: SimServer, tmp_path: Path) -> None:
    process, url = start_gateway(slow_sim, tmp_path)
    try:
        body = {
            "model": "gpt-4o-mini",
            "messages": [{"role": "user", "content": "drain me"}],
            "max_tokens": 40,
            "stream": True,
        }
        received: list[bytes] = []
        first = threading.Event()

        def read_stream() -> None:
            with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=30) as r:
                for chunk in r.iter_bytes():
                    received.append(chunk)
                    first.set()

        reader = threading.Thread(target=read_stream)
        reader.start()
        assert first.wait(10), "no first chunk"
        process.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        with pytest.raises(httpx.ConnectError):  # no new connections while draining
            httpx.get(url + "/health/live", timeout=2)
        reader.join(30)
        assert process.wait(30) == 0
    finally:
        output = stop(process)
    stream = b"".join(received)
    assert stream.rstrip().endswith(b"data: [DONE]"), output
    assert stream.count(b"data: ") > 20  # every token arrived, not just the first


def test_several_workers_serve_and_stop_together(slow_sim: SimServer, tmp_path: Path) -> None:
    process, url = start_gateway(slow_sim, tmp_path, "--workers", "2")
    try:
        body = {
            "model": "gpt-4o-mini",
            "messages": [{"role": "user", "content": "workers"}],
            "max_tokens": 2,
        }
        for _ in range(6):  # fresh connections, spread over the workers by the kernel
            response = httpx.post(url + "/v1/chat/completions", json=body, timeout=10)
            assert response.status_code == 200
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
    finally:
        output = stop(process)
    assert "Started parent process" in output or "Uvicorn running" in output, output


def _one_chat(url: str) -> None:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "log"}]}
    response = httpx.post(url + "/v1/chat/completions", json=body, timeout=10)
    assert response.status_code == 200


def test_each_request_gets_an_access_log_line_on_stderr(
    slow_sim: SimServer, tmp_path: Path
) -> None:
    process, url = start_gateway(slow_sim, tmp_path)
    try:
        _one_chat(url)
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
    finally:
        output = stop(process)
    lines = [line for line in output.splitlines() if "POST /v1/chat/completions 200" in line]
    assert len(lines) == 1, output
    assert "model=gpt-4o-mini upstream=sim cache=MISS" in lines[0]


def test_no_access_log_flag_keeps_stderr_quiet(slow_sim: SimServer, tmp_path: Path) -> None:
    process, url = start_gateway(slow_sim, tmp_path, "--no-access-log")
    try:
        _one_chat(url)
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
    finally:
        output = stop(process)
    assert "/v1/chat/completions" not in output
