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


def test_aging_halves_every_counter_and_clears_the_doorkeeper() -> None:
    sketch = FrequencySketch(capacity=1 << 10)
    keys = [spread(k) for k in range(10)]
    for i, h in enumerate(keys):
        sketch.add(h, i + 1)
    before = [sketch.frequency(h) for h in keys]
    sketch.age()
    # the first access sat in the doorkeeper: (f - 1) counted, halved
    assert [sketch.frequency(h) for h in keys] == [(f - 1) // 2 for f in before]
    assert sketch.resets == 1


def test_aging_happens_after_the_sample_size() -> None:
    sketch = FrequencySketch(capacity=16)
    assert sketch.sample_size == 128  # 8 increments per counter column
    h = spread(1)
    for key in range(sketch.sample_size):
        sketch.add(spread(key), 2)  # the doorkeeper takes one, the counters the other
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


def test_doorkeeper_takes_the_first_access_and_is_cleared_on_aging() -> None:
    sketch = FrequencySketch(capacity=1 << 10)
    h = spread(42)
    sketch.add(h)  # first access: a doorkeeper bit, no counter, no aging progress
    assert (sketch._kept(h), sketch.frequency(h), sketch.additions) == (1, 1, 0)
    assert not any(sketch._table)
    sketch.add(h)  # second access: the counters
    assert (sketch._kept(h), sketch.frequency(h), sketch.additions) == (1, 2, 1)
    sketch.age()
    assert (sketch._kept(h), sketch.frequency(h)) == (0, 0)  # the bit went, 1 // 2 == 0
    sketch.add(h)  # first access again since aging
    assert (sketch.frequency(h), sketch.additions) == (1, 0)


def test_a_scan_of_new_keys_does_not_raise_the_counters() -> None:
    sketch = FrequencySketch(capacity=1 << 10)
    sketch.add_many(spread(k) for k in range(100_000, 100_500))  # one-hit wonders
    assert sketch.additions == 0
    assert not any(sketch._table)
