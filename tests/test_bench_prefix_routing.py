"""benchmarks/bench_prefix_routing.py: its prices and its verdicts (the runs are for the benchmark).

A run starts four sims per contender and takes minutes; what is checked here
is the arithmetic the printed figures rest on: cost from usage, the cached
share, and each goal judged on the right figure.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import bench_prefix_routing as bench


def row(ttft_p50: float, cached: float, load: float = 1.0) -> dict[str, float]:
    return {
        "ttft_p50": ttft_p50,
        "ttft_p95": ttft_p50 * 3,
        "cached_share": cached,
        "cost": 1.0,
        "load_over_mean": load,
    }


def test_cost_prices_cached_prompt_tokens_apart() -> None:
    tally = bench.Tally()
    tally.prompt, tally.cached, tally.output = 3_000_000, 2_000_000, 1_000_000
    # 1M fresh at $2, 2M cached at $0.50, 1M out at $8
    assert tally.cost() == pytest.approx(2.0 + 1.0 + 8.0)


def test_figures_read_the_tally() -> None:
    tally = bench.Tally()
    tally.ttft = [0.1, 0.2, 0.3, 0.4]
    tally.prompt, tally.cached = 100, 75
    tally.by_deployment.update({"d0": 6, "d1": 2})
    found = bench.figures(tally)
    assert found["ttft_p50"] == pytest.approx(0.25)
    assert found["cached_share"] == 0.75
    assert found["load_over_mean"] == 1.5


@pytest.mark.parametrize(
    ("table", "verdicts"),
    [
        (
            {"p2c": row(0.6, 0.7), "affinity": row(0.2, 0.86), "oracle": row(0.2, 0.9)},
            ["PASS", "PASS", "PASS"],
        ),
        (
            {"p2c": row(0.3, 0.7), "affinity": row(0.2, 0.5, 1.6), "oracle": row(0.2, 0.9)},
            ["FAIL", "FAIL", "FAIL"],
        ),
    ],
)
def test_each_goal_is_judged_on_its_figure(table: dict[str, Any], verdicts: list[str]) -> None:
    table = {"round_robin": row(0.5, 0.7), **table}
    lines = bench.report(table).splitlines()
    assert [line.rsplit(" ", 1)[1] for line in lines[-3:]] == verdicts
    assert len(lines) == 1 + 4 + 3  # header, a row per contender, the goals
