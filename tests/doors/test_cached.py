from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from overdrive import RequestError
from overdrive.cache import MemoryCache, TieredCache
from overdrive.cache._disk import DiskTier
from overdrive.doors import cached
from overdrive.testing import FakeClock


def test_sync_function_hits_after_first_call(clock: FakeClock) -> None:
    calls: list[int] = []

    @cached(ttl=10, cache=MemoryCache(1 << 20, clock))
    def square(x: int) -> int:
        calls.append(x)
        return x * x

    assert [square(3), square(3), square(4)] == [9, 9, 16]
    assert calls == [3, 4]
    info = square.cache_info()  # type: ignore[attr-defined]
    assert (info.hits, info.misses, info.entries) == (1, 2, 2)
    clock.advance(10)
    assert square(3) == 9
    assert calls == [3, 4, 3]


def test_none_results_and_keyword_arguments(clock: FakeClock) -> None:
    calls = 0

    @cached(ttl=10, cache=MemoryCache(1 << 20, clock))
    def find(name: str, *, exact: bool = False) -> str | None:
        nonlocal calls
        calls += 1
        return None

    assert find("a", exact=True) is None
    assert find("a", exact=True) is None
    assert find("a", exact=False) is None
    assert calls == 2


def test_unhashable_arguments_are_keyed_by_content(clock: FakeClock) -> None:
    calls = 0

    @cached(ttl=10, cache=MemoryCache(1 << 20, clock))
    def tool(args: dict[str, Any]) -> int:
        nonlocal calls
        calls += 1
        return len(args)

    assert tool({"q": "x", "n": [1, 2]}) == tool({"n": [1, 2], "q": "x"}) == 2
    assert calls == 1


def test_arguments_that_cannot_form_a_key_get_a_clear_error() -> None:
    @cached()
    def tool(arg: Any) -> int:
        return 1

    with pytest.raises(RequestError, match="pass key="):
        tool([object()])


def test_methods_ignore_self_and_custom_keys_apply(clock: FakeClock) -> None:
    class Service:
        def __init__(self) -> None:
            self.calls = 0

        @cached(ttl=10, cache=MemoryCache(1 << 20, clock))
        def fetch(self, item: str) -> str:
            self.calls += 1
            return item.upper()

    one, two = Service(), Service()
    assert one.fetch("a") == two.fetch("a") == "A"
    assert one.calls + two.calls == 1

    @cached(ttl=10, key=lambda text, request_id: text, cache=MemoryCache(1 << 20, clock))
    def summarise(text: str, request_id: int) -> str:
        return text[:2]

    summarise("hello", 1)
    summarise("hello", 2)
    assert summarise.cache_info().hits == 1  # type: ignore[attr-defined]


def test_invalidate_and_tags(clock: FakeClock) -> None:
    calls = 0

    @cached(ttl=60, tags=lambda user: [f"user:{user}"], cache=MemoryCache(1 << 20, clock))
    def profile(user: str) -> dict[str, str]:
        nonlocal calls
        calls += 1
        return {"user": user}

    profile("ann")
    profile("bob")
    assert profile.invalidate("ann")  # type: ignore[attr-defined]
    profile("ann")
    assert calls == 3
    removed = asyncio.run(profile.invalidate_tags("user:bob"))  # type: ignore[attr-defined]
    assert removed == 1
    profile("bob")
    assert calls == 4


def test_negative_caching_is_opt_in(clock: FakeClock) -> None:
    calls = 0

    def lookup(name: str) -> str:
        nonlocal calls
        calls += 1
        raise KeyError(name)

    plain = cached(ttl=60, cache=MemoryCache(1 << 20, clock))(lookup)
    for _ in range(2):
        with pytest.raises(KeyError):
            plain("x")
    assert calls == 2

    negative = cached(ttl=60, negative_ttl=5, cache=MemoryCache(1 << 20, clock))(lookup)
    for _ in range(2):
        with pytest.raises(KeyError):
            negative("x")
    assert calls == 3
    clock.advance(5)
    with pytest.raises(KeyError):
        negative("x")
    assert calls == 4


def test_ttl_jitter_spreads_expiry(clock: FakeClock) -> None:
    cache: MemoryCache[Any] = MemoryCache(1 << 20, clock)

    @cached(ttl=100, jitter=0.2, cache=cache)
    def value(i: int) -> int:
        return i

    for i in range(50):
        value(i)
    clock.advance(90)
    prefix = value.cache.prefix  # type: ignore[attr-defined]
    alive = sum(1 for i in range(50) if cache.get_entry((prefix, (i,))))
    assert 0 < alive < 50


async def test_async_single_flight_on_a_cold_key(clock: FakeClock) -> None:
    calls = 0
    gate = asyncio.Event()

    @cached(ttl=60, cache=MemoryCache(1 << 20, clock))
    async def answer(question: str) -> str:
        nonlocal calls
        calls += 1
        await gate.wait()
        return question[::-1]

    waiting = [asyncio.create_task(answer("abc")) for _ in range(1000)]
    await asyncio.sleep(0)
    gate.set()
    assert set(await asyncio.gather(*waiting)) == {"cba"}
    assert calls == 1
    assert await answer("abc") == "cba"
    assert calls == 1


async def test_stale_while_revalidate_refreshes_once(clock: FakeClock) -> None:
    version = 0

    @cached(ttl=10, stale=30, jitter=0, cache=MemoryCache(1 << 20, clock))
    async def current() -> int:
        nonlocal version
        version += 1
        return version

    assert await current() == 1
    clock.advance(15)  # past the TTL, inside the stale window
    assert list(await asyncio.gather(current(), current(), current())) == [1, 1, 1]
    for _ in range(5):
        await asyncio.sleep(0)
    assert version == 2
    assert await current() == 2
    clock.advance(50)  # past the stale window: a plain miss
    assert await current() == 3


async def test_async_function_with_shared_tier_round_trips(clock: FakeClock) -> None:
    tiered = TieredCache(MemoryCache(1 << 20, clock))
    calls = 0

    @cached(ttl=60, cache=tiered)
    async def embed(text: str) -> list[float]:
        nonlocal calls
        calls += 1
        return [float(len(text))]

    assert await embed("abcd") == [4.0]
    assert await embed("abcd") == [4.0]
    assert calls == 1


def test_sync_single_flight_across_threads(clock: FakeClock) -> None:
    import threading

    calls = 0
    entered = threading.Event()
    release = threading.Event()

    @cached(ttl=60, cache=MemoryCache(1 << 20, clock))
    def slow(x: int) -> int:
        nonlocal calls
        calls += 1
        entered.set()
        release.wait(5)
        return x + 1

    results: list[int] = []
    leader = threading.Thread(target=lambda: results.append(slow(1)))
    leader.start()
    entered.wait(5)
    followers = [threading.Thread(target=lambda: results.append(slow(1))) for _ in range(8)]
    for thread in followers:
        thread.start()
    release.set()
    for thread in [leader, *followers]:
        thread.join(5)
    assert results == [2] * 9
    assert calls == 1


async def test_a_failed_refresh_keeps_serving_the_stale_value(clock: FakeClock) -> None:
    calls = 0

    @cached(ttl=10, stale=30, jitter=0, cache=MemoryCache(1 << 20, clock))
    async def flaky() -> str:
        nonlocal calls
        calls += 1
        if calls > 1:
            raise RuntimeError("down")
        return "first"

    assert await flaky() == "first"
    clock.advance(15)
    assert await flaky() == "first"  # stale, while the refresh fails in the background
    for _ in range(5):
        await asyncio.sleep(0)
    assert await flaky() == "first"
    assert calls >= 2


async def test_cached_failures_stay_in_this_process(clock: FakeClock, tmp_path: Path) -> None:
    disk = DiskTier(tmp_path / "cache.db")
    tiered = TieredCache(MemoryCache(1 << 20, clock), [disk])
    calls = 0

    @cached(ttl=60, negative_ttl=5, cache=tiered)
    async def find(name: str) -> str:
        nonlocal calls
        calls += 1
        raise KeyError(name)

    for _ in range(2):
        with pytest.raises(KeyError):
            await find("x")
    await tiered.flush()
    key = vars(find)["cache"].key_of(("x",), {})
    assert calls == 1
    assert await disk.get(key) is None  # an error is never shared with other processes
    await tiered.aclose()
