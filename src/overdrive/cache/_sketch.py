"""A count-min sketch of recent access frequency, for TinyLFU admission.

Four rows of small saturating counters (0..15) in one ``bytearray``; a key
(given as an already mixed 64-bit hash, see :func:`spread`) bumps one
counter per row, each row indexed by a different 16-bit step of the hash
(windows overlap past 65536 counters a row: still distinct rows, cheaper
than double hashing in Python) and its estimate is the least of the four, so collisions
can only over-count. After ``sample_size`` increments every counter is
halved: old popularity fades and the sketch follows a changing workload.

>>> sketch = FrequencySketch(capacity=100)
>>> h = spread(hash("answer"))
>>> sketch.add(h, 3)
>>> sketch.frequency(h)
3
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

__all__ = ["FrequencySketch", "spread"]

_MASK64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15  # odd, bits well spread: a cheap multiplicative mix
_MAX_COUNT = 15  # 4-bit counters, as in Caffeine: enough to rank, cheap to age
_ROWS = 4
_SAMPLE_FACTOR = 10  # age after ~10 increments per tracked entry (TinyLFU paper)
_HALVE = bytes(v >> 1 for v in range(256))  # translate table: halving in C, not a loop


def spread(h: int) -> int:
    """Mix a Python hash into 64 well-distributed bits (``hash(5) == 5``)."""
    h = (h * _GOLDEN) & _MASK64
    return h ^ (h >> 29)


class FrequencySketch:
    """Approximate access counts for an unbounded key space in ``4 * width`` bytes.

    >>> sketch = FrequencySketch(capacity=8)
    >>> sketch.add(spread(7))
    >>> sketch.frequency(spread(7)) >= 1
    True
    """

    __slots__ = ("_mask", "_saturated", "_table", "_width", "additions", "resets", "sample_size")

    def __init__(self, capacity: int = 16) -> None:
        self._width = 16
        self._mask = 15
        self._table = bytearray(_ROWS * 16)
        self._saturated: set[int] = set()
        self.additions = 0
        self.sample_size = _SAMPLE_FACTOR * 16
        self.resets = 0
        self.ensure_capacity(capacity)

    @property
    def capacity(self) -> int:
        """How many distinct keys the table is sized for."""
        return self._width

    def ensure_capacity(self, entries: int) -> None:
        """Grow (clearing the counts) so ``entries`` keys collide rarely; never shrinks."""
        width = self._width
        while width < entries:
            width *= 2
        if width == self._width and self._table:
            return
        self._width, self._mask = width, width - 1
        self._table = bytearray(_ROWS * width)
        self._saturated.clear()
        self.sample_size = _SAMPLE_FACTOR * width
        self.additions = 0

    def frequency(self, h: int) -> int:
        """The estimated count for hash ``h``: never below the true recent count."""
        table, mask, width = self._table, self._mask, self._width
        return min(
            table[h & mask],
            table[width + ((h >> 16) & mask)],
            table[2 * width + ((h >> 32) & mask)],
            table[3 * width + ((h >> 48) & mask)],
        )

    def add(self, h: int, times: int = 1) -> None:
        """Count ``times`` accesses of hash ``h``; may trigger aging."""
        self.add_counts(((h, times),))

    def add_many(self, hashes: Iterable[int]) -> None:
        """Count one access per hash (repeats included); may trigger aging."""
        self.add_counts(Counter(hashes).items())

    def add_counts(self, counts: Iterable[tuple[int, int]]) -> None:
        """Count ``n`` accesses of each ``(h, n)``, as ``n`` calls of ``add(h)`` would.

        Counters saturate, so adding ``n`` at once lands exactly where ``n``
        single increments would. A hash whose counters all reached the cap is
        remembered until the next aging and skipped: hot keys, which make up
        most hits, then cost a set lookup instead of four counter updates.
        """
        table, mask, w1 = self._table, self._mask, self._width
        w2, w3, saturated = 2 * w1, 3 * w1, self._saturated
        added = 0
        for h, n in counts:  # straight-line on purpose: this loop is the price of hits
            if h in saturated:
                continue
            i0, i1 = h & mask, w1 + ((h >> 16) & mask)
            i2, i3 = w2 + ((h >> 32) & mask), w3 + ((h >> 48) & mask)
            c0, c1, c2, c3 = table[i0], table[i1], table[i2], table[i3]
            low = min(c0, c1, c2, c3)
            if low + n >= _MAX_COUNT:
                saturated.add(h)
                table[i0] = table[i1] = table[i2] = table[i3] = _MAX_COUNT
                added += _MAX_COUNT - low  # single increments stop once the least is full
            else:
                table[i0] = c0 + n if c0 + n < _MAX_COUNT else _MAX_COUNT
                table[i1] = c1 + n if c1 + n < _MAX_COUNT else _MAX_COUNT
                table[i2] = c2 + n if c2 + n < _MAX_COUNT else _MAX_COUNT
                table[i3] = c3 + n if c3 + n < _MAX_COUNT else _MAX_COUNT
                added += n
        self.additions += added
        if self.additions >= self.sample_size:
            self.age()

    def age(self) -> None:
        """Halve every counter: yesterday's hits weigh half as much as today's."""
        self._table = self._table.translate(_HALVE)
        self._saturated.clear()
        self.additions //= 2
        self.resets += 1

    def __repr__(self) -> str:
        return (
            f"FrequencySketch(width={self._width}, additions={self.additions}/"
            f"{self.sample_size}, resets={self.resets})"
        )
