"""The semantic tier: cached questions by meaning, each pointing at an answer in the exact tiers.

An entry is a question (the last user text of a call), its vector, its
*scope* (the rest of the call's key, which must match exactly), the exact
key its answer is stored under, and when it expires. A lookup:

1. reads the entries other processes shared (when a Redis is configured);
2. returns at once when the scope holds no entry: nothing is embedded, so a
   call in a new conversation costs a dictionary lookup; nor when no entry
   shares enough of the question's content words to pass the guard's
   content gate (see ``_words.py``); nor while the model is still loading (a
   miss, not seconds of waiting: see :meth:`warm`);
3. embeds the question (batched with concurrent lookups), finds the
   ``candidates`` nearest entries of its scope, and returns those the guard
   passes, best first. The caller serves the first whose answer is still
   in the exact tiers, and :meth:`forget` s the others.

Entries are bounded by ``max_entries`` and by ``memory`` bytes (questions,
vectors and the index, counted as they are added); the oldest go first.
They expire with their answers. Remembering runs in the background: the
caller who fetched the answer never waits for it.

>>> import asyncio, numpy as np
>>> from overdrive.cache.semantic import BatchedEncoder, Guard
>>> def encode(texts):  # a toy model: questions about the same word point the same way
...     return np.array([[t.count("capital"), t.count("weather"), 0.1] for t in texts],
...                     dtype=np.float32)
>>> async def main():
...     tier = SemanticTier(BatchedEncoder(encode, name="toy"), Guard(0.9))
...     probe = tier.probe(b"scope", "What is the capital of France?")
...     tier.remember(probe, b"answer-key", ttl=60)
...     await tier.settle()
...     found = await tier.lookup(tier.probe(b"scope", "Tell me the capital of France."))
...     await tier.aclose()
...     return [(c.key, round(c.similarity, 2)) for c in found]
>>> asyncio.run(main())
[(b'answer-key', 1.0)]
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from ..._errors import CacheError
from .._sizeof import deep_sizeof
from ._embed import Embedder, Vectors
from ._facts import Facts, facts_of
from ._guard import Guard
from ._index import ScopedIndex
from ._shared import Record, SharedLog
from ._words import ContentWords

__all__ = ["Candidate", "IndexBackend", "Outcomes", "Probe", "SemanticTier"]

IndexBackend = Literal["auto", "numpy", "usearch"]

# What one entry costs beside the deep size of its question and keys
# (and its vector, which the index counts): the entry object and the two maps
# that find it.
_ENTRY_OVERHEAD = 300


@dataclass(slots=True, frozen=True)
class Candidate:
    """An entry the guard passed: the exact ``key`` of its answer, and how close it was."""

    ident: int
    key: bytes
    similarity: float
    text: str


@dataclass(slots=True)
class Probe:
    """A question being looked up: kept so the answer fetched for it can be remembered."""

    scope: bytes
    text: str
    vector: Vectors | None = None
    facts: Facts | None = None


@dataclass(slots=True)
class _Entry:
    scope: bytes
    key: bytes
    text: str
    expires_at: float
    size: int = field(default=0)


@dataclass(slots=True)
class Outcomes:
    """What lookups came to: served, missed, refused by a check (by name), or skipped."""

    hits: int = 0
    misses: int = 0
    empty_scope: int = 0
    skipped: int = 0
    refused: dict[str, int] = field(default_factory=dict)


class SemanticTier:
    """Questions by meaning within a scope; see the module docstring for a lookup's steps."""

    __slots__ = (
        "_by_key",
        "_bytes",
        "_catching",
        "_dim",
        "_entries",
        "_ids",
        "_index",
        "_index_backend",
        "_pending",
        "_wall",
        "_words",
        "candidates",
        "embedder",
        "errors",
        "guard",
        "max_chars",
        "max_entries",
        "memory",
        "on_error",
        "outcomes",
        "shared",
    )

    def __init__(
        self,
        embedder: Embedder,
        guard: Guard,
        *,
        candidates: int = 4,
        max_chars: int = 600,
        memory: int = 32 << 20,
        max_entries: int = 100_000,
        index: IndexBackend = "auto",
        shared: SharedLog | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.embedder = embedder
        self.guard = guard
        self.candidates = candidates
        self.max_chars = max_chars
        self.memory = memory
        self.max_entries = max_entries
        self.shared = shared
        self.outcomes = Outcomes()
        self.errors = 0
        # Told of every failure (embedding, Redis) the tier shrugged off.
        self.on_error: Callable[[CacheError], None] | None = None
        self._index_backend: IndexBackend = index
        self._index: ScopedIndex | None = None  # made at the first vector: it knows the size
        self._dim: int | None = None
        self._catching: asyncio.Future[None] | None = None
        self._words = ContentWords()
        self._entries: OrderedDict[int, _Entry] = OrderedDict()  # oldest first
        self._by_key: dict[tuple[bytes, bytes], int] = {}
        self._ids = itertools.count(1)
        self._bytes = 0
        self._pending: set[asyncio.Task[None]] = set()
        self._wall = wall

    # -- lookup ------------------------------------------------------------------

    def probe(self, scope: bytes, text: str) -> Probe | None:
        """A probe for ``text`` in ``scope``; None when the text is too long to be matched."""
        return Probe(scope, text) if len(text) <= self.max_chars else None

    async def lookup(self, probe: Probe) -> list[Candidate]:
        """The entries of the probe's scope that the guard passes, nearest first."""
        await self._catch_up()
        index = self._index
        if index is None or not index.scope_size(probe.scope):
            self.outcomes.empty_scope += 1
            return []
        if not self._may_pass(probe):  # no entry shares its words: the guard would refuse all
            self.outcomes.refused["content"] = self.outcomes.refused.get("content", 0) + 1
            self.outcomes.misses += 1
            return []
        if not self.embedder.ready:  # the model is loading: a miss now beats seconds of waiting
            self.outcomes.skipped += 1
            return []
        try:
            vector = await self._vector_of(probe)
        except CacheError as exc:  # the embedder is busy or failed: a miss, not an error
            self.outcomes.skipped += 1
            self._failed(exc)
            return []
        if int(vector.shape[0]) != self._dim:  # the index came from records of another size
            self.clear()
            self.outcomes.misses += 1
            return []
        return self._judged(probe, index.search(probe.scope, vector, self.candidates))

    def _judged(self, probe: Probe, nearest: list[tuple[int, float]]) -> list[Candidate]:
        now = self._wall()
        passed: list[Candidate] = []
        for ident, similarity in nearest:
            entry = self._entries.get(ident)
            if entry is None or entry.expires_at <= now:
                self.forget(ident)
                continue
            refusal = self._judge(probe, similarity, entry.text)
            if refusal is None:
                passed.append(Candidate(ident, entry.key, similarity, entry.text))
            else:
                refused = self.outcomes.refused
                refused[refusal] = refused.get(refusal, 0) + 1
        if not passed:
            self.outcomes.misses += 1
        return passed

    async def warm(self) -> None:
        """Wait until the embedding model is loaded (it loads in the background from the start)."""
        await self.embedder.wait_ready()

    def _may_pass(self, probe: Probe) -> bool:
        """False when no entry of the scope could pass the content gate: nothing to embed for."""
        guard = self.guard
        if "content" not in guard.checks:
            return True
        if probe.facts is None:
            probe.facts = facts_of(probe.text)
        return self._words.could_pass(probe.scope, probe.facts.content, guard.max_content_change)

    def _judge(self, probe: Probe, similarity: float, cached: str) -> str | None:
        """The guard's verdict; facts are drawn only for a candidate similar enough.

        An entry keeps its question, not its facts: drawing them again costs
        tens of microseconds for the few candidates a lookup judges, and
        keeping them would cost kilobytes for every entry.
        """
        if similarity < self.guard.threshold:
            return "similarity"
        if probe.facts is None:
            probe.facts = facts_of(probe.text)
        return self.guard.judge(similarity, probe.facts, facts_of(cached))

    def served(self) -> None:
        """A candidate's answer was served: count the hit."""
        self.outcomes.hits += 1

    async def _vector_of(self, probe: Probe) -> Vectors:
        if probe.vector is None:
            probe.vector = (await self.embedder.embed([probe.text]))[0]
        return probe.vector

    # -- remember and forget -----------------------------------------------------

    def remember(self, probe: Probe, key: bytes, ttl: float) -> None:
        """Index ``probe``'s question for the answer stored under ``key`` (in the background)."""
        task = asyncio.ensure_future(self._remember(probe, key, ttl))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _remember(self, probe: Probe, key: bytes, ttl: float) -> None:
        try:
            vector = await self._vector_of(probe)
        except CacheError as exc:
            self._failed(exc)
            return
        expires_at = self._wall() + ttl
        if probe.facts is None:
            probe.facts = facts_of(probe.text)
        self._add(probe.scope, key, probe.text, probe.facts.content, vector, expires_at, local=True)
        if self.shared is not None:
            record = Record(probe.scope, key, probe.text, vector, expires_at)
            await self._guarded(self.shared.publish(record))

    def _add(
        self,
        scope: bytes,
        key: bytes,
        text: str,
        words: frozenset[str],
        vector: Vectors,
        expires: float,
        *,
        local: bool,
    ) -> None:
        index = self._index_for(vector, local=local)
        if index is None:  # a shared record of another size than this model's vectors
            return
        old = self._by_key.get((scope, key))
        if old is not None:
            self.forget(old)
        ident = next(self._ids)
        entry = _Entry(scope, key, text, expires)
        # Each content word also costs a slot in its word's set of entries.
        entry.size = _ENTRY_OVERHEAD + deep_sizeof((scope, key, text, words)) + 64 * len(words)
        index.add(scope, ident, vector)
        self._words.add(scope, ident, words)
        self._entries[ident] = entry
        self._by_key[(scope, key)] = ident
        self._bytes += entry.size
        self._evict()

    def _index_for(self, vector: Vectors, *, local: bool) -> ScopedIndex | None:
        """The index for vectors of this size; this process's model decides the size.

        An index begun from shared records of another size (a writer with
        another model under the same name, or a damaged stream) is dropped
        when the first local vector says otherwise.
        """
        dim = int(vector.shape[0])
        if self._index is not None and dim != self._dim:
            if not local:
                return None
            self.clear()
        if self._index is None:
            self._dim = dim
            self._index = ScopedIndex(dim, backend=self._index_backend)
        return self._index

    def clear(self) -> None:
        """Forget every entry of this process (shared ones are read again only if new)."""
        self._entries.clear()
        self._by_key.clear()
        self._words.clear()
        self._bytes = 0
        self._index = None
        self._dim = None

    def forget(self, ident: int) -> None:
        """Drop an entry: it expired, or its answer is gone from the exact tiers."""
        entry = self._entries.pop(ident, None)
        if entry is None:
            return
        self._by_key.pop((entry.scope, entry.key), None)
        self._bytes -= entry.size
        self._words.remove(ident)
        if self._index is not None:
            self._index.remove(ident)

    def _evict(self) -> None:
        while self._entries and (
            len(self._entries) > self.max_entries or self.bytes_used > self.memory
        ):
            self.forget(next(iter(self._entries)))

    # -- sharing -----------------------------------------------------------------

    async def _catch_up(self) -> None:
        """Take up what other processes shared; concurrent lookups share one read."""
        if self.shared is None:
            return
        if self._catching is None or self._catching.done():
            self._catching = asyncio.ensure_future(self._read_shared(self.shared))
        await asyncio.shield(self._catching)

    async def _read_shared(self, shared: SharedLog) -> None:
        records = await self._guarded(shared.read_new(self._dim, self._wall))
        for record in records or ():
            self._add(
                record.scope,
                record.key,
                record.text,
                facts_of(record.text).content,
                record.vector,
                record.expires_at,
                local=False,
            )

    async def _guarded(self, work: Any) -> Any:
        try:
            return await work
        except CacheError as exc:
            self._failed(exc)
            return None

    def _failed(self, exc: CacheError) -> None:
        self.errors += 1
        if self.on_error is not None:
            self.on_error(exc)

    # -- lifecycle and figures -----------------------------------------------------

    async def settle(self) -> None:
        """Wait for background remembering (tests, shutdown)."""
        while self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)

    def forget_loop(self) -> None:
        self._pending.clear()
        self._catching = None
        forget = getattr(self.embedder, "forget_loop", None)
        if forget is not None:
            forget()
        if self.shared is not None:
            self.shared.forget_loop()

    async def close_idle(self) -> None:
        await self.settle()
        if self.shared is not None:
            await self._guarded(self.shared.close_idle())

    async def aclose(self) -> None:
        await self.settle()
        await self.embedder.aclose()
        if self.shared is not None:
            await self.shared.aclose()

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def bytes_used(self) -> int:
        """The entries (questions, keys) and the index with its vectors, in bytes."""
        return self._bytes + (0 if self._index is None else self._index.nbytes)

    def summary(self) -> dict[str, Any]:
        outcomes = self.outcomes
        return {
            "entries": len(self._entries),
            "bytes": self.bytes_used,
            "max_bytes": self.memory,
            "embedder": self.embedder.name,
            "hits": outcomes.hits,
            "misses": outcomes.misses,
            "empty_scope": outcomes.empty_scope,
            "skipped": outcomes.skipped,
            "refused": dict(outcomes.refused),
            "errors": self.errors,
        }

    def __repr__(self) -> str:
        return (
            f"SemanticTier(entries={len(self._entries)}, bytes={self.bytes_used}, "
            f"embedder={self.embedder.name!r}, shared={self.shared is not None})"
        )
