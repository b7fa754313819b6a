from __future__ import annotations

import asyncio

import pytest

from overdrive.monitor import Metrics, measure, metrics_text
from overdrive.monitor._measure import measured_names
from overdrive.testing import FakeClock


def test_with_block_observes_seconds() -> None:
    clock = FakeClock()
    metrics = Metrics(clock)
    with metrics.measure("tool_call", tool="search") as timer:
        clock.advance(0.25)
    assert timer.elapsed == 0.25
    histogram = metrics.histogram("tool_call_seconds", tool="search")
    assert (histogram.count, histogram.sum) == (1, 0.25)


def test_errors_are_timed_and_counted_by_type() -> None:
    clock = FakeClock()
    metrics = Metrics(clock)

    def fail() -> None:
        with metrics.measure("lookup_seconds", op="get"):
            clock.advance(1.0)
            raise KeyError("x")

    with pytest.raises(KeyError):
        fail()
    assert metrics.histogram("lookup_seconds", op="get").sum == 1.0
    assert metrics.value("lookup_errors_total", op="get", error="KeyError") == 1


def test_sync_decorator_times_each_call() -> None:
    clock = FakeClock()
    metrics = Metrics(clock)

    @metrics.measure("work")
    def work(seconds: float) -> float:
        clock.advance(seconds)
        if seconds > 1:
            raise ValueError("too slow")
        return seconds * 2

    assert work(0.5) == 1.0
    assert work.__name__ == "work"
    with pytest.raises(ValueError, match="too slow"):
        work(2.0)
    histogram = metrics.histogram("work_seconds")
    assert (histogram.count, histogram.sum) == (2, 2.5)
    assert metrics.value("work_errors_total") == 1


async def test_async_decorator_and_async_with() -> None:
    clock = FakeClock()
    metrics = Metrics(clock)

    @metrics.measure("fetch", upstream="a")
    async def fetch(seconds: float) -> str:
        await clock.sleep(seconds)
        return "ok"

    task = asyncio.ensure_future(fetch(0.3))
    await clock.run_for(0.5)
    assert await task == "ok"
    async with metrics.measure("fetch", upstream="a"):
        clock.advance(0.7)
    histogram = metrics.histogram("fetch_seconds", upstream="a")
    assert histogram.count == 2
    assert histogram.max == pytest.approx(0.7)
    assert histogram.min == pytest.approx(0.3, abs=0.011)


async def test_cancellation_is_timed_but_not_an_error() -> None:
    clock = FakeClock()
    metrics = Metrics(clock)

    @metrics.measure("wait")
    async def wait() -> None:
        await clock.sleep(10)

    task = asyncio.ensure_future(wait())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert metrics.histogram("wait_seconds").count == 1
    assert metrics.value("wait_errors_total") == 0


def test_names_get_a_seconds_unit() -> None:
    assert measured_names("x") == ("x_seconds", "x_errors_total")
    assert measured_names("x_seconds") == ("x_seconds", "x_errors_total")


def test_default_registry_functions() -> None:
    with measure("test_default_registry_step", case="one"):
        pass
    assert 'test_default_registry_step_seconds_count{case="one"} 1' in metrics_text()
