"""``overdrive dashboard``: an engine and its dashboard from the command line."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest

from overdrive.cli import main


def test_demo_serves_a_dashboard_with_load_until_ctrl_c() -> None:
    command = [sys.executable, "-m", "overdrive", "dashboard", "--demo", "--port", "0"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("overdrive dashboard: http://127.0.0.1:")
        url = line.split()[2]
        assert httpx.get(url).status_code == 200
        deadline = time.monotonic() + 30
        requests = 0.0
        while requests == 0 and time.monotonic() < deadline:  # the agents start calling
            requests = httpx.get(f"{url}/snapshot").json()["totals"]["requests"]
        assert requests > 0
    finally:
        process.send_signal(signal.SIGINT)
        code = process.wait(30)
        if process.stdout is not None:
            process.stdout.close()
    assert code in (0, 130)


def test_a_port_in_use_is_one_line_not_a_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        assert main(["dashboard", "--demo", "--port", port]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("overdrive dashboard: ")
    assert "\n" not in err
