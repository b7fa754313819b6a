"""ScopedIndex against a brute-force reference: exact on numpy, near-exact on usearch."""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from overdrive.cache.semantic._index import Backend, ScopedIndex

Matrix = npt.NDArray[np.float32]
DIM = 32


def unit_rows(rng: np.random.Generator, n: int, dim: int = DIM) -> Matrix:
    rows = rng.standard_normal((n, dim)).astype(np.float32)
    normed: Matrix = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    return normed


def exact_top(matrix: Matrix, idents: list[int], query: Matrix, k: int) -> list[int]:
    scores = matrix @ query
    return [idents[i] for i in np.argsort(-scores, kind="stable")[:k]]


def filled(backend: Backend, matrix: Matrix, scope: bytes = b"s", **kwargs: int) -> ScopedIndex:
    index = ScopedIndex(matrix.shape[1], backend=backend, **kwargs)
    for ident, vector in enumerate(matrix):
        index.add(scope, ident, vector)
    return index


def test_numpy_top_k_is_the_exact_top_k() -> None:
    rng = np.random.default_rng(1)
    matrix = unit_rows(rng, 500)
    index = filled("numpy", matrix)
    for query in unit_rows(rng, 50):
        found = index.search(b"s", query, 7)
        assert [ident for ident, _ in found] == exact_top(matrix, list(range(500)), query, 7)
        expected = matrix[[ident for ident, _ in found]] @ query
        np.testing.assert_allclose([similarity for _, similarity in found], expected, rtol=1e-5)


def test_usearch_recall_at_1_against_exact() -> None:
    rng = np.random.default_rng(2)
    matrix = unit_rows(rng, 2000)
    index = filled("usearch", matrix)
    queries = unit_rows(rng, 200)  # fresh vectors: harder than stored ones
    hits = sum(
        index.search(b"s", query, 1)[0][0] == exact_top(matrix, list(range(2000)), query, 1)[0]
        for query in queries
    )
    assert hits / len(queries) >= 0.95
    ident, similarity = index.search(b"s", matrix[42], 1)[0]
    assert ident == 42
    assert similarity == pytest.approx(1.0, abs=1e-5)  # a similarity, not usearch's distance


@pytest.mark.parametrize("backend", ["numpy", "usearch"])
def test_scopes_never_leak_into_each_other(backend: Backend) -> None:
    matrix = unit_rows(np.random.default_rng(3), 40)
    index = ScopedIndex(DIM, backend=backend)
    for ident, vector in enumerate(matrix):
        index.add(b"a" if ident < 20 else b"b", ident, vector)
    for vector in matrix:
        assert {ident for ident, _ in index.search(b"a", vector, 40)} <= set(range(20))
        assert {ident for ident, _ in index.search(b"b", vector, 40)} <= set(range(20, 40))
    assert index.search(b"c", matrix[0], 3) == []
    assert (index.scope_size(b"a"), index.scope_size(b"b"), index.scope_size(b"c")) == (20, 20, 0)


def test_remove_forgets_and_its_slot_is_reused() -> None:
    matrix = unit_rows(np.random.default_rng(4), 17)
    index = filled("numpy", matrix[:16])  # exactly the first block's rows
    full = index.nbytes
    assert index.remove(3)
    assert not index.remove(3)
    assert not index.remove(999)
    index.add(b"s", 16, matrix[16])
    assert index.nbytes == full  # the freed row took the newcomer: nothing grew
    assert len(index) == index.scope_size(b"s") == 16
    assert index.search(b"s", matrix[16], 1)[0][0] == 16
    assert 3 not in {ident for ident, _ in index.search(b"s", matrix[3], 16)}


@pytest.mark.parametrize("backend", ["numpy", "usearch"])
def test_adding_an_ident_again_replaces_it_even_across_scopes(backend: Backend) -> None:
    first, second = unit_rows(np.random.default_rng(5), 2)
    index = ScopedIndex(DIM, backend=backend)
    index.add(b"a", 1, first)
    index.add(b"a", 2, first)
    index.add(b"a", 1, second)
    assert index.search(b"a", second, 1)[0][0] == 1
    index.add(b"b", 1, first)
    assert len(index) == 2
    assert [ident for ident, _ in index.search(b"a", first, 5)] == [2]
    assert index.search(b"b", first, 5)[0][0] == 1


def test_the_switch_to_usearch_happens_at_exact_below_and_back_when_it_shrinks() -> None:
    matrix = unit_rows(np.random.default_rng(6), 60)
    index = filled("auto", matrix[:49], exact_below=50)
    assert "on_usearch=0" in repr(index)
    index.add(b"s", 49, matrix[49])
    assert "on_usearch=0, moving=1" in repr(index)  # the graph fills 8 vectors per add
    assert index.search(b"s", matrix[7], 1)[0][0] == 7
    index.remove(7)  # leaves the vectors still to move, and the graph never sees it
    index.add(b"s", 7, matrix[7])
    for ident in range(50, 55):  # 6 adds move 48 of the 49 left
        index.add(b"s", ident, matrix[ident])
    assert "on_usearch=0, moving=1" in repr(index)
    for ident in range(55, 60):
        index.add(b"s", ident, matrix[ident])
    assert "on_usearch=1, moving=0" in repr(index)
    for ident, vector in enumerate(matrix):  # every vector is its own nearest, across the switch
        assert index.search(b"s", vector, 1)[0][0] == ident
    for ident in range(31):  # more holes than live vectors: rebuilt, and small again
        index.remove(ident)
    assert "on_usearch=0" in repr(index)
    live = list(range(31, 60))
    for query in unit_rows(np.random.default_rng(7), 20):
        found = [ident for ident, _ in index.search(b"s", query, 5)]
        assert found == exact_top(matrix[live], live, query, 5)


def test_a_hollow_usearch_scope_is_rebuilt_and_stays_right() -> None:
    matrix = unit_rows(np.random.default_rng(8), 100)
    index = filled("usearch", matrix)
    before = index.nbytes
    for ident in range(80):
        index.remove(ident)
    assert "moving=1" in repr(index)  # more holes than vectors: a fresh graph, filled per add
    for ident in range(80, 100):
        assert index.search(b"s", matrix[ident], 1)[0][0] == ident
    for ident in range(3):  # 3 adds move 3 x 8 >= the 20 left
        index.add(b"s", ident, matrix[ident])
    assert "on_usearch=1, moving=0" in repr(index)
    assert index.nbytes <= before
    for ident in [*range(3), *range(80, 100)]:
        assert index.search(b"s", matrix[ident], 1)[0][0] == ident


@pytest.mark.parametrize("backend", ["numpy", "usearch"])
def test_nbytes_grows_with_entries_and_never_grows_on_removal(backend: Backend) -> None:
    matrix = unit_rows(np.random.default_rng(9), 300)
    index = ScopedIndex(DIM, backend=backend)
    empty = index.nbytes
    index.add(b"s", 0, matrix[0])
    one = index.nbytes
    assert one > empty
    for ident in range(1, 300):
        index.add(b"s", ident, matrix[ident])
    assert index.nbytes > one if backend == "numpy" else index.nbytes >= one
    assert index.nbytes >= 300 * DIM * 4  # at least the vectors themselves
    full = previous = index.nbytes
    for ident in range(299):
        index.remove(ident)
        assert index.nbytes <= previous
        previous = index.nbytes
    if backend == "numpy":  # the matrix shrank back (usearch keeps its arena until dropped)
        assert index.nbytes < full / 4
    index.clear()
    assert (len(index), index.nbytes) == (0, empty)


def test_empty_scopes_are_dropped() -> None:
    vector = unit_rows(np.random.default_rng(10), 1)[0]
    index = ScopedIndex(DIM)
    empty = index.nbytes
    for ident in range(1000):
        index.add(f"scope {ident}".encode(), ident, vector)
        index.remove(ident)
    assert "scopes=0" in repr(index)
    assert index.nbytes < empty + 1024  # a leaked scope alone would hold 16 rows of 128 bytes


def test_bad_vectors_and_bad_k_are_refused() -> None:
    index = ScopedIndex(4)
    good = np.full(4, 0.5, dtype=np.float32)
    wrong: list[npt.NDArray[Any]] = [np.ones(5, np.float32), np.ones((1, 4), np.float32)]
    for bad in [*wrong, good.astype(np.float64)]:
        with pytest.raises(ValueError, match=r"shape \(4,\)"):
            index.add(b"s", 1, bad)
        with pytest.raises(ValueError, match=r"shape \(4,\)"):
            index.search(b"s", bad, 1)
    with pytest.raises(ValueError, match="k must be"):
        index.search(b"s", good, 0)
    with pytest.raises(ValueError, match="ident"):
        index.add(b"s", -1, good)
    assert len(index) == 0


def test_without_usearch_small_scopes_work_and_big_ones_say_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "usearch.index", None)  # makes the import fail
    matrix = unit_rows(np.random.default_rng(11), 3)
    index = filled("auto", matrix[:2], exact_below=3)
    assert index.search(b"s", matrix[0], 1)[0][0] == 0
    with pytest.raises(ImportError, match=r"pip install 'overdrive\[semantic\]'"):
        index.add(b"s", 2, matrix[2])


_OPS = st.lists(
    st.tuples(st.booleans(), st.integers(0, 2), st.integers(0, 40)), min_size=1, max_size=120
)


@settings(max_examples=60, deadline=None)
@given(_OPS)
def test_numpy_backend_matches_a_dict_of_vectors(ops: list[tuple[bool, int, int]]) -> None:
    """Any run of adds and removes leaves exactly the vectors a plain dict would hold."""
    vectors = unit_rows(np.random.default_rng(12), 41)
    index = ScopedIndex(DIM, backend="numpy")
    model: dict[int, tuple[bytes, int]] = {}
    for add, scope_number, ident in ops:
        scope = bytes([scope_number])
        if add:
            index.add(scope, ident, vectors[(ident + scope_number) % 41])
            model[ident] = (scope, (ident + scope_number) % 41)
        else:
            assert index.remove(ident) == (model.pop(ident, None) is not None)
    assert len(index) == len(model)
    for scope in (b"\0", b"\1", b"\2"):
        members = [ident for ident, (where, _) in model.items() if where == scope]
        assert index.scope_size(scope) == len(members)
        if members:
            got = index.search(scope, vectors[0], 41)  # all of them: ties cannot reorder a set
            assert sorted(ident for ident, _ in got) == sorted(members)
            scores = [similarity for _, similarity in got]
            assert scores == sorted(scores, reverse=True)
            expected = [float(vectors[model[ident][1]] @ vectors[0]) for ident, _ in got]
            np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-6)


@settings(max_examples=40, deadline=None)
@given(_OPS)
def test_auto_backend_keeps_every_vector_findable_across_switches(
    ops: list[tuple[bool, int, int]],
) -> None:
    """Scopes cross exact_below both ways (moving, on usearch, rebuilt, exact again)."""
    vectors = unit_rows(np.random.default_rng(13), 41)
    index = ScopedIndex(DIM, exact_below=6)
    model: dict[int, bytes] = {}
    for add, scope_number, ident in ops:
        if add:
            index.add(bytes([scope_number]), ident, vectors[ident])
            model[ident] = bytes([scope_number])
        else:
            assert index.remove(ident) == (model.pop(ident, None) is not None)
    assert len(index) == len(model)
    for ident, scope in model.items():
        assert index.search(scope, vectors[ident], 1)[0][0] == ident
    for scope_number in range(3):
        scope = bytes([scope_number])
        assert index.scope_size(scope) == sum(where == scope for where in model.values())
