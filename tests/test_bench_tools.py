"""benchmarks/bench_tools.py --quick: three contenders against the real tool server, in one run.

The benchmark runs as a script (its modules import each other from the
benchmarks folder, and its servers are spawned processes), so the test reads
its printed table and its ``--json`` figures.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.bench_runs import quick_run as quick_run_of


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, Any]]:
    """The printed output and the figures of one ``--quick`` run."""
    figures = tmp_path_factory.mktemp("bench_tools") / "figures.json"
    return quick_run_of("bench_tools.py", figures)


def test_the_table_names_every_contender_and_figure(quick_run: tuple[str, Any]) -> None:
    output, _ = quick_run
    header = next(line for line in output.splitlines() if "hand-built/od" in line)
    assert header.split() == ["plain", "hand-built", "overdrive", "plain/od", "hand-built/od"]
    for label in ("makespan / lower bound", "calls failed at the caller", "upstream 429s"):
        assert label in output


def test_overdrive_never_fails_a_call_nor_draws_a_429(quick_run: tuple[str, Any]) -> None:
    overdrive = quick_run[1]["contenders"]["overdrive"]
    assert overdrive["failed"] == 0
    assert overdrive["upstream_429s"] == 0
    assert overdrive["upstream_calls"] > 0


def test_the_server_really_limits_the_naive_fan_out(quick_run: tuple[str, Any]) -> None:
    plain = quick_run[1]["contenders"]["plain"]
    assert plain["upstream_429s"] > 0


def test_no_contender_that_completed_every_call_beats_the_lower_bound(
    quick_run: tuple[str, Any],
) -> None:
    # A makespan under the bound would mean the bound's formula is wrong, not a fast client.
    for name, figures in quick_run[1]["contenders"].items():
        if figures["failed"] == 0:
            assert figures["over_bound"] >= 1.0, name
