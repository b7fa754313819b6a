from __future__ import annotations

import json
import subprocess
import sys

import pytest

from overdrive.cli import main


def test_demo_json_shows_overdrive_faster_and_never_rate_limited() -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "overdrive.cli", "demo", "--json", "--tasks", "16"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    lines = completed.stdout.strip().splitlines()
    assert len(lines) == 1
    result = json.loads(lines[0])
    plain, fast = result["plain"], result["overdrive"]
    for run in (plain, fast):
        assert {"makespan_s", "upstream_requests", "rate_limited", "p95_task_s"} <= run.keys()
    assert fast["rate_limited"] == 0
    assert fast["upstream_requests"] < plain["upstream_requests"]
    assert fast["served_locally"] > 0


def test_no_command_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "demo" in capsys.readouterr().out


def test_bad_argument_is_rejected(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["demo", "--tasks", "0"])
    assert "--tasks: must be an integer >= 1, got 0" in capsys.readouterr().err
