"""Unit vectors grouped by scope; nearest neighbours by cosine similarity within one scope.

A scope (one model and its parameters, say) starts small, and a small scope is
cheapest searched exactly: its vectors sit in one float32 matrix and a query is
one ``matrix @ vector``. That cost grows with the scope, a graph's (usearch's
HNSW) with its logarithm, so at ``exact_below`` vectors a scope moves to a
usearch index (filled a few vectors per add, searched exactly until then), and
back to a matrix if it shrinks below half its peak.

>>> import numpy as np
>>> index = ScopedIndex(3, exact_below=1000)
>>> index.add(b"gpt", 1, np.array([1.0, 0.0, 0.0], dtype=np.float32))
>>> index.add(b"gpt", 2, np.array([0.0, 1.0, 0.0], dtype=np.float32))
>>> index.add(b"claude", 3, np.array([0.6, 0.8, 0.0], dtype=np.float32))
>>> query = np.array([0.6, 0.8, 0.0], dtype=np.float32)
>>> [(ident, round(similarity, 2)) for ident, similarity in index.search(b"gpt", query, k=5)]
[(2, 0.8), (1, 0.6)]
>>> index.remove(2), index.search(b"gpt", query, k=1)[0][0], index.scope_size(b"gpt")
(True, 1, 1)
>>> index
ScopedIndex(dim=3, entries=2, scopes=2, on_usearch=0, moving=0, exact_below=1000, backend='auto')
"""

from __future__ import annotations

import importlib
import sys
from typing import Literal, Protocol

import numpy as np
import numpy.typing as npt

__all__ = ["EXACT_BELOW", "ScopedIndex"]

Vector = npt.NDArray[np.float32]
Backend = Literal["auto", "numpy", "usearch"]

# From `python benchmarks/bench_vector_index.py` (dim 384, top-5, clustered vectors, one
# BLAS thread): usearch's single-query p99 beat numpy brute force from 6,144 (a tie), 8,192,
# 8,192 and 16,384 (under load) vectors on in four runs on a shared 2-core box: the median.
# Below it, exact search also wins on recall (1.0), adds (~3 µs, not ~0.5 ms) and memory.
EXACT_BELOW = 8192

_INITIAL_ROWS = 16
# Vectors moved into a new graph per add: one graph insert costs up to ~1 ms at dim 384, and a
# batch of 8,192 took 6.7 s on a 2-core box, a stall no add on an event loop may cause.
_MOVE_STEP = 8
_INT_BYTES = sys.getsizeof(2**40)  # an ident or a row number: one int object per entry
_MAX_IDENT = 2**63  # idents are stored as int64 (numpy) and uint64 (usearch keys)
_INSTALL_HINT = (
    "a scope of exact_below vectors or more (or backend='usearch') needs usearch: "
    "pip install 'overdrive[semantic]'"
)


class _Matches(Protocol):
    keys: npt.NDArray[np.uint64]
    distances: npt.NDArray[np.float32]


class _Keys(Protocol):
    def __getitem__(self, rows: slice, /) -> npt.NDArray[np.uint64]: ...


class _Graph(Protocol):
    """The part of ``usearch.index.Index`` used here (typed without importing usearch)."""

    def add(self, keys: int | npt.NDArray[np.uint64], vectors: Vector) -> object: ...
    def remove(self, keys: int) -> object: ...
    def search(self, vectors: Vector, count: int) -> _Matches: ...
    def __len__(self) -> int: ...
    def get(self, keys: npt.NDArray[np.uint64]) -> tuple[Vector, ...]: ...
    @property
    def keys(self) -> _Keys: ...
    @property
    def memory_usage(self) -> int: ...


class _GraphFactory(Protocol):
    def __call__(self, *, ndim: int, metric: str, dtype: str) -> _Graph: ...


def _usearch() -> _GraphFactory:
    # Imported only when a scope needs it, so numpy-only use runs without usearch.
    try:
        module = importlib.import_module("usearch.index")
    except ModuleNotFoundError as exc:
        raise ImportError(_INSTALL_HINT) from exc
    factory: _GraphFactory = module.Index
    return factory


class _Exact:
    """One scope's vectors as matrix rows, searched by brute force (exact)."""

    __slots__ = ("_count", "_idents", "_matrix", "_row_of")

    def __init__(self, dim: int, rows: int = _INITIAL_ROWS) -> None:
        self._matrix: Vector = np.empty((rows, dim), dtype=np.float32)
        self._idents: npt.NDArray[np.int64] = np.empty(rows, dtype=np.int64)
        self._row_of: dict[int, int] = {}
        self._count = 0

    def __len__(self) -> int:
        return self._count

    @property
    def nbytes(self) -> int:
        extra = sys.getsizeof(self._row_of) + self._count * _INT_BYTES
        return self._matrix.nbytes + self._idents.nbytes + extra

    def add(self, ident: int, vector: Vector) -> None:
        if self._count == len(self._idents):
            self._resize(2 * self._count)  # geometric: amortised O(1) per add
        row = self._count
        self._matrix[row] = vector
        self._idents[row] = ident
        self._row_of[ident] = row
        self._count += 1

    def remove(self, ident: int) -> None:
        row = self._row_of.pop(ident)
        last = self._count - 1
        if row != last:  # the last row fills the hole: live rows stay contiguous
            self._matrix[row] = self._matrix[last]
            moved = int(self._idents[last])
            self._idents[row] = moved
            self._row_of[moved] = row
        self._count = last
        if len(self._idents) > _INITIAL_ROWS and self._count * 4 <= len(self._idents):
            self._resize(2 * self._count)  # give memory back, with room before the next growth
            self._row_of = dict(self._row_of)  # a dict never shrinks on its own: a copy does

    def search(self, vector: Vector, k: int) -> list[tuple[int, float]]:
        scores = self._matrix[: self._count] @ vector
        if k < self._count:
            best = np.argpartition(scores, self._count - k)[self._count - k :]
        else:
            best = np.arange(self._count)
        best = best[np.argsort(-scores[best], kind="stable")]
        return list(zip(self._idents[best].tolist(), scores[best].tolist(), strict=True))

    @classmethod
    def of_rows(cls, idents: npt.NDArray[np.int64], matrix: Vector) -> _Exact:
        block = cls(matrix.shape[1], rows=2 * len(idents))
        block._matrix[: len(idents)] = matrix
        block._idents[: len(idents)] = idents
        block._row_of = dict(zip(idents.tolist(), range(len(idents)), strict=True))
        block._count = len(idents)
        return block

    def rows(self) -> tuple[npt.NDArray[np.int64], Vector]:
        return self._idents[: self._count], self._matrix[: self._count]

    def get(self, ident: int) -> Vector | None:
        row = self._row_of.get(ident)
        return None if row is None else self._matrix[row]

    def _resize(self, rows: int) -> None:
        rows = max(rows, _INITIAL_ROWS)
        matrix = np.empty((rows, self._matrix.shape[1]), dtype=np.float32)
        idents = np.empty(rows, dtype=np.int64)
        matrix[: self._count] = self._matrix[: self._count]
        idents[: self._count] = self._idents[: self._count]
        self._matrix, self._idents = matrix, idents


class _Approximate:
    """One scope's vectors in a usearch HNSW graph (approximate, sublinear search)."""

    __slots__ = ("_graph", "_holes")

    def __init__(self, graph: _Graph, holes: int = 0) -> None:
        self._graph = graph
        # usearch only marks a removed key: holes slow searches until an add fills them.
        self._holes = holes

    def __len__(self) -> int:
        return len(self._graph)

    @property
    def nbytes(self) -> int:
        # memory_usage counts usearch's arena, reserved in 16 MiB steps: an upper bound.
        return self._graph.memory_usage

    @property
    def hollow(self) -> bool:
        """More holes than live vectors: time to rebuild (amortised over the removals)."""
        return self._holes > len(self._graph)

    def add(self, ident: int, vector: Vector) -> None:
        self._graph.add(ident, vector)
        self._holes = max(0, self._holes - 1)

    def remove(self, ident: int) -> None:
        self._graph.remove(ident)
        self._holes += 1

    def search(self, vector: Vector, k: int) -> list[tuple[int, float]]:
        found = self._graph.search(vector, min(k, len(self._graph)))
        similarities = 1.0 - found.distances  # usearch's "cos" metric is a distance
        return list(zip(found.keys.tolist(), similarities.tolist(), strict=True))

    def rows(self) -> tuple[npt.NDArray[np.int64], Vector]:
        # A slice, not np.asarray(keys) or .vectors: their __array__ warns on numpy 2.
        keys = self._graph.keys[0 : len(self._graph)]
        vectors = np.vstack(self._graph.get(keys)) if len(keys) else np.empty((0, 0), np.float32)
        return keys.astype(np.int64), vectors


class _Moving:
    """A scope on its way into a graph: searched exactly until the graph holds all of it.

    New vectors go into both; each add also moves ``_MOVE_STEP`` old ones, so the move
    is done by the time the scope has grown by an eighth, and no add pays for all of it.
    """

    __slots__ = ("_exact", "_graph", "_holes", "_order", "_pending")

    def __init__(self, exact: _Exact, graph: _Graph) -> None:
        self._exact = exact
        self._graph = graph
        self._order = exact.rows()[0].tolist()  # popped from the end: O(1) a step
        self._pending = set(self._order)  # still to move; an ident removed meanwhile leaves it
        self._holes = 0

    def __len__(self) -> int:
        return len(self._exact)

    @property
    def nbytes(self) -> int:
        pending = sys.getsizeof(self._order) + sys.getsizeof(self._pending)
        pending += len(self._order) * _INT_BYTES  # tolist() made an int object per ident
        return self._exact.nbytes + self._graph.memory_usage + pending

    @property
    def exact(self) -> _Exact:
        return self._exact

    @property
    def done(self) -> bool:
        return not self._pending

    def finished(self) -> _Approximate:
        return _Approximate(self._graph, self._holes)

    def add(self, ident: int, vector: Vector) -> None:
        self._exact.add(ident, vector)
        self._graph.add(ident, vector)
        for _ in range(_MOVE_STEP):
            self._move_one()

    def remove(self, ident: int) -> None:
        self._exact.remove(ident)
        if ident in self._pending:
            self._pending.discard(ident)
        else:
            self._graph.remove(ident)
            self._holes += 1

    def search(self, vector: Vector, k: int) -> list[tuple[int, float]]:
        return self._exact.search(vector, k)

    def _move_one(self) -> None:
        while self._order:
            ident = self._order.pop()
            vector = self._exact.get(ident) if ident in self._pending else None
            if vector is not None:
                self._pending.discard(ident)
                self._graph.add(ident, vector)
                return


_Block = _Exact | _Moving | _Approximate


class ScopedIndex:
    """Unit vectors grouped by scope; nearest neighbours by cosine similarity within one scope.

    ``backend="auto"`` searches a scope exactly while it holds fewer than
    ``exact_below`` vectors and with usearch from then on (once the graph, filled
    a few vectors per add, holds them all); ``"numpy"`` always exactly,
    ``"usearch"`` always with usearch. Idents are unique across scopes: adding
    one again replaces its vector (and its scope). Not thread-safe.
    """

    __slots__ = ("_backend", "_blocks", "_dim", "_exact_below", "_graph_factory", "_scope_of")

    def __init__(
        self, dim: int, *, exact_below: int = EXACT_BELOW, backend: Backend = "auto"
    ) -> None:
        if dim < 1 or exact_below < 1:
            raise ValueError(f"dim and exact_below must be >= 1, not {dim} and {exact_below}")
        if backend not in ("auto", "numpy", "usearch"):
            raise ValueError(f"backend must be 'auto', 'numpy' or 'usearch', not {backend!r}")
        self._dim = dim
        self._exact_below = exact_below
        self._backend: Backend = backend
        self._blocks: dict[bytes, _Block] = {}
        self._scope_of: dict[int, bytes] = {}
        self._graph_factory: _GraphFactory | None = None

    def add(self, scope: bytes, ident: int, vector: Vector) -> None:
        """Store ``vector`` (shape ``(dim,)``, float32, unit norm) as ``ident`` in ``scope``."""
        self._check(vector)
        if not 0 <= ident < _MAX_IDENT:
            raise ValueError(f"ident must be in [0, 2**63), not {ident}")
        self.remove(ident)
        block = self._blocks.get(scope)
        if block is None:
            block = self._blocks[scope] = self._new_block()
        block.add(ident, vector)
        self._scope_of[ident] = scope
        if isinstance(block, _Exact) and self._outgrown(block):
            self._blocks[scope] = _Moving(block, self._new_graph())
        elif isinstance(block, _Moving) and block.done:
            self._blocks[scope] = block.finished()

    def remove(self, ident: int) -> bool:
        """Forget ``ident``; True if it was there."""
        scope = self._scope_of.pop(ident, None)
        if scope is None:
            return False
        block = self._blocks[scope]
        block.remove(ident)
        if not len(block):
            del self._blocks[scope]  # entries come and go: an empty scope must not linger
        elif isinstance(block, _Approximate) and block.hollow:
            self._blocks[scope] = self._rebuilt(block)
        elif isinstance(block, _Moving) and self._shrunk(block):
            self._blocks[scope] = block.exact  # shrank on the way: the graph is not worth it
        return True

    def search(self, scope: bytes, vector: Vector, k: int) -> list[tuple[int, float]]:
        """Up to ``k`` ``(ident, cosine similarity)`` of ``scope``, the most similar first."""
        self._check(vector)
        if k < 1:
            raise ValueError(f"k must be >= 1, not {k}")
        block = self._blocks.get(scope)
        return [] if block is None else block.search(vector, k)

    def scope_size(self, scope: bytes) -> int:
        """How many vectors ``scope`` holds (0 for an unknown scope)."""
        block = self._blocks.get(scope)
        return 0 if block is None else len(block)

    def __len__(self) -> int:
        return len(self._scope_of)

    @property
    def nbytes(self) -> int:
        """Bytes taken: the matrices, the usearch indexes and the ident bookkeeping."""
        bookkeeping = sys.getsizeof(self._scope_of) + sys.getsizeof(self._blocks)
        bookkeeping += len(self._scope_of) * _INT_BYTES
        bookkeeping += sum(sys.getsizeof(scope) for scope in self._blocks)
        return bookkeeping + sum(block.nbytes for block in self._blocks.values())

    def clear(self) -> None:
        """Forget every vector and scope."""
        self._blocks.clear()
        self._scope_of.clear()

    def __repr__(self) -> str:
        blocks = self._blocks.values()
        on_usearch = sum(isinstance(block, _Approximate) for block in blocks)
        moving = sum(isinstance(block, _Moving) for block in blocks)
        return (
            f"ScopedIndex(dim={self._dim}, entries={len(self)}, scopes={len(self._blocks)}, "
            f"on_usearch={on_usearch}, moving={moving}, exact_below={self._exact_below}, "
            f"backend={self._backend!r})"
        )

    # -- the blocks ----------------------------------------------------------------

    def _check(self, vector: Vector) -> None:
        shape, dtype = getattr(vector, "shape", None), getattr(vector, "dtype", None)
        if shape != (self._dim,) or dtype != np.float32:
            raise ValueError(
                f"expected a float32 vector of shape ({self._dim},), got {dtype} of shape {shape}"
            )

    def _new_block(self) -> _Block:
        if self._backend == "usearch":
            return _Approximate(self._new_graph())
        return _Exact(self._dim)

    def _outgrown(self, block: _Exact) -> bool:
        return self._backend == "auto" and len(block) >= self._exact_below

    def _shrunk(self, block: _Moving) -> bool:
        return self._backend == "auto" and 2 * len(block) < self._exact_below

    def _rebuilt(self, block: _Approximate) -> _Block:
        exact = _Exact.of_rows(*block.rows())  # one copy of the rows: milliseconds, no graph
        if self._backend == "usearch" or len(exact) >= self._exact_below:
            return _Moving(exact, self._new_graph())  # a fresh graph, filled a step per add
        return exact  # shrunk below half its peak and below exact_below

    def _new_graph(self) -> _Graph:
        if self._graph_factory is None:
            self._graph_factory = _usearch()
        return self._graph_factory(ndim=self._dim, metric="cos", dtype="f32")
