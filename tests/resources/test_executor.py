from __future__ import annotations

import asyncio
import os
import threading

import pytest

from overdrive import ConfigError, ResourceError
from overdrive.resources._executor import CpuExecutor, cpu_count


def test_cpu_count_is_what_this_process_may_use() -> None:
    expected = getattr(os, "process_cpu_count", os.cpu_count)() or 1
    assert cpu_count() == expected >= 1
    assert CpuExecutor().workers == expected


async def test_runs_off_the_event_loop_with_args_and_kwargs() -> None:
    cpu = CpuExecutor(workers=2)
    loop_thread = threading.get_ident()

    def work(a: int, b: int, *, scale: int) -> tuple[int, int]:
        return (a + b) * scale, threading.get_ident()

    value, worker_thread = await cpu.run(work, 2, 3, scale=10)
    assert value == 50
    assert worker_thread != loop_thread
    assert cpu.stats()["completed"] == 1
    assert cpu.stats()["kind"] == "thread"
    cpu.shutdown()


async def test_errors_propagate_and_are_counted() -> None:
    cpu = CpuExecutor(workers=1)

    def fail() -> None:
        raise ZeroDivisionError("in a worker")

    with pytest.raises(ZeroDivisionError, match="in a worker"):
        await cpu.run(fail)
    assert (cpu.failed, cpu.completed, cpu.in_flight) == (1, 0, 0)
    cpu.shutdown()


async def test_at_most_workers_run_at_once() -> None:
    cpu = CpuExecutor(workers=2)
    gate = threading.Event()
    running: list[int] = []
    peak: list[int] = []
    lock = threading.Lock()

    def work() -> None:
        with lock:
            running.append(1)
            peak.append(len(running))
        gate.wait(5)
        with lock:
            running.pop()

    jobs = [asyncio.ensure_future(cpu.run(work)) for _ in range(5)]
    for _ in range(5000):  # until both workers are busy (bounded: never hang the suite)
        if cpu.in_flight == 5 and len(peak) >= 2:
            break
        await asyncio.sleep(0.001)
    assert len(peak) == 2  # three jobs queue behind the two workers
    gate.set()
    await asyncio.gather(*jobs)
    assert max(peak) == 2
    assert cpu.completed == 5
    cpu.shutdown()


async def test_process_workers_run_picklable_callables() -> None:
    cpu = CpuExecutor(workers=1, processes=True)
    assert await cpu.run(pow, 3, 4) == 81
    assert "1 processes" in repr(cpu)
    cpu.shutdown()


async def test_a_shut_down_executor_refuses_work() -> None:
    cpu = CpuExecutor(workers=1)
    cpu.shutdown()
    cpu.shutdown()  # idempotent
    with pytest.raises(ResourceError, match="shut down"):
        await cpu.run(abs, -1)


@pytest.mark.parametrize("workers", [0, -1, True])
def test_bad_worker_counts_name_the_field(workers: int) -> None:
    with pytest.raises(ConfigError) as caught:
        CpuExecutor(workers)
    assert caught.value.field == "workers"
