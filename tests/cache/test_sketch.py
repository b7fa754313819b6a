from __future__ import annotations

from collections import Counter

from hypothesis import given
from hypothesis import strategies as st

from overdrive.cache._sketch import FrequencySketch, spread


@given(st.lists(st.integers(0, 500), max_size=400))
def test_estimates_never_under_count_before_aging(keys: list[int]) -> None:
    sketch = FrequencySketch(capacity=64)  # small: collisions happen, aging does not
    for key in keys:
        sketch.add(spread(key))
    assert sketch.resets == 0
    for key, count in Counter(keys).items():
        assert sketch.frequency(spread(key)) >= min(count, 15)


def test_counters_saturate_at_fifteen() -> None:
    sketch = FrequencySketch(capacity=1 << 12)
    h = spread(hash("k"))
    sketch.add(h, 100)
    sketch.add(h)
    assert sketch.frequency(h) == 15


def test_unseen_keys_are_mostly_zero() -> None:
    sketch = FrequencySketch(capacity=1 << 12)
    for key in range(1000):
        sketch.add(spread(key))
    unseen = [sketch.frequency(spread(key)) for key in range(10_000, 11_000)]
    assert sum(1 for f in unseen if f) < 50


def test_aging_halves_every_counter() -> None:
    sketch = FrequencySketch(capacity=1 << 10)
    keys = [spread(k) for k in range(10)]
    for i, h in enumerate(keys):
        sketch.add(h, i + 1)
    before = [sketch.frequency(h) for h in keys]
    sketch.age()
    assert [sketch.frequency(h) for h in keys] == [f // 2 for f in before]
    assert sketch.resets == 1


def test_aging_happens_after_the_sample_size() -> None:
    sketch = FrequencySketch(capacity=16)
    assert sketch.sample_size == 96  # 6 increments per counter column
    h = spread(1)
    for key in range(sketch.sample_size):
        sketch.add(spread(key))
    assert sketch.resets == 1
    assert sketch.additions < sketch.sample_size
    assert sketch.frequency(h) <= 7
    assert "resets=1" in repr(sketch)


def test_growing_clears_and_widens() -> None:
    sketch = FrequencySketch(capacity=16)
    h = spread(3)
    sketch.add(h, 4)
    sketch.ensure_capacity(1000)
    assert sketch.capacity == 1024
    assert sketch.frequency(h) == 0
    sketch.ensure_capacity(10)  # never shrinks
    assert sketch.capacity == 1024


def test_spread_separates_sequential_hashes() -> None:
    mixed = {spread(i) & 0xFF for i in range(256)}
    assert len(mixed) > 128


@given(st.lists(st.integers(0, 300), max_size=300))
def test_add_many_matches_one_at_a_time(keys: list[int]) -> None:
    one, many = FrequencySketch(capacity=64), FrequencySketch(capacity=64)
    for key in keys:
        one.add(spread(key))
    many.add_many(spread(key) for key in keys)
    assert all(one.frequency(spread(k)) == many.frequency(spread(k)) for k in range(301))


def test_adding_at_once_counts_increments_until_saturated() -> None:
    sketch = FrequencySketch(capacity=1 << 10)
    h = spread(5)
    sketch.add(h, 10)
    sketch.add(h, 10)
    assert (sketch.frequency(h), sketch.additions) == (15, 15)


def test_restore_raises_counters_without_nearing_aging() -> None:
    sketch = FrequencySketch(capacity=16)
    h = spread(9)
    sketch.restore(h, 4)
    assert (sketch.frequency(h), sketch.additions) == (4, 0)
    sketch.tally(sketch.sample_size)
    assert sketch.resets == 1
    assert sketch.frequency(h) == 2
