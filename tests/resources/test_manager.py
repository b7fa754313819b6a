from __future__ import annotations

import asyncio
import json
import threading

import pytest

from overdrive import ConfigError, MemoryBudgetError, ResourceError
from overdrive.resources import ResourceManager, ResourcePool
from overdrive.resources._executor import CpuExecutor
from overdrive.testing import FakeClock
from tests.resources.things import Maker


def test_allocations_are_accounted_per_owner() -> None:
    manager = ResourceManager(memory="10KiB")
    manager.allocate("cache.memory", 6000)
    manager.allocate("stream.buffers", 1000)
    manager.allocate("stream.buffers", 1000)
    assert manager.usage() == {"cache.memory": 6000, "stream.buffers": 2000}
    assert (manager.memory_used, manager.memory_free) == (8000, 10240 - 8000)

    manager.release("stream.buffers", 1500)
    assert manager.usage("stream.buffers") == {"stream.buffers": 500}
    manager.release("stream.buffers")  # the rest
    assert manager.usage() == {"cache.memory": 6000}


def test_an_allocation_that_does_not_fit_is_refused_whole() -> None:
    manager = ResourceManager(memory=1000)
    manager.allocate("cache.memory", 800)
    assert manager.try_allocate("batch.queue", 300) is False
    with pytest.raises(MemoryBudgetError) as caught:
        manager.allocate("batch.queue", 300)
    error = caught.value
    assert (error.owner, error.requested, error.free, error.budget) == (
        "batch.queue",
        300,
        200,
        1000,
    )
    assert "batch.queue" in str(error)
    assert manager.usage() == {"cache.memory": 800}  # nothing half-granted
    assert manager.try_allocate("batch.queue", 200) is True
    assert manager.memory_free == 0


def test_reserve_gives_back_even_when_the_block_raises() -> None:
    manager = ResourceManager(memory=1000)
    seen: list[int] = []

    def use() -> None:
        with manager.reserve("stream", 700):
            seen.append(manager.memory_used)
            raise KeyError("boom")

    with pytest.raises(KeyError):
        use()
    assert seen == [700]
    assert manager.memory_used == 0
    assert manager.usage() == {}
    with pytest.raises(MemoryBudgetError), manager.reserve("stream", 2000):
        pass


def test_misuse_is_refused() -> None:
    manager = ResourceManager(memory=1000)
    manager.allocate("cache", 100)
    with pytest.raises(ValueError, match="holds 100"):
        manager.release("cache", 101)
    with pytest.raises(ValueError, match=">= 0"):
        manager.allocate("cache", -1)
    with pytest.raises(ConfigError) as caught:
        ResourceManager(memory="lots")
    assert caught.value.field == "memory"


def test_concurrent_threads_never_overrun_the_budget() -> None:
    manager = ResourceManager(memory=40_000)  # less than the threads ask for
    granted: list[int] = []

    def grab() -> None:
        count = 0
        for _ in range(2000):
            if manager.try_allocate("threads", 7):
                count += 1
        granted.append(count)

    threads = [threading.Thread(target=grab) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(granted) == 40_000 // 7
    assert manager.memory_used == sum(granted) * 7 <= 40_000


async def test_named_queues_are_bounded_and_shared() -> None:
    manager = ResourceManager()
    queue = manager.queue("embeddings", maxsize=2)
    assert manager.queue("embeddings", maxsize=2) is queue
    await queue.put(1)
    await queue.put(2)
    producer = asyncio.ensure_future(queue.put(3))
    await asyncio.sleep(0)
    assert not producer.done()  # back-pressure: the producer waits
    assert await queue.get() == 1
    await producer
    with pytest.raises(ConfigError, match="maxsize 2"):
        manager.queue("embeddings", maxsize=5)


async def test_snapshot_is_plain_data_for_the_monitor(clock: FakeClock) -> None:
    manager = ResourceManager(memory="1MB", cpu=CpuExecutor(workers=2))
    manager.allocate("cache.memory", 250_000)
    manager.queue("tools", maxsize=8).put_nowait("job")
    maker = Maker()
    pool = manager.add_pool(ResourcePool(maker.make, close=maker.close, clock=clock, name="db"))
    async with pool.acquire():
        snapshot = manager.snapshot()
    assert await manager.run_cpu(sum, [1, 2, 3]) == 6

    assert json.loads(json.dumps(snapshot)) == snapshot
    assert snapshot["memory"] == {
        "budget": 1_000_000,
        "used": 250_000,
        "free": 750_000,
        "peak": 250_000,
        "owners": {"cache.memory": 250_000},
    }
    assert snapshot["queues"] == {"tools": {"size": 1, "maxsize": 8}}
    assert snapshot["pools"]["db"]["in_use"] == 1
    assert snapshot["cpu"]["workers"] == 2
    assert "memory=250000/1000000" in repr(manager)
    await manager.aclose()


async def test_aclose_closes_pools_and_stops_workers(clock: FakeClock) -> None:
    maker = Maker()
    async with ResourceManager() as manager:
        pool = ResourcePool(maker.make, close=maker.close, clock=clock, name="models")
        assert manager.add_pool(pool) is pool
        assert manager.add_pool(pool) is pool  # the same pool again is fine
        with pytest.raises(ConfigError, match="already called 'models'"):
            manager.add_pool(ResourcePool(maker.make, name="models"))
        async with pool.acquire():
            pass
        await manager.run_cpu(abs, -1)
    assert pool.closed
    assert maker.open == []
    assert manager.cpu.stats()["completed"] == 1
    with pytest.raises(ResourceError, match="shut down"):
        await manager.run_cpu(abs, -1)
