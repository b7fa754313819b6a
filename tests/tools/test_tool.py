"""``@tool``: pacing, concurrency, timeouts, retries, cache and metrics, on a fake clock."""

from __future__ import annotations

import asyncio
import itertools
import threading
from typing import Any

import httpx
import pytest

from overdrive import ConfigError, QueueTimeoutError
from overdrive.config import RetryConfig
from overdrive.monitor import Metrics
from overdrive.monitor.names import (
    TOOL_CALLS,
    TOOL_DURATION,
    TOOL_ERRORS,
    TOOL_QUEUE_WAIT,
    TOOL_RETRIES,
)
from overdrive.testing import FakeClock
from overdrive.tools import Toolbox, ToolOptions, runner_of, tool
from tests.fakes import finish


def box_on(clock: FakeClock) -> Toolbox:
    return Toolbox(clock=clock, metrics=Metrics(clock=clock))


async def test_rpm_paces_calls_evenly_on_the_clock() -> None:
    clock = FakeClock()
    started: list[float] = []

    @tool("search", rpm=60, box=box_on(clock))
    async def search(query: str) -> str:
        started.append(clock.now())
        return query

    answers = await finish(clock, asyncio.gather(*(search(str(i)) for i in range(5))))
    assert answers == ["0", "1", "2", "3", "4"]
    assert started == pytest.approx([0.0, 1.0, 2.0, 3.0, 4.0], abs=0.02)


async def test_rps_is_the_same_pacing_per_second() -> None:
    clock = FakeClock()
    started: list[float] = []

    @tool(rps=2, box=box_on(clock))
    async def ping() -> None:
        started.append(clock.now())

    await finish(clock, asyncio.gather(*(ping() for _ in range(3))))
    assert started == pytest.approx([0.0, 0.5, 1.0], abs=0.02)


async def test_concurrency_bound_is_never_exceeded() -> None:
    clock = FakeClock()
    running, peak = 0, 0

    @tool(concurrency=3, box=box_on(clock))
    async def fetch(i: int) -> int:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await clock.sleep(1.0)
        running -= 1
        return i

    answers = await finish(clock, asyncio.gather(*(fetch(i) for i in range(10))))
    assert answers == list(range(10))
    assert peak == 3
    assert clock.now() == pytest.approx(4.0, abs=0.05)  # ceil(10 / 3) rounds of 1 s


async def test_timeout_then_retry_then_success() -> None:
    clock = FakeClock()
    calls = 0

    @tool(timeout="2s", box=box_on(clock))
    async def slow_once() -> str:
        nonlocal calls
        calls += 1
        if calls == 1:
            await clock.sleep(10.0)  # past the timeout: cut, then retried
        return "done"

    assert await finish(clock, slow_once()) == "done"
    assert calls == 2
    metrics = runner_of(slow_once).metrics
    assert metrics.value(TOOL_ERRORS, tool="slow_once", error="TimeoutError") == 1.0
    assert metrics.value(TOOL_RETRIES, tool="slow_once") == 1.0


async def test_only_the_named_exceptions_are_retried() -> None:
    clock = FakeClock()
    seen: list[type[Exception]] = []
    errors: list[Exception] = [ConnectionError("flaky"), KeyError("bad")]

    @tool(retry=(ConnectionError,), attempts=5, box=box_on(clock))
    async def call() -> None:
        error = errors.pop(0)
        seen.append(type(error))
        raise error

    with pytest.raises(KeyError):
        await finish(clock, call())
    assert seen == [ConnectionError, KeyError]  # KeyError is not named: no third attempt


async def test_attempts_exhausted_raises_the_last_error() -> None:
    clock = FakeClock()
    count = 0

    @tool(retry=ConnectionError, attempts=3, box=box_on(clock))
    async def down() -> None:
        nonlocal count
        count += 1
        raise ConnectionError(f"attempt {count}")

    with pytest.raises(ConnectionError, match="attempt 3"):
        await finish(clock, down())
    assert count == 3


async def test_cache_answers_repeats_and_coalesces_calls_in_flight() -> None:
    clock = FakeClock()
    runs = 0

    @tool("lookup", cache="10m", box=box_on(clock))
    async def lookup(term: str) -> str:
        nonlocal runs
        runs += 1
        await clock.sleep(1.0)
        return term.upper()

    first = await finish(clock, asyncio.gather(lookup("a"), lookup("a"), lookup("b")))
    assert list(first) == ["A", "A", "B"]
    assert runs == 2  # the two "a" calls in flight shared one run
    assert await lookup("a") == "A"
    assert runs == 2
    metrics = runner_of(lookup).metrics
    counts = {o: metrics.value(TOOL_CALLS, tool="lookup", outcome=o) for o in ("ok", "coalesced")}
    assert counts == {"ok": 2.0, "coalesced": 1.0}
    assert metrics.value(TOOL_CALLS, tool="lookup", outcome="cached") == 1.0


async def test_without_cache_identical_calls_all_run() -> None:
    clock = FakeClock()
    runs = 0

    @tool(concurrency=10, box=box_on(clock))
    async def send_mail(to: str) -> None:
        nonlocal runs
        runs += 1
        await clock.sleep(1.0)

    await finish(clock, asyncio.gather(send_mail("x"), send_mail("x")))
    assert runs == 2


async def test_metrics_split_queue_wait_from_running() -> None:
    clock = FakeClock()

    @tool("paced", rpm=60, box=box_on(clock))
    async def paced() -> None:
        await clock.sleep(0.5)

    await finish(clock, asyncio.gather(paced(), paced()))
    metrics = runner_of(paced).metrics
    waited = metrics.histogram(TOOL_QUEUE_WAIT, tool="paced")
    ran = metrics.histogram(TOOL_DURATION, tool="paced")
    assert waited.count == 2
    assert waited.sum == pytest.approx(1.0, abs=0.02)
    assert ran.count == 2
    assert ran.sum == pytest.approx(1.0, abs=0.02)
    assert metrics.value(TOOL_CALLS, tool="paced", outcome="ok") == 2.0


async def test_a_plain_tool_counts_calls_and_errors() -> None:
    clock = FakeClock()

    @tool(box=box_on(clock))
    async def maybe(fail: bool) -> int:
        if fail:
            raise ValueError("no")
        return 1

    assert await maybe(False) == 1
    with pytest.raises(ValueError, match="no"):
        await maybe(True)
    metrics = runner_of(maybe).metrics
    assert metrics.value(TOOL_CALLS, tool="maybe", outcome="ok") == 1.0
    assert metrics.value(TOOL_CALLS, tool="maybe", outcome="error") == 1.0


def test_sync_function_from_sync_code_runs_under_its_limits() -> None:
    runs: list[str] = []

    @tool(concurrency=1, cache=60)
    def read(path: str) -> str:
        runs.append(threading.current_thread().name)
        return path * 2

    assert read("ab") == "abab"
    assert read("ab") == "abab"  # from the cache
    assert len(runs) == 1
    assert runs[0] != threading.current_thread().name  # ran in a worker thread
    assert not asyncio.iscoroutinefunction(read)


def test_a_plain_sync_tool_runs_inline() -> None:
    @tool()
    def add(a: int, b: int) -> int:
        return a + b

    assert add(2, 3) == 5


async def test_methods_are_tools_and_keys_leave_self_out() -> None:
    clock = FakeClock()
    runs = 0

    class Search:
        @tool("method_search", cache=60, box=box_on(clock))
        async def find(self, term: str) -> str:
            nonlocal runs
            runs += 1
            return f"{term}!"

    assert await Search().find("x") == "x!"
    assert await Search().find("x") == "x!"
    assert runs == 1


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"rpm": 0}, "rpm"),
        ({"rpm": 60, "rps": 1}, "rps"),
        ({"rps": -1.0}, "rps"),
        ({"concurrency": 0}, "concurrency"),
        ({"concurrency": "many"}, "concurrency"),
        ({"timeout": "soon"}, "timeout"),
        ({"timeout": 0}, "timeout"),
        ({"attempts": 0}, "attempts"),
        ({"retry": ("NoSuchError",)}, "retry"),
        ({"retry": (42,)}, "retry"),
        ({"cache": -5}, "cache"),
        ({"queue_timeout": "later"}, "queue_timeout"),
    ],
)
def test_bad_options_name_the_option(options: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as caught:
        tool("bad", **options)
    assert caught.value.field == field


async def test_a_queue_deadline_fails_the_call_and_is_not_retried() -> None:
    clock = FakeClock()
    runs = 0

    @tool(rpm=60, timeout=5, queue_timeout=0.5, box=box_on(clock))
    async def paced() -> None:
        nonlocal runs
        runs += 1

    first = asyncio.ensure_future(paced())
    with pytest.raises(QueueTimeoutError):
        await finish(clock, asyncio.gather(first, paced()))
    await first
    assert runs == 1  # the second waited 0.5 s of its 1 s turn, then gave up


async def test_one_name_shares_one_queue_where_priority_goes_first() -> None:
    clock = FakeClock()
    order: list[str] = []
    box = box_on(clock)

    @tool("ordered", rpm=60, box=box)
    async def low(tag: str) -> None:
        order.append(tag)

    @tool("ordered", rpm=60, priority=5, box=box)
    async def urgent(tag: str) -> None:
        order.append(tag)

    runner = runner_of(low)
    assert runner_of(urgent) is runner  # one name, one set of limits
    assert runner.queue is not None  # a paced tool queues for its rate
    await low("first")  # books the first second
    waiting = [asyncio.ensure_future(low(f"low{i}")) for i in range(2)]
    await asyncio.sleep(0)
    waiting.append(asyncio.ensure_future(urgent("urgent")))
    await asyncio.sleep(0)
    assert runner.queue.waiting == 3
    await finish(clock, asyncio.gather(*waiting))
    assert order == ["first", "urgent", "low0", "low1"]
    assert clock.now() == pytest.approx(3.0, abs=0.02)


def test_one_name_with_other_limits_is_refused() -> None:
    box = box_on(FakeClock())

    @tool("search", rpm=60, box=box)
    async def search(query: str) -> str:
        return query

    with pytest.raises(ConfigError, match="already defined with other limits") as caught:

        @tool("search", rpm=30, box=box)
        async def search_again(query: str) -> str:
            return query

    assert caught.value.field == "name"


async def test_retries_back_off_within_the_retry_config() -> None:
    clock = FakeClock()
    box = Toolbox(clock=clock, retry=RetryConfig(base=1.0, cap=1.5))
    started: list[float] = []

    @tool(retry=ConnectionError, attempts=4, box=box)
    async def flaky() -> str:
        started.append(clock.now())
        if len(started) < 4:
            raise ConnectionError("reset")
        return "ok"

    assert await finish(clock, flaky()) == "ok"
    gaps = [b - a for a, b in itertools.pairwise(started)]
    assert all(0 <= gap <= 1.5 + 1e-9 for gap in gaps)  # full jitter up to the cap
    assert gaps[0] <= 1.0 + 1e-9  # the first retry: up to the base


def test_retry_names_resolve_to_exception_types() -> None:
    options = ToolOptions.of(retry=["ConnectionError", "asyncio.TimeoutError"])
    assert options.retry == (ConnectionError, asyncio.TimeoutError)
    with pytest.raises(ConfigError, match="no exception named 'NoSuchError'"):
        ToolOptions.of(retry="NoSuchError")
    with pytest.raises(ConfigError, match="expected exception types"):
        ToolOptions.of(retry="os.path")


def test_max_concurrency_bounds_what_may_move() -> None:
    assert ToolOptions.of(concurrency=4, max_concurrency=16).concurrency_bounds == (1, 16)
    with pytest.raises(ConfigError) as caught:
        ToolOptions.of(concurrency=8, max_concurrency=4)
    assert caught.value.field == "max_concurrency"
    with pytest.raises(ConfigError, match="needs a concurrency"):
        ToolOptions.of(max_concurrency=4)


async def test_auto_concurrency_uses_the_adaptive_limit() -> None:
    clock = FakeClock()

    @tool(concurrency="auto", box=box_on(clock))
    async def work() -> int:
        return 1

    assert await work() == 1
    assert type(runner_of(work).limit).__name__ == "AdaptiveLimit"


class Refused(Exception):
    """A 429 with ``Retry-After``, as a tool's client may raise it."""

    def __init__(self, retry_after: float) -> None:
        super().__init__("429")
        self.retry_after = retry_after


async def test_a_failure_that_says_retry_after_is_waited_out_by_every_call() -> None:
    clock = FakeClock()
    started: list[tuple[str, float]] = []
    refusals = [Refused(5.0)]

    @tool("quota", rpm=600, retry=Refused, box=box_on(clock))
    async def quota(tag: str) -> str:
        started.append((tag, clock.now()))
        if refusals:
            raise refusals.pop()
        return tag

    first = asyncio.ensure_future(quota("first"))
    await finish(clock, asyncio.sleep(0.05))  # first was refused and holds the limit
    assert list(await finish(clock, asyncio.gather(first, quota("second")))) == ["first", "second"]
    retried = [t for tag, t in started if tag == "first"][1]
    second = next(t for tag, t in started if tag == "second")
    assert retried >= 5.0  # waited the 5 s it was told, not the backoff's fraction of one
    assert second >= 5.0  # the other call was held too, though it never saw the 429


async def test_an_http_status_error_with_a_retry_after_header_is_waited_out() -> None:
    clock = FakeClock()
    started: list[float] = []
    request = httpx.Request("GET", "http://tools.invalid/search")
    response = httpx.Response(503, headers={"retry-after": "3"}, request=request)

    @tool(retry=httpx.HTTPStatusError, box=box_on(clock))
    async def search() -> str:
        started.append(clock.now())
        if len(started) == 1:
            raise httpx.HTTPStatusError("unavailable", request=request, response=response)
        return "found"

    assert await finish(clock, search()) == "found"
    assert started[1] - started[0] >= 3.0
