"""benchmarks/bench_vector_index.py --quick: five vector indexes on the same clustered vectors.

The benchmark runs as a script (it pins BLAS and OpenMP threads before numpy
loads), so the test reads its printed table and its ``--json`` figures. Timings
are only checked to be there: on a shared machine they are too noisy to assert on.
"""

from __future__ import annotations

from typing import Any

import pytest

from overdrive.cache.semantic._index import EXACT_BELOW
from tests.bench_runs import quick_run as quick_run_of

CONTENDERS = ["numpy", "usearch", "hnswlib", "faiss-flat", "faiss-hnsw"]
VECTOR_BYTES = 384 * 4


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, Any]]:
    """The printed output and the figures of one ``--quick`` run."""
    figures = tmp_path_factory.mktemp("bench_vector_index") / "figures.json"
    return quick_run_of("bench_vector_index.py", figures)


def test_every_size_has_every_contender_and_figure(quick_run: tuple[str, Any]) -> None:
    output, figures = quick_run
    assert list(figures["sizes"]) == ["1000", "5000"]
    for size in figures["sizes"].values():
        assert list(size) == CONTENDERS
        for fig in size.values():
            assert 0 < fig["p50_us"] <= fig["p99_us"]
            assert fig["build_us_per_vector"] > 0
    table_rows = [line.split()[0] for line in output.splitlines() if line.startswith("  ")]
    for name in CONTENDERS:
        assert table_rows.count(name) == 2, name
    assert "p99/np" in output
    assert "recommendation: " in output


def test_exact_contenders_find_the_exact_nearest(quick_run: tuple[str, Any]) -> None:
    # Not exactly 1.0: a batched reference and a single-query gemv may round a near-tie apart.
    for size in quick_run[1]["sizes"].values():
        for name in ("numpy", "faiss-flat"):
            assert size[name]["recall_at_1"] >= 0.99, name


def test_graphs_find_a_paraphrase_of_a_stored_vector(quick_run: tuple[str, Any]) -> None:
    for size in quick_run[1]["sizes"].values():
        for name in ("usearch", "hnswlib", "faiss-hnsw"):
            assert size[name]["recall_at_1_paraphrase"] >= 0.9, name
            assert 0 <= size[name]["recall_at_1_fresh"] <= 1


def test_reported_memory_holds_the_vectors_and_numpy_grows_at_most_twofold(
    quick_run: tuple[str, Any],
) -> None:
    for size in quick_run[1]["sizes"].values():
        for name in ("numpy", "usearch", "hnswlib", "faiss-flat", "faiss-hnsw"):
            assert size[name]["reported_bytes_per_vector"] >= VECTOR_BYTES, name
        assert size["numpy"]["reported_bytes_per_vector"] < 2 * VECTOR_BYTES + 300


def test_removal_support_is_stated(quick_run: tuple[str, Any]) -> None:
    size = quick_run[1]["sizes"]["1000"]
    assert size["numpy"]["removal"].startswith("yes")
    assert size["usearch"]["removal"].startswith("yes")
    assert size["faiss-hnsw"]["removal"] == "no"


def test_the_crossover_comes_from_the_sweep_and_is_printed(quick_run: tuple[str, Any]) -> None:
    output, figures = quick_run
    sizes = [point["size"] for point in figures["sweep"]]
    assert sizes == [256, 512, 1024, 2048, 4096]
    assert figures["crossover"] is None or figures["crossover"] in sizes
    assert figures["exact_below"] == EXACT_BELOW
    line = next(line for line in output.splitlines() if line.startswith("crossover:"))
    assert f"from {figures['crossover']} vectors" in line
