"""benchmarks/bench_cold_burst.py --quick: every contender bursts once against the real sim.

The benchmark runs as a script (it imports from the benchmarks folder and
spawns the sim in a process of its own), so the test reads its printed table
and its ``--json`` figures. Timings on a shared machine are noise at this
size: the test checks the shape of the output, not who won.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.bench_runs import quick_run as quick_run_of


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, Any]]:
    """The printed output and the figures of one ``--quick`` run."""
    figures = tmp_path_factory.mktemp("bench_cold_burst") / "figures.json"
    return quick_run_of("bench_cold_burst.py", figures)


def test_the_table_has_a_row_per_contender(quick_run: tuple[str, Any]) -> None:
    output, _ = quick_run
    lines = output.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:1] == ["contender"])
    assert "auto/it calls/s" in lines[header]
    names = [line.split()[0] for line in lines[header + 1 : header + 5]]
    assert names == ["auto", "4", "16", "openai"]
    assert "auto vs the best fixed limit:" in output


def test_every_call_of_every_burst_completes(quick_run: tuple[str, Any]) -> None:
    figures = quick_run[1]
    assert set(figures["rows"]) == {"auto", "4", "16", "openai"}
    assert figures["best_fixed"] in ("4", "16")
    for name, row in figures["rows"].items():
        assert row["errors"] == 0, name
        assert 0 < row["p50_ms"] <= row["p95_ms"], name
        assert row["throughput"] > 0, name


def test_a_limit_of_4_sends_the_burst_in_waves(quick_run: tuple[str, Any]) -> None:
    # 12 calls through 4 slots: three waves of one latency each; a floor, not a race.
    rows = quick_run[1]["rows"]
    assert rows["4"]["p95_ms"] >= 2 * 250
