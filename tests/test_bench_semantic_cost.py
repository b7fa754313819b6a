"""benchmarks/bench_semantic_cost.py --quick: lookup, memory and miss figures in one run.

Run as a script (it starts the sim and loads the real model), so the test
reads its printed table and its ``--json`` figures. Times are not judged
here (the machine is shared); what the figures must mean is.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.bench_runs import quick_run as quick_run_of

VECTOR_BYTES = 384 * 4


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, Any]]:
    """The printed output and the figures of one ``--quick`` run."""
    figures = tmp_path_factory.mktemp("bench_semantic_cost") / "figures.json"
    return quick_run_of("bench_semantic_cost.py", figures, timeout=300)


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
