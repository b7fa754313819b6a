"""Any sequence of operations keeps byte accounting exact and within budget."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from overdrive.cache._memory import MemoryCache, Policy
from overdrive.testing import FakeClock

_BUDGET = 2000

_keys = st.integers(0, 30)
_ops = st.lists(
    st.one_of(
        st.tuples(
            st.just("set"),
            _keys,
            st.integers(1, 600),  # above the 500-byte entry share: refused
            st.sampled_from([0.0, 1.0, 5.0, float("inf")]),
            st.sampled_from([0.0, 3.0]),
        ),
        st.tuples(st.just("get"), _keys),
        st.tuples(st.just("entry"), _keys),
        st.tuples(st.just("delete"), _keys),
        st.tuples(st.just("tags"), st.integers(0, 3)),
        st.tuples(st.just("tick"), st.sampled_from([0.5, 2.0])),
    ),
    max_size=120,
)


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(["tinylfu", "lru"]), _ops)
def test_bytes_used_matches_live_entries(policy: Policy, ops: list[tuple[object, ...]]) -> None:
    clock = FakeClock()
    cache: MemoryCache[int] = MemoryCache(_BUDGET, clock, policy=policy)
    sizes: dict[int, int] = {}
    for op in ops:
        _apply(cache, clock, sizes, op)
        assert cache.bytes_used <= _BUDGET
        live = [key for key in sizes if key in cache._data]
        assert cache.bytes_used == sum(sizes[key] for key in live)
        assert len(cache) == len(live)
        assert cache._window_bytes + cache._protected_bytes <= cache.bytes_used


def _apply(
    cache: MemoryCache[int], clock: FakeClock, sizes: dict[int, int], op: tuple[object, ...]
) -> None:
    match op:
        case ("set", int(key), int(size), float(ttl), float(stale)):
            if cache.set(key, key, size, ttl, stale=stale, tags=(f"t{key % 4}",)):
                sizes[key] = size
        case ("get", int(key)):
            assert cache.get(key) in (None, key)
        case ("entry", int(key)):
            entry = cache.get_entry(key)
            assert entry is None or entry.value == key
        case ("delete", int(key)):
            cache.delete(key)
        case ("tags", int(tag)):
            cache.delete_tags([f"t{tag}"])
        case ("tick", float(seconds)):
            clock.advance(seconds)


def _state(cache: MemoryCache[int]) -> tuple[object, ...]:
    cache._drain()
    own = {key: cache._own_count(node) for key, node in cache._data.items()}
    segments = (list(cache._window), list(cache._probation), list(cache._protected))
    return segments, own, cache.stats


_reads = st.lists(
    st.one_of(
        st.tuples(st.just("get"), _keys),
        st.tuples(st.just("entry"), _keys),
        st.tuples(st.just("set"), _keys, st.just(100), st.just(5.0), st.just(3.0)),
        st.tuples(st.just("delete"), _keys),
        st.tuples(st.just("tick"), st.sampled_from([0.5, 2.0])),
    ),
    max_size=200,
)


@settings(max_examples=150, deadline=None)
@given(st.lists(_keys, max_size=30), _reads)
def test_batched_reads_replay_like_one_at_a_time(
    warm: list[int], ops: list[tuple[object, ...]]
) -> None:
    """Draining once per distinct entry leaves the same order, counts and statistics."""
    runs = [(MemoryCache[int](_BUDGET, clock), clock) for clock in (FakeClock(), FakeClock())]
    for cache, _ in runs:
        cache._random.seed(0)  # the same rare coin tosses in admission
        for key in warm:
            cache.set(key, key, size=100, ttl=5.0, stale=3.0)
    (batched, batched_clock), (stepwise, stepwise_clock) = runs
    for op in ops:
        _apply(batched, batched_clock, {}, op)
        _apply(stepwise, stepwise_clock, {}, op)
        stepwise._drain()
    assert batched._sketch is not None
    assert batched._sketch.resets == 0  # aging, like the sketch's own, happens per batch
    assert _state(batched) == _state(stepwise)
