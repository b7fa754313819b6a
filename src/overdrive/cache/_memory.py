"""L1: an in-process cache bounded in bytes, with W-TinyLFU admission.

Layout (after Caffeine's published design, sized in bytes rather than entries)::

    new entry -> [ window LRU, 1% ] --candidate--> admission: sketch says candidate
                                                   is used more than the victims?
                 [ main: probation LRU  <->  protected LRU (80% of main) ]

Every write lands in the small window. Whatever falls out of it competes
with the coldest entries of main's probation segment: it gets in only if
the frequency sketch has seen it more often, so a one-pass scan of new keys
flows through the window without flushing the hot set. A hit in probation
promotes to protected; protected overflow demotes back to probation.

Hits stay cheap: ``get`` is a dict lookup, an expiry check and an append to
a read buffer. Reordering, frequency counting and even the hit statistic
happen when the buffer is drained (on writes, or when it fills), once per
distinct entry: a hot key read a hundred times between drains is counted and
moved once. A resident entry keeps its own hit count (capped and aged like a
sketch counter, but one integer to bump instead of four); the sketch holds
the history of every key and takes an entry's count back when it leaves, and
admission weighs the two together. Expiry is lazy: checked on read and at the
cold ends during eviction, with no timers and no scans.

It is one module because W-TinyLFU is one state: the segments, the sketch,
the read buffer and the byte counts change together on every write, and split
apart each hit would pay for passing that state between objects.
"""

from __future__ import annotations

import itertools
import math
import random
import sys
import time
from collections import Counter, OrderedDict
from collections.abc import Hashable, Iterable, Iterator
from dataclasses import dataclass
from typing import Generic, Literal, TypeVar

from .._clock import Clock, SystemClock
from ._sizeof import deep_sizeof
from ._sketch import MAX_COUNT, FrequencySketch, spread

__all__ = ["ENTRY_OVERHEAD", "CacheStats", "CachedItem", "MemoryCache", "Policy"]

V = TypeVar("V")
Policy = Literal["tinylfu", "lru"]

# Bytes of bookkeeping per entry when the cache sizes a value itself: the
# node object, its times and hash, and one slot in each of two hash tables
# (measured with tracemalloc at ~370 B on CPython 3.11). The key is added on
# top with ``sys.getsizeof``.
ENTRY_OVERHEAD = 400

_WINDOW_SHARE = 0.01  # of the byte budget; TinyLFU's recommended admission window
_PROTECTED_SHARE = 0.8  # of main: room for the proven-hot, the rest for probation
_READ_BUFFER = 512  # hits recorded before a forced drain; bounds the reordering lag
_WARM = 5  # a candidate at least this frequent may win a rare coin toss (see _admits)
_SKETCH_START = 64  # entries the sketch is first sized for; it grows with the cache


@dataclass(slots=True)
class CacheStats:
    """Counters since the cache was made. ``hit_ratio`` counts fresh hits only."""

    hits: int = 0
    misses: int = 0
    stale_hits: int = 0
    evictions: int = 0
    expirations: int = 0
    rejections: int = 0

    def hit_ratio(self) -> float:
        lookups = self.hits + self.stale_hits + self.misses
        return self.hits / lookups if lookups else 0.0


class CachedItem(Generic[V]):
    """One cached value with its clock times; read-only once stored.

    Fresh until ``expires_at``; then usable as stale (for
    stale-while-revalidate) until ``stale_until``.
    """

    __slots__ = ("expires_at", "stale_until", "tags", "value")

    def __init__(
        self, value: V, expires_at: float, stale_until: float, tags: tuple[str, ...]
    ) -> None:
        self.value = value
        self.expires_at = expires_at
        self.stale_until = stale_until
        self.tags = tags

    def fresh(self, now: float) -> bool:
        return now < self.expires_at

    def usable(self, now: float) -> bool:
        """Fresh, or stale but inside its serve-stale window."""
        return now < self.stale_until

    def __repr__(self) -> str:
        return (
            f"CachedItem(value={self.value!r}, expires_at={self.expires_at}, "
            f"stale_until={self.stale_until}, tags={self.tags})"
        )


_Queue = OrderedDict[Hashable, "_Node[V]"]


class _Node(CachedItem[V]):
    """A stored entry: the public item plus the cache's bookkeeping.

    ``queue`` is the segment holding the node, or None once it is gone, so a
    buffered read of a removed node is recognised and skipped. ``freq`` counts
    hits since it was stored, capped like a sketch counter and halved for each
    sketch aging since ``epoch`` (lazily: aging never walks the entries).
    """

    __slots__ = ("epoch", "freq", "hash", "key", "queue", "size")

    def __init__(
        self,
        key: Hashable,
        value: V,
        expires_at: float,
        stale_until: float,
        tags: tuple[str, ...],
        size: int,
    ) -> None:
        # The item's fields set here, not by CachedItem.__init__: one call less per write.
        self.value = value
        self.expires_at = expires_at
        self.stale_until = stale_until
        self.tags = tags
        self.key = key
        self.size = size
        self.hash = spread(hash(key))
        self.queue: _Queue[V] | None = None
        self.freq = 0
        self.epoch = 0  # any will do while freq is 0


class MemoryCache(Generic[V]):
    """Maps hashable keys to values within a byte budget; W-TinyLFU (default) or LRU.

    ``size=None`` sizes the value with :func:`deep_sizeof` plus
    :data:`ENTRY_OVERHEAD` and the key; an explicit ``size`` is charged as
    given, so callers that pass one should include their own overhead.

    >>> from overdrive.testing import FakeClock
    >>> clock = FakeClock()
    >>> cache: MemoryCache[dict[str, str]] = MemoryCache(1 << 20, clock)
    >>> cache.set("q", {"answer": "42"}, ttl=60, stale=30, tags=("model:a",))
    True
    >>> cache.get("q")
    {'answer': '42'}
    >>> clock.advance(61)
    >>> cache.get("q") is None, cache.get_entry("q").fresh(clock.now())
    (True, False)
    >>> cache.delete_tags(["model:a"])
    1
    """

    __slots__ = (
        "_bytes",
        "_clock",
        "_counted",
        "_data",
        "_max_bytes",
        "_max_entry",
        "_now",
        "_policy",
        "_probation",
        "_protected",
        "_protected_bytes",
        "_protected_max",
        "_random",
        "_reads",
        "_sketch",
        "_stats",
        "_tags",
        "_window",
        "_window_bytes",
        "_window_max",
    )

    def __init__(
        self,
        max_bytes: int,
        clock: Clock | None = None,
        *,
        policy: Policy = "tinylfu",
        max_entry_share: float = 0.25,
    ) -> None:
        if policy not in ("tinylfu", "lru"):
            raise ValueError(f"policy must be 'tinylfu' or 'lru', not {policy!r}")
        self._max_bytes = max_bytes
        self._max_entry = max_bytes * max_entry_share
        self._policy: Policy = policy
        self._clock = clock or SystemClock()
        # Bound once: the hit path reads the time on every call. The system clock
        # is a thin wrapper, so skip its Python frame and call the C function.
        self._now = time.monotonic if type(self._clock) is SystemClock else self._clock.now
        self._stats = CacheStats()
        self._data: dict[Hashable, _Node[V]] = {}
        self._tags: dict[str, set[Hashable]] = {}
        self._reads: list[_Node[V]] = []
        self._counted = 0  # leading buffered reads already in the statistics
        self._random = random.Random()
        self._init_segments(policy)

    def _init_segments(self, policy: Policy) -> None:
        lru = policy == "lru"
        # LRU is the window alone, as large as the budget, with no admission.
        self._window_max = self._max_bytes if lru else int(self._max_bytes * _WINDOW_SHARE)
        self._protected_max = int((self._max_bytes - self._window_max) * _PROTECTED_SHARE)
        self._sketch = None if lru else FrequencySketch(_SKETCH_START)
        self._window: _Queue[V] = OrderedDict()
        self._probation: _Queue[V] = OrderedDict()
        self._protected: _Queue[V] = OrderedDict()
        self._bytes = self._window_bytes = self._protected_bytes = 0

    # -- reads -------------------------------------------------------------------

    def get(self, key: Hashable) -> V | None:
        """The fresh value for ``key``, else None (the hot path: no reordering here)."""
        node = self._data.get(key)
        if node is not None and self._now() < node.expires_at:
            reads = self._reads
            reads.append(node)  # also the hit count: see _count_hits
            if len(reads) >= _READ_BUFFER:
                self._drain()
            return node.value
        self._missed(key, node)
        return None

    def get_entry(self, key: Hashable) -> CachedItem[V] | None:
        """The entry for ``key`` while fresh or inside its stale window, else None.

        A stale entry counts in ``stats.stale_hits``; check ``.fresh(now)``
        to decide whether to revalidate.
        """
        node = self._data.get(key)
        if node is not None:
            now = self._now()
            if now < node.expires_at:
                reads = self._reads
                reads.append(node)
                if len(reads) >= _READ_BUFFER:
                    self._drain()
                return node
            if now < node.stale_until:
                self._stale_hit(node)
                return node
        self._missed(key, node)
        return None

    def __contains__(self, key: object) -> bool:
        """True if ``key`` has a fresh value; a peek that touches no statistics."""
        node = self._data.get(key)
        return node is not None and self._now() < node.expires_at

    @property
    def stats(self) -> CacheStats:
        """Counters since the cache was made, buffered hits included."""
        self._count_hits()
        return self._stats

    def _count_hits(self) -> None:
        """Fold buffered reads into ``hits``: each one is a fresh hit unless counted already."""
        self._stats.hits += len(self._reads) - self._counted
        self._counted = len(self._reads)

    def _stale_hit(self, node: _Node[V]) -> None:
        self._count_hits()
        self._stats.stale_hits += 1
        self._counted += 1  # its read is buffered below, but it is not a fresh hit
        self._reads.append(node)
        if len(self._reads) >= _READ_BUFFER:
            self._drain()

    def _missed(self, key: Hashable, node: _Node[V] | None) -> None:
        self._stats.misses += 1
        if node is not None and self._now() >= node.stale_until:
            self._remove(node)
            self._stats.expirations += 1

    def _drain(self) -> None:
        """Replay buffered hits: count them and move each entry up its segment.

        Each distinct entry is handled once, with its number of hits and at the
        position of its latest one: the segments and counts end as they would
        after replaying every hit in turn, for a fraction of the work.
        """
        reads = self._reads
        if not reads:
            return
        self._count_hits()
        self._counted = 0
        # Built newest first, so each entry sits where it was last read; walked
        # backwards, that is oldest latest-read first.
        if self._sketch is None:
            self._reorder(reversed(dict.fromkeys(reversed(reads))))
        else:
            self._replay(self._sketch, Counter(reversed(reads)))
        reads.clear()
        self._demote_overflow()

    def _reorder(self, nodes: Iterable[_Node[V]]) -> None:
        probation = self._probation
        for node in nodes:
            queue = node.queue
            if queue is probation:
                self._promote(node)
            elif queue is not None:
                queue.move_to_end(node.key)

    def _replay(self, sketch: FrequencySketch, hits: Counter[_Node[V]]) -> None:
        """``_reorder`` fused with counting each entry's hits, as the sketch counts."""
        probation, resets = self._probation, sketch.resets
        added = 0
        for node, times in reversed(hits.items()):  # one loop: this is the price of hits
            queue = node.queue
            if queue is probation:
                self._promote(node)
            elif queue is not None:
                queue.move_to_end(node.key)
            else:  # gone since the read, its count already handed to the sketch
                sketch.restore(node.hash, times)
                added += times
                continue
            freq = node.freq
            if node.epoch != resets:
                freq = node.freq = freq >> (resets - node.epoch)
                node.epoch = resets
            if freq < MAX_COUNT:
                freq = freq + times if freq + times < MAX_COUNT else MAX_COUNT
                added += freq - node.freq
                node.freq = freq
        sketch.tally(added)

    def _frequency(self, node: _Node[V]) -> int:
        """Its key's estimated recent accesses: history in the sketch plus its own hits."""
        assert self._sketch is not None
        history = self._sketch.frequency(node.hash)
        if not node.freq:  # never hit since stored: most judged entries
            return history
        return min(MAX_COUNT, history + self._own_count(node))

    def _own_count(self, node: _Node[V]) -> int:
        assert self._sketch is not None
        return node.freq >> (self._sketch.resets - node.epoch)

    def _promote(self, node: _Node[V]) -> None:
        """A second hit while in probation earns a place in protected."""
        del self._probation[node.key]
        self._protected[node.key] = node
        node.queue = self._protected
        self._protected_bytes += node.size

    def _demote_overflow(self) -> None:
        protected, probation = self._protected, self._probation
        while self._protected_bytes > self._protected_max and protected:
            key, node = protected.popitem(last=False)
            self._protected_bytes -= node.size
            probation[key] = node
            node.queue = probation

    # -- writes ------------------------------------------------------------------

    def set(
        self,
        key: Hashable,
        value: V,
        size: int | None = None,
        ttl: float = math.inf,
        *,
        stale: float = 0.0,
        tags: tuple[str, ...] = (),
    ) -> bool:
        """Store ``value`` fresh for ``ttl`` s, then usable as stale for ``stale`` s more.

        Returns False when refused (``ttl <= 0``, or larger than
        ``max_entry_share`` of the budget); a refused write still removes the
        key's previous value, which the caller meant to replace.
        """
        charge = self._charge(key, value) if size is None else size
        old = self._data.get(key)
        if ttl <= 0 or charge > self._max_entry:
            self._stats.rejections += 1
            if old is not None:
                self._remove(old)
            return False
        if self._reads:
            self._drain()  # eviction must see every hit so far
        expires = self._now() + ttl
        node = _Node(key, value, expires, expires + stale, tags, charge)
        self._insert(node, old)
        self._evict()
        return True

    def _charge(self, key: Hashable, value: V) -> int:
        return deep_sizeof(value) + sys.getsizeof(key) + ENTRY_OVERHEAD

    def _insert(self, node: _Node[V], old: _Node[V] | None) -> None:
        """Add ``node``; an overwrite keeps the old entry's segment (its standing)."""
        queue = self._window
        if old is not None:
            if old.queue is not None:
                queue = old.queue
            self._remove(old)
        sketch = self._sketch
        if sketch is not None:
            sketch.add(node.hash)
            if len(self._data) >= sketch.capacity:
                sketch.ensure_capacity(2 * sketch.capacity)
        self._data[node.key] = node
        if node.tags:
            self._tag(node)
        self._place(node, queue)

    def _place(self, node: _Node[V], queue: _Queue[V]) -> None:
        queue[node.key] = node
        node.queue = queue
        self._bytes += node.size
        if queue is self._window:
            self._window_bytes += node.size
        elif queue is self._protected:
            self._protected_bytes += node.size

    def delete(self, key: Hashable) -> bool:
        """Remove ``key``; True if it was there."""
        node = self._data.get(key)
        if node is None:
            return False
        self._remove(node)
        return True

    def delete_tags(self, tags: Iterable[str]) -> int:
        """Remove every entry carrying any of ``tags``; returns how many went."""
        keys = {key for tag in tags for key in self._tags.get(tag, ())}
        for key in keys:
            self._remove(self._data[key])
        return len(keys)

    def clear(self) -> None:
        """Drop every entry (statistics are kept)."""
        for node in self._data.values():
            node.queue = None  # buffered reads of these nodes must be skipped
        self._data.clear()
        self._tags.clear()
        self._count_hits()
        self._reads.clear()
        self._counted = 0
        self._init_segments(self._policy)

    def _remove(self, node: _Node[V]) -> None:
        queue = node.queue
        if queue is not None:
            del queue[node.key]
            if queue is self._window:
                self._window_bytes -= node.size
            elif queue is self._protected:
                self._protected_bytes -= node.size
            node.queue = None
        del self._data[node.key]
        self._bytes -= node.size
        if node.freq and self._sketch is not None:  # its hits outlive it, as history
            self._sketch.restore(node.hash, self._own_count(node))
        if node.tags:
            self._untag(node)

    def _tag(self, node: _Node[V]) -> None:
        for tag in node.tags:
            self._tags.setdefault(tag, set()).add(node.key)

    def _untag(self, node: _Node[V]) -> None:
        for tag in node.tags:
            keys = self._tags.get(tag)
            if keys is not None:
                keys.discard(node.key)
                if not keys:
                    del self._tags[tag]

    # -- eviction ----------------------------------------------------------------

    def _evict(self) -> None:
        if self._sketch is None:
            self._evict_coldest(self._window)
            return
        while self._window_bytes > self._window_max:
            _, candidate = self._window.popitem(last=False)
            self._window_bytes -= candidate.size
            candidate.queue = None  # in no segment while it is judged
            self._judge(candidate)
        self._demote_overflow()
        if self._bytes > self._max_bytes:  # only if an overwrite grew main past the budget
            for queue in (self._probation, self._protected, self._window):
                self._evict_coldest(queue)

    def _evict_coldest(self, queue: _Queue[V]) -> None:
        while self._bytes > self._max_bytes and queue:
            self._drop(next(iter(queue.values())), self._now())

    def _judge(self, candidate: _Node[V]) -> None:
        """Admit a window leaver to probation if it is worth the victims it displaces."""
        now = self._now()
        if now >= candidate.stale_until:
            self._drop(candidate, now)
            return
        # Main keeps to its own share (budget minus window), so every byte it
        # takes is contested: the window's newcomers never push main entries
        # out unjudged. (``_bytes`` still counts the candidate.)
        excess = self._bytes - self._window_bytes - (self._max_bytes - self._window_max)
        if excess > 0 and not self._make_room(candidate, excess, now):
            self._drop(candidate, now)
            return
        self._place_judged(candidate)

    def _place_judged(self, node: _Node[V]) -> None:
        # Its bytes are already counted in _bytes: only link it into probation.
        self._probation[node.key] = node
        node.queue = self._probation

    def _make_room(self, candidate: _Node[V], excess: int, now: float) -> bool:
        """Evict the coldest of main to free ``excess`` bytes, if the candidate wins."""
        coldest = next(iter(self._probation.values()), None)
        if coldest is not None and coldest.size >= excess and now < coldest.stale_until:
            # Most writes to a full cache: one live victim frees enough.
            mine = self._frequency(candidate)
            if mine > self._frequency(coldest) or self._lucky(mine):
                self._drop(coldest, now)
                return True
            return False
        victims, dead = self._victims(excess, now)
        for node in dead:  # expired at the cold end: free space, no contest
            self._drop(node, now)
        if victims and not self._admits(candidate, victims):
            return False
        for node in victims:
            self._drop(node, now)
        return True

    def _victims(self, excess: int, now: float) -> tuple[list[_Node[V]], list[_Node[V]]]:
        """The coldest entries of main that together free ``excess`` bytes, split live/dead."""
        live: list[_Node[V]] = []
        dead: list[_Node[V]] = []
        freed = 0
        for node in self._coldest_main():
            (dead if now >= node.stale_until else live).append(node)
            freed += node.size
            if freed >= excess:
                break
        return live, dead

    def _coldest_main(self) -> Iterator[_Node[V]]:
        return itertools.chain(self._probation.values(), self._protected.values())

    def _admits(self, candidate: _Node[V], victims: list[_Node[V]]) -> bool:
        """TinyLFU's rule, by bytes: the candidate must be used more than its victims together.

        Summing (not the max) matters with varied sizes: one large newcomer
        has to earn the hits of all the small entries it would displace.
        """
        frequency = self._frequency
        mine = frequency(candidate)
        theirs = 0
        for victim in victims:  # mostly one: a loop, not a generator
            theirs += frequency(victim)
        return mine > theirs or self._lucky(mine)

    def _lucky(self, frequency: int) -> bool:
        """Whether a candidate that did not beat its victims gets in anyway.

        Ties go to the incumbents. A rare random win for a warm candidate keeps
        an attacker from pinning a hot victim with colliding keys (hash flooding).
        """
        return frequency >= _WARM and self._random.random() < 1 / 128

    def _drop(self, node: _Node[V], now: float) -> None:
        """Evict ``node`` (linked or being judged), counting why it went."""
        self._remove(node)
        if now >= node.stale_until:
            self._stats.expirations += 1
        else:
            self._stats.evictions += 1

    # -- inspection --------------------------------------------------------------

    @property
    def bytes_used(self) -> int:
        """Bytes charged for the entries held now."""
        return self._bytes

    @property
    def max_bytes(self) -> int:
        return self._max_bytes

    @property
    def policy(self) -> Policy:
        return self._policy

    @property
    def clock(self) -> Clock:
        """The clock that entry times (``expires_at``, ``stale_until``) are read against."""
        return self._clock

    def now(self) -> float:
        """The cache clock's current time, to compare with a :class:`CachedItem`'s times."""
        return self._now()

    def __len__(self) -> int:
        return len(self._data)

    def summary(self) -> dict[str, float]:
        stats = self.stats
        return {
            "entries": len(self._data),
            "bytes": self._bytes,
            "max_bytes": self._max_bytes,
            "hits": stats.hits,
            "misses": stats.misses,
            "stale_hits": stats.stale_hits,
            "evictions": stats.evictions,
            "expirations": stats.expirations,
            "rejections": stats.rejections,
            "hit_ratio": stats.hit_ratio(),
        }

    def __repr__(self) -> str:
        return (
            f"MemoryCache(policy={self._policy}, entries={len(self)}, "
            f"bytes={self._bytes}/{self._max_bytes}, hit_ratio={self.stats.hit_ratio():.2f})"
        )
