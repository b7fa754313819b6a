from __future__ import annotations

import asyncio
import gc
import threading
from collections.abc import AsyncIterator, Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from overdrive import RequestError
from overdrive.stream import chunks, map


async def settle(rounds: int = 20) -> None:
    for _ in range(rounds):
        await asyncio.sleep(0)


async def drain(stream: AsyncIterator[object], into: list[object]) -> None:
    async for item in stream:
        into.append(item)


class Work:
    """An async fn whose items take ``delays[item]`` loop turns; it tracks calls in flight."""

    def __init__(self, delays: list[int]) -> None:
        self.delays = delays
        self.running = self.peak = 0
        self.cancelled: list[int] = []

    async def __call__(self, item: int) -> int:
        self.running += 1
        self.peak = max(self.peak, self.running)
        try:
            for _ in range(self.delays[item]):
                await asyncio.sleep(0)
            return item * 10
        except asyncio.CancelledError:
            self.cancelled.append(item)
            raise
        finally:
            self.running -= 1


class Source:
    """Items 0..n-1 from an async generator that counts how many were pulled."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.pulled = 0
        self.closed = False

    async def items(self) -> AsyncIterator[int]:
        try:
            for item in range(self.n):
                self.pulled += 1
                yield item
        finally:
            self.closed = True


@settings(max_examples=60, deadline=None)
@given(
    delays=st.lists(st.integers(0, 12), max_size=40),
    concurrency=st.integers(1, 6),
    ordered=st.booleans(),
    pause=st.integers(0, 3),
)
def test_results_are_complete_and_the_bounds_hold(
    delays: list[int], concurrency: int, ordered: bool, pause: int
) -> None:
    async def main() -> list[int]:
        work, source = Work(delays), Source(len(delays))
        results = []
        async for result in map(work, source.items(), concurrency=concurrency, ordered=ordered):
            results.append(result)
            assert source.pulled - len(results) <= concurrency  # never pulled further ahead
            for _ in range(pause):  # a slow consumer must not let the source run ahead
                await asyncio.sleep(0)
        assert work.peak <= concurrency
        assert source.closed
        return results

    results = asyncio.run(main())
    want = [i * 10 for i in range(len(delays))]
    assert results == want if ordered else sorted(results) == want


async def test_ordered_results_wait_for_the_slow_head() -> None:
    work = Work([8, 0, 0, 0])
    assert [r async for r in map(work, range(4), concurrency=4)] == [0, 10, 20, 30]


async def test_unordered_results_come_as_they_complete() -> None:
    work = Work([8, 4, 0, 2])
    got = [r async for r in map(work, range(4), concurrency=4, ordered=False)]
    assert got == [20, 30, 10, 0]


async def test_all_calls_overlap_up_to_the_limit() -> None:
    work = Work([5] * 12)
    assert len([r async for r in map(work, range(12), concurrency=4)]) == 12
    assert work.peak == 4


async def test_a_result_is_yielded_before_a_slow_source_ends() -> None:
    gate = asyncio.Event()

    async def source() -> AsyncIterator[int]:
        yield 1
        await gate.wait()  # the source stalls; the first result must not wait for it
        yield 2

    async def double(x: int) -> int:
        return 2 * x

    stream = map(double, source(), concurrency=4)
    assert await asyncio.wait_for(anext(stream), 1) == 2
    gate.set()
    assert await anext(stream) == 4
    await stream.aclose()


class Boom(Exception):
    pass


async def failing(item: int) -> int:
    if item == 3:
        raise Boom(item)
    await settle(30 if item == 1 else 0)
    return item


async def test_ordered_errors_raise_in_input_order_and_cancel_the_rest() -> None:
    work = Work([0, 0, 0, 0, 100, 100])

    async def fn(item: int) -> int:
        if item == 3:
            raise Boom(item)
        return await work(item)

    got: list[object] = []
    with pytest.raises(Boom):
        await drain(map(fn, range(6), concurrency=6), got)
    assert got == [0, 10, 20]  # everything before the failed item, like a sequential loop
    assert sorted(work.cancelled) == [4, 5]
    assert asyncio.all_tasks() == {asyncio.current_task()}


async def test_unordered_errors_raise_first_in_time_and_cancel_the_rest() -> None:
    work = Work([100, 100, 0])

    async def fn(item: int) -> int:
        if item == 2:
            raise Boom(item)
        return await work(item)

    with pytest.raises(Boom):
        await drain(map(fn, range(3), concurrency=3, ordered=False), [])
    assert sorted(work.cancelled) == [0, 1]
    assert asyncio.all_tasks() == {asyncio.current_task()}


async def test_return_exceptions_yields_errors_in_place() -> None:
    got = [r async for r in map(failing, range(5), concurrency=3, return_exceptions=True)]
    assert got[:3] == [0, 1, 2]
    assert isinstance(got[3], Boom)
    assert got[4] == 4


async def test_a_source_error_raises_after_the_results_before_it() -> None:
    async def source() -> AsyncIterator[int]:
        yield 0
        yield 1
        raise ConnectionError("source broke")

    got: list[object] = []
    with pytest.raises(ConnectionError, match="source broke"):
        await drain(map(failing, source(), concurrency=4, return_exceptions=True), got)
    assert got == [0, 1]


@pytest.mark.parametrize("ordered", [True, False])
async def test_closing_early_cancels_calls_and_closes_the_source(ordered: bool) -> None:
    work, source = Work([0] + [1000] * 9), Source(10)
    async with map(work, source.items(), concurrency=4, ordered=ordered) as stream:
        assert await anext(stream) == 0
        await settle()
        assert stream.running == 4
    assert sorted(work.cancelled) == [1, 2, 3, 4]
    assert source.closed
    assert asyncio.all_tasks() == {asyncio.current_task()}


async def test_breaking_out_and_dropping_the_stream_cleans_up() -> None:
    work, source = Work([0] + [1000] * 9), Source(10)
    async for _ in map(work, source.items(), concurrency=4):
        break  # no aclose: the loop's async-generator finaliser must clean up
    gc.collect()
    await settle()
    assert sorted(work.cancelled) == [1, 2, 3, 4]
    assert source.closed
    assert asyncio.all_tasks() == {asyncio.current_task()}


async def test_sync_fn_runs_inline_or_in_threads() -> None:
    loop_thread = threading.get_ident()

    def where(_: int) -> int:
        return threading.get_ident()

    inline = {r async for r in map(where, range(4))}
    assert inline == {loop_thread}
    threaded = {r async for r in map(where, range(4), to_thread=True)}
    assert loop_thread not in threaded


async def test_a_sync_source_and_sync_generator_are_closed() -> None:
    closed = False

    def numbers() -> Iterator[int]:
        nonlocal closed
        try:
            yield from range(100)
        finally:
            closed = True

    async with map(lambda x: x + 1, numbers(), concurrency=2) as stream:
        assert await anext(stream) == 1
    assert closed


async def test_map_over_chunks_closes_the_chunk_stream() -> None:
    closed = False

    async def body() -> AsyncIterator[bytes]:
        nonlocal closed
        try:
            while True:
                yield b"z" * 100
        finally:
            closed = True

    async with map(len, chunks(body(), 64), concurrency=2) as sizes:
        assert await anext(sizes) == 64
    assert closed


async def test_repr_shows_live_state() -> None:
    work = Work([1000] * 3)
    stream = map(work, range(3), concurrency=2)
    task = asyncio.ensure_future(anext(stream))
    await settle()
    assert repr(stream) == (
        "MapStream(Work, concurrency=2, ordered=True, running=2, held=2, delivered=0)"
    )
    task.cancel()
    await asyncio.wait([task])
    await stream.aclose()


@pytest.mark.parametrize("concurrency", [0, -3, 2.0, "4"])
def test_a_bad_concurrency_is_refused_by_name(concurrency: object) -> None:
    with pytest.raises(RequestError) as caught:
        map(abs, [1], concurrency=concurrency)  # type: ignore[call-overload]
    assert caught.value.field == "concurrency"


def test_bad_fn_items_and_thread_use_are_refused() -> None:
    async def coro(x: int) -> int:
        return x

    with pytest.raises(RequestError, match="fn"):
        map(42, [1])  # type: ignore[call-overload]
    with pytest.raises(RequestError, match="items"):
        map(abs, 42)  # type: ignore[call-overload]
    with pytest.raises(RequestError, match="to_thread"):
        map(coro, [1], to_thread=True)
