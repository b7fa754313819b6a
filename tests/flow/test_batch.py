from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from overdrive._errors import ConfigError, OverdriveError
from overdrive.flow._batch import (
    BatchClosedError,
    Batcher,
    BatchQueueFullError,
    BatchResultCountError,
    batched,
)
from overdrive.testing import FakeClock


async def settle(rounds: int = 10) -> None:
    """Let every ready task run; fake time does not move."""
    for _ in range(rounds):
        await asyncio.sleep(0)


class Recorder:
    """A batch handler that records every batch and returns item * 2."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.gate: asyncio.Event | None = None

    async def __call__(self, items: list[int]) -> Sequence[int | BaseException]:
        self.batches.append(list(items))
        if self.gate is not None:
            await self.gate.wait()
        return [i * 2 for i in items]


def spawn(batcher: Batcher[int, int], items: range | list[int]) -> list[asyncio.Task[int]]:
    return [asyncio.create_task(batcher.submit(i)) for i in items]


async def test_full_batch_is_sent_without_waiting(clock: FakeClock) -> None:
    handler = Recorder()
    batcher = Batcher(handler, max_batch=3, max_wait=1.0, clock=clock)
    tasks = spawn(batcher, range(7))
    await settle()
    assert handler.batches == [[0, 1, 2], [3, 4, 5]]
    assert [await t for t in tasks[:6]] == [0, 2, 4, 6, 8, 10]
    assert batcher.queued == 1
    stats = batcher.stats
    assert (stats.batches, stats.items, stats.largest, stats.flush_full) == (2, 6, 3, 2)
    await batcher.aclose()
    assert await tasks[6] == 12


async def test_timer_counts_from_the_first_item(clock: FakeClock) -> None:
    handler = Recorder()
    batcher = Batcher(handler, max_batch=10, max_wait=0.05, clock=clock)
    first = spawn(batcher, [1])
    await settle()
    clock.advance(0.03)
    later = spawn(batcher, [2])
    await settle()
    clock.advance(0.015)  # 0.045 s since the first item
    await settle()
    assert handler.batches == []
    clock.advance(0.01)  # 0.055 s: past max_wait for the oldest item
    await settle()
    assert handler.batches == [[1, 2]]
    assert [await t for t in first + later] == [2, 4]
    assert batcher.stats.flush_timer == 1
    await batcher.aclose()


async def test_cost_limit_flushes_before_overflowing(clock: FakeClock) -> None:
    handler = Recorder()
    batcher = Batcher(handler, max_batch=10, max_cost=10, cost=float, clock=clock)
    tasks = spawn(batcher, [4, 5, 3, 10, 25, 1])
    await settle()
    # 4+5 fits, +3 would be 12; 3 alone, +10 would be 13; 10 fills it; 25 goes alone.
    assert handler.batches == [[4, 5], [3], [10], [25]]
    assert batcher.queued == 1
    assert batcher.stats.flush_cost == 4
    await batcher.aclose()
    assert [await t for t in tasks] == [8, 10, 6, 20, 50, 2]


async def test_cancelled_callers_are_dropped_before_dispatch(clock: FakeClock) -> None:
    handler = Recorder()
    handler.gate = asyncio.Event()
    batcher = Batcher(handler, max_batch=3, max_wait=0.01, clock=clock)
    sent = spawn(batcher, range(3))  # a full batch, held in flight by the gate
    await settle()
    batcher.max_batch = 4
    waiting = spawn(batcher, [3, 4, 5])
    await settle()
    waiting[0].cancel()
    waiting[1].cancel()
    await settle()
    assert batcher.queued == 1
    clock.advance(0.02)
    await settle()
    assert handler.batches == [[0, 1, 2], [5]]
    assert batcher.stats.dropped_cancelled == 2
    # Cancelling after dispatch leaves the batch alone.
    sent[1].cancel()
    handler.gate.set()
    await settle()
    assert [await sent[0], await sent[2], await waiting[2]] == [0, 4, 10]
    assert sent[1].cancelled()
    assert waiting[0].cancelled()
    assert handler.batches == [[0, 1, 2], [5]]
    await batcher.aclose()


async def test_caller_cancelled_just_before_the_flush_is_dropped(clock: FakeClock) -> None:
    handler = Recorder()
    batcher = Batcher(handler, max_batch=3, clock=clock)
    first = spawn(batcher, [0, 1])
    await settle()
    last = spawn(batcher, [2])  # its submit runs before the cancelled caller wakes up
    first[0].cancel()
    await settle()
    assert handler.batches == [[1, 2]]
    assert batcher.stats.dropped_cancelled == 1
    assert [await first[1], await last[0]] == [2, 4]


async def test_timer_is_dropped_when_every_waiter_cancels(clock: FakeClock) -> None:
    handler = Recorder()
    batcher = Batcher(handler, max_batch=5, max_wait=0.01, clock=clock)
    (task,) = spawn(batcher, [1])
    await settle()
    task.cancel()
    await settle()
    assert clock.sleepers == 0
    clock.advance(1)
    await settle()
    assert handler.batches == []


async def test_per_item_errors_fail_only_their_item(clock: FakeClock) -> None:
    async def handler(items: list[int]) -> list[int | BaseException]:
        return [ValueError(f"bad {i}") if i % 2 else i for i in items]

    batcher = Batcher(handler, max_batch=4, clock=clock)
    results = await asyncio.gather(*spawn(batcher, range(4)), return_exceptions=True)
    assert results[0] == 0
    assert results[2] == 2
    assert isinstance(results[1], ValueError)
    assert str(results[1]) == "bad 1"
    assert isinstance(results[3], ValueError)
    assert str(results[3]) == "bad 3"
    assert batcher.stats.errors == 2
    assert batcher.stats.failed_batches == 0


async def test_handler_error_reaches_every_item_of_its_batch(clock: FakeClock) -> None:
    async def handler(items: list[int]) -> list[int]:
        raise RuntimeError("upstream down")

    batcher = Batcher(handler, max_batch=3, clock=clock)
    results = await asyncio.gather(*spawn(batcher, range(3)), return_exceptions=True)
    assert all(isinstance(r, RuntimeError) and str(r) == "upstream down" for r in results)
    assert batcher.stats.failed_batches == 1
    assert batcher.stats.errors == 3


async def test_wrong_result_count_fails_the_batch_clearly(clock: FakeClock) -> None:
    async def handler(items: list[int]) -> list[int]:
        return items[:-1]

    batcher = Batcher(handler, max_batch=3, clock=clock, name="embed")
    results = await asyncio.gather(*spawn(batcher, range(3)), return_exceptions=True)
    for error in results:
        assert isinstance(error, BatchResultCountError)
        assert (error.batcher, error.expected, error.got) == ("embed", 3, 2)
        assert "returned 2 results for 3 items" in str(error)


async def test_queue_full_refuses_the_caller(clock: FakeClock) -> None:
    handler = Recorder()
    handler.gate = asyncio.Event()
    batcher = Batcher(handler, max_batch=2, max_queue=3, clock=clock, name="embed")
    tasks = spawn(batcher, range(3))  # 2 in flight, 1 queued
    await settle()
    with pytest.raises(BatchQueueFullError, match=r"'embed'.*max_queue=3") as caught:
        await batcher.submit(99)
    assert isinstance(caught.value, OverdriveError)
    assert caught.value.limit == 3
    assert batcher.queued == 1
    assert batcher.in_flight == 2
    handler.gate.set()
    await batcher.aclose()
    assert [await t for t in tasks] == [0, 2, 4]


async def test_aclose_flushes_then_refuses(clock: FakeClock) -> None:
    handler = Recorder()
    batcher = Batcher(handler, max_batch=10, max_wait=5.0, clock=clock, name="embed")
    tasks = spawn(batcher, range(3))
    await settle()
    await batcher.aclose()
    assert handler.batches == [[0, 1, 2]]
    assert [t.result() for t in tasks] == [0, 2, 4]
    assert batcher.stats.flush_close == 1
    with pytest.raises(BatchClosedError, match="'embed': closed"):
        await batcher.submit(1)
    await batcher.aclose()  # idempotent


async def test_several_batches_in_flight_at_once(clock: FakeClock) -> None:
    handler = Recorder()
    handler.gate = asyncio.Event()
    batcher = Batcher(handler, max_batch=2, clock=clock)
    tasks = spawn(batcher, range(6))
    await settle()
    assert handler.batches == [[0, 1], [2, 3], [4, 5]]
    assert batcher.in_flight == 6
    assert "in_flight=6" in repr(batcher)
    assert "batches_in_flight=3" in repr(batcher)
    handler.gate.set()
    assert await asyncio.gather(*tasks) == [0, 2, 4, 6, 8, 10]
    assert batcher.in_flight == 0


async def test_max_batch_and_max_wait_change_at_run_time(clock: FakeClock) -> None:
    handler = Recorder()
    batcher = Batcher(handler, max_batch=10, max_wait=1.0, clock=clock)
    tasks = spawn(batcher, range(5))
    await settle()
    batcher.max_batch = 2  # the 5 waiting items already fill two batches
    await settle()
    assert handler.batches == [[0, 1], [2, 3]]
    batcher.max_wait = 0.01  # the waiting item's deadline moves closer
    clock.advance(0.02)
    await settle()
    assert handler.batches[-1] == [4]
    assert await asyncio.gather(*tasks) == [0, 2, 4, 6, 8]
    assert (batcher.max_batch, batcher.max_wait) == (2, 0.01)
    assert "max_batch=2" in repr(batcher)
    assert "max_wait=0.01" in repr(batcher)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_batch", 0),
        ("max_batch", 20_000),
        ("max_batch", 2.5),
        ("max_batch", True),
        ("max_wait", -0.1),
        ("max_wait", float("nan")),
        ("max_wait", 3600.0),
    ],
)
def test_run_time_settings_are_validated(field: str, value: object) -> None:
    batcher = Batcher(Recorder(), max_batch=4, max_wait=0.01)
    with pytest.raises(ValueError, match=field) as caught:
        setattr(batcher, field, value)
    assert isinstance(caught.value, ConfigError)
    assert caught.value.field == field
    assert (batcher.max_batch, batcher.max_wait) == (4, 0.01)


def test_constructor_settings_are_validated() -> None:
    with pytest.raises(ConfigError, match="max_queue"):
        Batcher(Recorder(), max_queue=0)
    with pytest.raises(ConfigError, match="max_cost"):
        Batcher(Recorder(), max_cost=10)
    with pytest.raises(ConfigError, match="max_cost"):
        Batcher(Recorder(), max_cost=-1, cost=float)


async def test_bad_cost_is_refused_without_queueing(clock: FakeClock) -> None:
    batcher = Batcher(Recorder(), max_cost=10, cost=lambda i: -1.0, clock=clock)
    with pytest.raises(ValueError, match="cost"):
        await batcher.submit(1)
    assert batcher.queued == 0


async def test_batched_decorator(clock: FakeClock) -> None:
    seen: list[list[str]] = []

    @batched(max_batch=3, max_wait=0.01, clock=clock)
    async def lengths(texts: list[str]) -> list[int]:
        """Length of each text."""
        seen.append(texts)
        return [len(t) for t in texts]

    assert lengths.__doc__ == "Length of each text."
    tasks = [asyncio.create_task(lengths(t)) for t in ["a", "bb", "ccc", "dddd"]]
    await settle()
    clock.advance(0.02)
    assert await asyncio.gather(*tasks) == [1, 2, 3, 4]
    assert seen == [["a", "bb", "ccc"], ["dddd"]]
    assert lengths.batcher.stats.batches == 2
    assert lengths.batcher.name.endswith("lengths")
    await lengths.aclose()


def test_batched_checks_settings_at_decoration() -> None:
    async def f(items: list[int]) -> list[int]:
        return items

    with pytest.raises(ConfigError, match="max_batch"):
        batched(max_batch=0)(f)


def test_batched_makes_one_batcher_per_event_loop() -> None:
    @batched(max_batch=2, max_wait=0.001)
    async def double(items: list[int]) -> list[int]:
        return [i * 2 for i in items]

    async def run() -> tuple[list[int], Batcher[int, int]]:
        values = list(await asyncio.gather(double(1), double(2)))
        return values, double.batcher

    first_values, first = asyncio.run(run())
    second_values, second = asyncio.run(run())
    assert first_values == second_values == [2, 4]
    assert first is not second


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[int, list[tuple[str, int]]]:
    max_batch = draw(st.integers(1, 5))
    op = st.one_of(
        st.tuples(st.just("submit"), st.integers(0, 0)),
        st.tuples(st.just("cancel"), st.integers(0, 30)),
        st.tuples(st.just("tick"), st.integers(0, 0)),
        st.tuples(st.just("advance"), st.integers(1, 15)),
    )
    return max_batch, draw(st.lists(op, max_size=40))


@settings(max_examples=150, deadline=None)
@given(scenarios())
def test_every_live_caller_gets_its_own_result(scenario: tuple[int, list[tuple[str, int]]]) -> None:
    max_batch, ops = scenario
    asyncio.run(_play(max_batch, ops))


async def _play(max_batch: int, ops: list[tuple[str, int]]) -> None:
    clock = FakeClock()
    handler = Recorder()
    batcher = Batcher(handler, max_batch=max_batch, max_wait=0.01, clock=clock)
    tasks: list[asyncio.Task[int]] = []
    cancelled: set[int] = set()
    started: set[int] = set()

    async def call(item: int) -> int:
        started.add(item)
        return await batcher.submit(item)

    for op, arg in ops:
        if op == "submit":
            tasks.append(asyncio.create_task(call(len(tasks))))
        elif op == "cancel" and arg < len(tasks):
            tasks[arg].cancel()
            cancelled.add(arg)
        elif op == "tick":
            await asyncio.sleep(0)
        elif op == "advance":
            clock.advance(arg / 1000)
            await settle(3)
    await settle(3)  # every submit has started before the batcher closes
    await batcher.aclose()
    await asyncio.gather(*tasks, return_exceptions=True)

    sent = [item for batch in handler.batches for item in batch]
    assert len(sent) == len(set(sent))  # no item sent twice
    assert all(0 < len(batch) <= max_batch for batch in handler.batches)
    assert all(batch == sorted(batch) for batch in handler.batches)  # submit order
    assert set(sent) | cancelled >= started  # only cancelled callers are left out
    assert len(sent) + batcher.stats.dropped_cancelled == len(started)
    for index, task in enumerate(tasks):
        if index not in cancelled:
            assert task.result() == index * 2
            assert index in sent
        elif not task.cancelled():
            assert task.result() == index * 2
