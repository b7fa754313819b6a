"""The local backend: bounded, streamed, retried tasks on one shared engine."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from overdrive import Overdrive, RequestError
from overdrive.distribute import Backend, TaskResult, distribute
from overdrive.distribute._local import LocalBackend
from overdrive.sim import SimConfig, SimServer
from overdrive.testing import FakeClock

CHAT = "gpt-4o-mini"
IDLE_CONFIG: Any = {
    "upstreams": [{"name": "idle", "base_url": "http://127.0.0.1:9/v1", "models": [CHAT]}]
}


@pytest.fixture
async def od() -> AsyncIterator[Overdrive]:
    """An engine whose upstream is never called: the tasks here do their own work."""
    async with Overdrive.from_config(IDLE_CONFIG) as engine:
        yield engine


async def double(od: Overdrive, item: int) -> int:
    await asyncio.sleep(0)
    return item * 2


class Flaky:
    """Fails each item's first ``failures`` attempts with a ValueError, then doubles it."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.attempts: Counter[int] = Counter()

    async def __call__(self, od: Overdrive, item: int) -> int:
        self.attempts[item] += 1
        if self.attempts[item] <= self.failures:
            raise ValueError(f"flaky {item}")
        return item * 2


async def test_all_items_come_back_with_their_index(od: Overdrive) -> None:
    results = await distribute(double, range(40), engine=od, concurrency=7).results()
    assert [r.index for r in results] == list(range(40))
    assert [r.value for r in results] == [i * 2 for i in range(40)]
    assert all(r.ok and r.attempts == 1 for r in results)


async def test_concurrency_bounds_tasks_in_flight(od: Overdrive) -> None:
    in_flight, peak = 0, 0

    async def task(od: Overdrive, item: int) -> int:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        for _ in range(3):  # stay in flight across a few loop turns
            await asyncio.sleep(0)
        in_flight -= 1
        return item

    run = distribute(task, range(50), engine=od, concurrency=5)
    assert len(await run.values()) == 50
    assert peak == 5
    assert run.counts == {"running": 0, "done": 50, "failed": 0, "retried": 0}


async def test_results_stream_in_completion_order(od: Overdrive) -> None:
    gates = {i: asyncio.Event() for i in range(3)}

    async def task(od: Overdrive, item: int) -> int:
        await gates[item].wait()
        return item

    async with distribute(task, range(3), engine=od, concurrency=3) as run:
        seen = []
        for i in (2, 0, 1):
            gates[i].set()
            seen.append((await anext(run)).index)
    assert seen == [2, 0, 1]


async def test_ordered_yields_in_input_order(od: Overdrive) -> None:
    gates = {i: asyncio.Event() for i in range(3)}

    async def task(od: Overdrive, item: int) -> int:
        await gates[item].wait()
        return item

    async with distribute(task, range(3), engine=od, concurrency=3, ordered=True) as run:
        gates[2].set()
        gates[1].set()
        pending = asyncio.ensure_future(anext(run))
        for _ in range(10):
            await asyncio.sleep(0)  # items 1 and 2 finish; 0 does not, so nothing comes out
        assert not pending.done()
        gates[0].set()
        assert (await pending).index == 0
        assert [r.index async for r in run] == [1, 2]


async def test_a_flaky_task_is_retried(od: Overdrive) -> None:
    flaky = Flaky(failures=2)
    run = distribute(flaky, range(10), engine=od, retries=2, backoff=0)
    results = await run.results()
    assert all(r.ok and r.attempts == 3 for r in results)
    assert [r.value for r in results] == [i * 2 for i in range(10)]
    assert run.counts["retried"] == 20
    assert od.metrics.value("overdrive_distribute_retries_total", reason="error") == 20


async def test_errors_are_reported_per_item_after_retries(od: Overdrive) -> None:
    async def task(od: Overdrive, item: int) -> int:
        if item % 4 == 0:
            raise KeyError(item)
        return item

    run = distribute(task, range(12), engine=od, retries=1, backoff=0)
    results = await run.results()
    failed = [r for r in results if not r.ok]
    assert [r.item for r in failed] == [0, 4, 8]
    assert all(isinstance(r.error, KeyError) and r.attempts == 2 for r in failed)
    assert all(r.value == r.item for r in results if r.ok)
    with pytest.raises(KeyError):
        failed[0].unwrap()
    assert od.metrics.value("overdrive_distribute_tasks_total", outcome="failed") == 3
    assert od.metrics.value("overdrive_distribute_tasks_total", outcome="ok") == 9


async def test_values_raise_the_first_error(od: Overdrive) -> None:
    run = distribute(Flaky(failures=1), range(3), engine=od, retries=0)
    with pytest.raises(ValueError, match="flaky 0"):
        await run.values()


async def test_fail_fast_raises_and_cancels_the_rest(od: Overdrive) -> None:
    cancelled = 0

    async def task(od: Overdrive, item: int) -> int:
        nonlocal cancelled
        if item == 0:
            raise RuntimeError("boom")
        try:
            await asyncio.Event().wait()  # never finishes on its own
        except asyncio.CancelledError:
            cancelled += 1
            raise
        return item

    run = distribute(task, range(6), engine=od, concurrency=4, retries=0, fail_fast=True)
    with pytest.raises(RuntimeError, match="boom"):
        await run.results()
    assert cancelled == 4  # items 1-3, and item 4 that took the failed task's slot
    assert run.counts["running"] == 0


async def test_leaving_early_cancels_the_rest(od: Overdrive) -> None:
    started, cancelled = 0, 0

    async def task(od: Overdrive, item: int) -> int:
        nonlocal started, cancelled
        started += 1
        if item == 0:
            return item
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled += 1
            raise
        return item

    async with distribute(task, range(100), engine=od, concurrency=8) as run:
        async for result in run:
            assert result.index == 0
            break
    assert started == 9  # item 0 freed its slot for item 8; nothing after
    assert cancelled == 8
    assert [r async for r in run] == []  # a closed run yields nothing more


async def test_items_may_be_a_lazy_generator(od: Overdrive) -> None:
    pulled = 0

    def items() -> Iterator[int]:
        nonlocal pulled
        for i in range(30):
            pulled += 1
            yield i

    run = distribute(double, items(), engine=od, concurrency=4)
    first = await anext(run)
    assert pulled < 30  # pulled as slots free up, not all at once
    rest = [r async for r in run]
    assert sorted(r.index for r in [first, *rest]) == list(range(30))


async def test_an_items_iterator_that_raises_ends_the_run_with_its_error(od: Overdrive) -> None:
    def items() -> Iterator[int]:
        yield 1
        raise OSError("source gone")

    with pytest.raises(OSError, match="source gone"):
        await distribute(double, items(), engine=od).results()


async def test_retries_wait_their_backoff_on_the_clock(od: Overdrive, clock: FakeClock) -> None:
    run = distribute(Flaky(failures=1), [5], engine=od, backoff=1.0, clock=clock)
    pending = asyncio.ensure_future(run.results())
    for _ in range(10):
        await asyncio.sleep(0)
    assert clock.sleepers == 1
    assert not pending.done()
    clock.advance(1.0)  # the first retry waits at most `backoff` seconds
    [result] = await pending
    assert result.value == 10
    assert result.attempts == 2


async def test_without_an_engine_the_config_builds_one() -> None:
    engines: list[Overdrive] = []

    async def task(od: Overdrive, item: int) -> str:
        engines.append(od)
        return od.models()[0]

    values = await distribute(task, range(3), config=IDLE_CONFIG, build=Overdrive).values()
    assert values == [CHAT] * 3
    assert len(set(map(id, engines))) == 1  # one engine shared by every task


async def test_a_backend_instance_stays_open_across_runs(od: Overdrive) -> None:
    backend = LocalBackend()
    first = await distribute(double, [1], engine=od, backend=backend).values()
    second = await distribute(double, [2], backend=backend).values()  # keeps the engine
    assert first + second == [2, 4]
    await backend.aclose()


async def test_a_custom_backend_plugs_in(od: Overdrive) -> None:
    class Tripling(Backend):
        name = "tripling"

        async def start(self, engine: Any, config: Any, concurrency: int, build: Any) -> None:
            return None

        async def attempt(self, packed: Any, item: Any) -> Any:
            return item * 3

    results = await distribute(double, [1, 2], engine=od, backend=Tripling()).values()
    assert results == [3, 6]


def plain(od: Overdrive, item: int) -> int:
    return item


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"fn": plain}, "fn"),
        ({"items": "abc"}, "items"),
        ({"items": 5}, "items"),
        ({"concurrency": 0}, "concurrency"),
        ({"concurrency": True}, "concurrency"),
        ({"retries": -1}, "retries"),
        ({"backoff": -0.5}, "backoff"),
        ({"backend": "spark"}, "backend"),
        ({"engine": None}, "engine"),
    ],
)
async def test_bad_arguments_name_their_field(
    od: Overdrive, options: dict[str, Any], field: str
) -> None:
    arguments: dict[str, Any] = {"fn": double, "items": [1], "engine": od, **options}
    with pytest.raises(RequestError) as caught:
        distribute(arguments.pop("fn"), arguments.pop("items"), **arguments)
    assert caught.value.field == field


def test_the_ray_backend_needs_a_config() -> None:
    with pytest.raises(RequestError) as caught:
        distribute(double, [1], backend="ray")
    assert caught.value.field in ("config", "backend")  # "backend" when Ray is not installed


def test_importing_overdrive_does_not_import_ray() -> None:
    code = "import sys, overdrive, overdrive.distribute; print('ray' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_result_and_run_reprs_show_state(od: Overdrive) -> None:
    result: TaskResult[int, int] = TaskResult(3, 3, error=ValueError("x"), attempts=2)
    assert not result.ok
    assert "TaskResult(index=3" in repr(result)
    assert "state=new" in repr(distribute(double, [1], engine=od))


@pytest.fixture(scope="module")
def sim() -> Iterator[SimServer]:
    with SimServer(SimConfig(seed=3, ttft_s=0.01, per_token_s=0.0005, models=(CHAT,))) as server:
        yield server


async def test_agent_tasks_share_the_engine_cache(sim: SimServer) -> None:
    config = {"upstreams": [{"name": "sim", "base_url": sim.base_url, "models": [CHAT]}]}

    async def agent(od: Overdrive, item: int) -> str:
        messages = [{"role": "user", "content": f"question {item % 3}"}]
        reply = await od.chat(model=CHAT, messages=messages)
        content: str = reply["choices"][0]["message"]["content"]
        return content

    async with Overdrive.from_config(config) as od:
        answers = await distribute(agent, range(30), engine=od, concurrency=10).values()
    assert len(set(answers)) == 3
    assert answers[:3] * 10 == answers
    assert sim.stats()["requests"]["/v1/chat/completions"] == 3


async def test_without_an_engine_or_its_class_the_run_says_what_to_pass() -> None:
    async def task(od: Overdrive, item: int) -> int:
        return item

    with pytest.raises(RequestError, match="build=Overdrive") as raised:
        await distribute(task, range(2), config=IDLE_CONFIG).values()
    assert raised.value.field == "build"
