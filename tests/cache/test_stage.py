"""The cache stage, one implementation under the engine and ``@cached``; its record in each tier."""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import AsyncIterator, Callable, Hashable
from pathlib import Path
from typing import Any

import pytest

from overdrive import Overdrive
from overdrive.cache import CacheStage, MemoryCache, StoredAnswer, TieredCache
from overdrive.cache._codec import Codec
from overdrive.cache._disk import DiskTier
from overdrive.cache._memory import ENTRY_OVERHEAD
from overdrive.cache._redis import RedisTier
from overdrive.cache._sizeof import deep_sizeof
from overdrive.cache._tier import Entry, Tier
from overdrive.doors import cached
from overdrive.testing import FakeClock
from tests.fakes import FakeUpstream, engine
from tests.redis_server import RedisServer

from .conftest import FakeWall

WHOLE = StoredAnswer(200, b'{"id": "x"}', "primary", 1_700_000_000.5)
STREAMED = StoredAnswer(200, [b"data: {}\n\n", b"data: [DONE]\n\n"], "primary", 1_700_000_000.5)
HELLO = [{"role": "user", "content": "hello"}]


def stage_over(*tiers: Tier, clock: FakeClock | None = None) -> CacheStage[Any]:
    memory: MemoryCache[Any] = MemoryCache(1 << 20, clock or FakeClock())
    return CacheStage(TieredCache(memory, tiers, Codec()), rng=random.Random(3))


async def through_tier(stage: CacheStage[Any], key: bytes, value: object) -> object:
    """``value`` stored, dropped from memory, and read back from the stage's shared tier."""
    await stage.store(key, value, ttl=60, wait=True)
    stage.cache.memory.delete(key)
    found = await stage.lookup(key)
    assert found is not None
    assert found.source != "memory"
    return found.value


async def turns(count: int) -> None:
    """Let the loop run ``count`` times: background tasks take a few turns to finish."""
    for _ in range(count):
        await asyncio.sleep(0)


# -- StoredAnswer, the record --------------------------------------------------


def test_a_stored_answer_reads_as_a_whole_body_or_as_chunks() -> None:
    assert WHOLE.content() == WHOLE.body
    assert WHOLE.chunks() == [WHOLE.body]
    assert STREAMED.content() == b"data: {}\n\ndata: [DONE]\n\n"
    assert STREAMED.chunks() == STREAMED.body
    assert STREAMED.chunks() is not STREAMED.body  # a replay may not change what is stored


@pytest.mark.parametrize(
    ("old", "expected"),
    [
        ((200, b"{}", "a", 12.5), StoredAnswer(200, b"{}", "a", 12.5)),
        ([200, b"{}", "a", 12], StoredAnswer(200, b"{}", "a", 12.0)),
        ((200, b"{}", "a"), StoredAnswer(200, b"{}", "a", -math.inf)),
        ((200, [b"x", b"y"], "a", 1.0), StoredAnswer(200, [b"x", b"y"], "a", 1.0)),
        ((200, (b"x", b"y"), "a"), StoredAnswer(200, [b"x", b"y"], "a", -math.inf)),
    ],
)
def test_entries_of_the_previous_version_read_as_records(old: object, expected: object) -> None:
    answer = StoredAnswer.of(old)
    assert answer == expected
    assert type(answer) is StoredAnswer
    assert StoredAnswer.of(answer) is answer


@pytest.mark.parametrize("value", [{"status": 200}, (200, b"{}"), "200"])
def test_anything_else_is_not_an_answer(value: object) -> None:
    with pytest.raises(TypeError, match="not a stored answer"):
        StoredAnswer.of(value)


@pytest.mark.parametrize("answer", [WHOLE, STREAMED])
def test_the_charge_is_what_the_memory_tier_would_have_counted(answer: StoredAnswer) -> None:
    key = b"k" * 16
    walked = deep_sizeof(tuple(answer)) + deep_sizeof(key) + ENTRY_OVERHEAD
    assert answer.charge(key) == walked


# -- the record in every tier --------------------------------------------------


@pytest.mark.parametrize("answer", [WHOLE, STREAMED])
async def test_a_stored_answer_round_trips_through_memory(answer: StoredAnswer) -> None:
    stage = stage_over()
    await stage.store(b"k", answer, ttl=60)
    found = await stage.lookup(b"k")
    assert found is not None
    assert found.value is answer
    assert stage.cache.memory.bytes_used == answer.charge(b"k")


@pytest.mark.parametrize("answer", [WHOLE, STREAMED])
async def test_a_stored_answer_round_trips_through_the_disk_tier(
    tmp_path: Path, wall: FakeWall, answer: StoredAnswer
) -> None:
    stage = stage_over(DiskTier(tmp_path / "cache.db", wall=wall))
    try:
        back = await through_tier(stage, b"k", answer)
    finally:
        await stage.cache.aclose()
    assert type(back) is StoredAnswer
    assert back == answer


@pytest.mark.parametrize("answer", [WHOLE, STREAMED])
async def test_a_stored_answer_round_trips_through_redis(
    redis_server: RedisServer, answer: StoredAnswer
) -> None:
    stage = stage_over(RedisTier(redis_server.url, timeout=2.0))
    try:
        back = await through_tier(stage, b"k", answer)
    finally:
        await stage.cache.aclose()
    assert type(back) is StoredAnswer
    assert back == answer


@pytest.mark.parametrize(
    "old", [(200, b"{}", "a", 12.5), (200, b"{}", "a"), [200, [b"x", b"y"], "a", 1.0]]
)
async def test_a_previous_version_entry_on_disk_still_reads(
    tmp_path: Path, wall: FakeWall, old: tuple[Any, ...] | list[Any]
) -> None:
    tier = DiskTier(tmp_path / "cache.db", wall=wall)
    await tier.set(b"k", Entry(Codec().encode(b"k", old), wall() + 60, wall() + 60))
    stage = stage_over(tier)
    try:
        found = await stage.lookup(b"k")
    finally:
        await stage.cache.aclose()
    assert found is not None
    assert StoredAnswer.of(found.value) == StoredAnswer.of(old)


# -- lookup: fresh, stale, max_age ---------------------------------------------


async def test_lookup_tells_fresh_from_stale(clock: FakeClock) -> None:
    stage = stage_over(clock=clock)
    await stage.store(b"k", WHOLE, ttl=10, stale=30)
    first = await stage.lookup(b"k")
    clock.advance(15)
    later = await stage.lookup(b"k")
    clock.advance(30)
    assert (first is not None and first.fresh, later is not None and later.fresh) == (True, False)
    assert await stage.lookup(b"k") is None
    assert await stage.fresh_answer(b"k") is None


async def test_max_age_counts_from_the_time_an_answer_was_stored(clock: FakeClock) -> None:
    memory: MemoryCache[Any] = MemoryCache(1 << 20, clock)
    stage: CacheStage[Any] = CacheStage(TieredCache(memory), wall=clock.now)
    answer = StoredAnswer(200, b"{}", "a", clock.now())
    await stage.store(b"k", answer, ttl=60)
    await stage.store(b"old", (200, b"{}", "a"), ttl=60)  # no time of its own: too old
    clock.advance(30)
    assert await stage.lookup(b"k", max_age=30) is not None
    assert await stage.fresh_answer(b"k", max_age=30) is answer
    assert await stage.lookup(b"k", max_age=29) is None
    assert await stage.lookup(b"old") is not None
    assert await stage.lookup(b"old", max_age=1e9) is None


# -- refresh once, compute once --------------------------------------------------


async def test_refresh_runs_once_however_many_callers_see_it_stale() -> None:
    stage = stage_over()
    gate = asyncio.Event()
    runs = 0

    async def refresh() -> int:
        nonlocal runs
        runs += 1
        await gate.wait()
        return runs

    for _ in range(5):
        stage.refresh_once(b"k", refresh)
    await asyncio.sleep(0)
    joined = asyncio.ensure_future(stage.compute_once(b"k", refresh))  # a miss meanwhile joins
    await asyncio.sleep(0)
    gate.set()
    assert await joined == (1, True)
    assert runs == 1
    await turns(3)
    assert "refreshing=0" in repr(stage)
    stage.refresh_once(b"k", refresh)  # done: the next stale sighting refreshes again
    await turns(3)
    assert runs == 2


async def test_a_failed_refresh_is_reported_and_does_not_block_the_next() -> None:
    errors: list[BaseException] = []
    memory: MemoryCache[Any] = MemoryCache(1 << 20)
    stage: CacheStage[int] = CacheStage(TieredCache(memory), on_refresh_error=errors.append)

    async def broken() -> int:
        raise RuntimeError("upstream down")

    stage.refresh_once(b"k", broken)
    await turns(5)
    assert [str(e) for e in errors] == ["upstream down"]
    stage.refresh_once(b"k", broken)
    await turns(5)
    assert len(errors) == 2


async def test_compute_once_shares_one_computation() -> None:
    stage = stage_over()
    gate = asyncio.Event()
    runs = 0

    async def compute() -> str:
        nonlocal runs
        runs += 1
        await gate.wait()
        return "answer"

    callers = [asyncio.ensure_future(stage.compute_once(b"k", compute)) for _ in range(10)]
    await asyncio.sleep(0)
    gate.set()
    results = await asyncio.gather(*callers)
    assert runs == 1
    assert sorted(joined for _, joined in results) == [False] + [True] * 9


# -- store: jitter, waiting, memory only -----------------------------------------


async def test_store_jitters_the_ttl_down_within_its_share(clock: FakeClock) -> None:
    memory: MemoryCache[Any] = MemoryCache(1 << 20, clock)
    stage: CacheStage[Any] = CacheStage(TieredCache(memory), jitter=0.2, rng=random.Random(1))
    for i in range(100):
        await stage.store(i, i, ttl=100)

    def alive_after(seconds: float) -> int:
        clock.advance(seconds)
        return sum(memory.get_entry(i) is not None for i in range(100))

    assert alive_after(79.9) == 100  # nothing expires before ttl × (1 - jitter)
    assert 0 < alive_after(10) < 100  # spread over the last 20 s of the TTL
    assert alive_after(10.2) == 0


async def test_store_writes_the_shared_tiers_before_returning_when_asked(
    tmp_path: Path, wall: FakeWall
) -> None:
    tier = DiskTier(tmp_path / "cache.db", wall=wall)
    stage = stage_over(tier)
    try:
        await stage.store(b"now", WHOLE, ttl=60, wait=True)
        assert await tier.get(b"now") is not None
        await stage.store(b"later", WHOLE, ttl=60)  # no lease: written behind
        await stage.cache.flush()
        assert await tier.get(b"later") is not None
    finally:
        await stage.cache.aclose()


async def test_remember_stores_in_memory_only(tmp_path: Path, wall: FakeWall) -> None:
    tier = DiskTier(tmp_path / "cache.db", wall=wall)
    stage = stage_over(tier)
    try:
        stage.remember(b"k", "value", ttl=60, tags=("t",))
        await stage.cache.flush()
        item = stage.cache.memory.get_entry(b"k")
        assert item is not None
        assert (item.value, item.tags) == ("value", ("t",))
        assert await tier.get(b"k") is None
    finally:
        await stage.cache.aclose()


async def test_shared_tiers_take_bytes_keys_only(tmp_path: Path, wall: FakeWall) -> None:
    stage = stage_over(DiskTier(tmp_path / "cache.db", wall=wall))
    try:
        with pytest.raises(TypeError, match="bytes keys"):
            await stage.store(("a", 1), "value", ttl=60)
    finally:
        await stage.cache.aclose()


# -- the engine and the decorator call the same functions --------------------------

Calls = list[tuple[str, CacheStage[Any], Hashable]]


@pytest.fixture
def stage_calls(monkeypatch: pytest.MonkeyPatch) -> Calls:
    """Every call to the stage's steps, as (step, stage, key), wherever it comes from."""
    calls: Calls = []
    for step in ("lookup", "refresh_once", "compute_once", "store", "remember"):
        monkeypatch.setattr(CacheStage, step, _recording(step, getattr(CacheStage, step), calls))
    return calls


def _recording(step: str, method: Callable[..., Any], calls: Calls) -> Callable[..., Any]:
    def record(stage: CacheStage[Any], key: Hashable, *args: Any, **kwargs: Any) -> Any:
        calls.append((step, stage, key))
        return method(stage, key, *args, **kwargs)

    return record


def steps_of(calls: Calls, stage: CacheStage[Any]) -> list[str]:
    return [step for step, called, _ in calls if called is stage]


def stage_of(fn: Callable[..., Any]) -> CacheStage[Any]:
    """The stage behind a ``@cached`` function (on the state the decorator attaches)."""
    stage: CacheStage[Any] = vars(fn)["cache"].stage
    return stage


@pytest.fixture
async def fake(clock: FakeClock) -> AsyncIterator[FakeUpstream]:
    async with FakeUpstream(clock) as upstream:
        yield upstream


async def test_the_engine_runs_its_cache_through_the_stage(
    clock: FakeClock, fake: FakeUpstream, stage_calls: Calls
) -> None:
    config = {
        "upstreams": [{"name": "a", "base_url": fake.url, "models": ["m"]}],
        "cache": {"ttl": "10s", "stale": "60s"},
    }
    async with Overdrive.from_config(config, clock=clock) as od:
        await od.chat(model="m", messages=HELLO)  # a miss: computed once, stored
        clock.advance(15)
        await od.chat(model="m", messages=HELLO)  # stale: served, refreshed once
        await fake.received(2)
        await fake.settled()
        stage = od._stage
    assert steps_of(stage_calls, stage) == [
        "lookup",
        "compute_once",
        "store",
        "lookup",
        "refresh_once",
        "store",
    ]


async def test_the_decorator_runs_its_misses_through_the_stage(
    clock: FakeClock, stage_calls: Calls
) -> None:
    @cached(ttl=10, stale=60, jitter=0, cache=MemoryCache(1 << 20, clock))
    async def answer(question: str) -> str:
        return question.upper()

    @cached(ttl=10, cache=MemoryCache(1 << 20, clock))
    def shout(question: str) -> str:
        return question.upper()

    assert await answer("q") == "Q"  # a miss: computed once, stored
    assert await answer("q") == "Q"  # a memory hit: inline, no stage
    clock.advance(15)
    assert await answer("q") == "Q"  # stale: served, refreshed once
    for _ in range(5):
        await asyncio.sleep(0)
    assert shout("q") == shout("q") == "Q"
    expected = ["lookup", "compute_once", "store", "lookup", "refresh_once", "store"]
    assert steps_of(stage_calls, stage_of(answer)) == expected
    assert steps_of(stage_calls, stage_of(shout)) == ["remember"]


async def test_the_engine_decorator_and_the_engine_share_one_cache(
    clock: FakeClock, fake: FakeUpstream, stage_calls: Calls
) -> None:
    async with engine(fake, clock) as od:

        @od.cached(ttl="1m")
        async def lookup(term: str) -> list[str]:
            return [term]

        assert await lookup("x") == ["x"]
        await od.chat(model="m", messages=HELLO)
        decorator_stage = stage_of(lookup)
    stages = {id(stage) for _, stage, _ in stage_calls}
    assert stages == {id(od._stage), id(decorator_stage)}
    assert decorator_stage.cache is od._stage.cache
