"""benchmarks/bench_semantic_cost.py --quick: lookup, memory and miss figures in one run.

Run as a script (it starts the sim and loads the real model), so the test
reads its printed table and its ``--json`` figures. Times are not judged
here (the machine is shared); what the figures must mean is.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_semantic_cost.py"
VECTOR_BYTES = 384 * 4


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, Any]]:
    figures = tmp_path_factory.mktemp("bench_semantic_cost") / "figures.json"
    done = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--json", str(figures)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout, json.loads(figures.read_text())


def test_every_size_holds_all_its_entries_and_books_at_least_their_vectors(
    quick_run: tuple[str, dict[str, Any]],
) -> None:
    _, figures = quick_run
    assert set(figures["sizes"]) == {"500", "3000"}
    for size, row in figures["sizes"].items():
        assert row["entries"] == int(size)
        assert row["booked_bytes_per_entry"] > VECTOR_BYTES  # the vector and the question
        assert 0 < row["lookup_p50_ms"] <= row["lookup_p99_ms"]


def test_the_miss_figures_compare_the_tier_off_and_on(
    quick_run: tuple[str, dict[str, Any]],
) -> None:
    output, figures = quick_run
    miss = figures["miss"]
    for kind in ("near", "far"):
        added = miss[f"{kind}_added_p50_ms"]
        assert added == pytest.approx(miss[f"{kind}_p50_ms"] - miss["off_p50_ms"])
    assert "tier on, a miss near an entry (embedded)" in output
    assert figures["embed_p50_ms"] > 0
