"""The Ray backend on a real local Ray: agent tasks through engines in worker processes.

One Ray, one simulated upstream and one set of actors serve the module, so it
starts Ray once (seconds) and the actors once per config.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from overdrive import Overdrive
from overdrive.distribute import RayBackend, TaskFn, distribute
from overdrive.sim import SimConfig, SimServer
from tests.distribute.ray_cluster import local_ray
from tests.redis_server import RedisServer

CHAT = "gpt-4o-mini"
TOPICS = 40


def _user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


def _content(reply: dict[str, Any]) -> str:
    text: str = reply["choices"][0]["message"]["content"]
    return text


async def agent(od: Overdrive, item: int) -> str:
    """A two-step agent: ask, then ask again with the first answer in context."""
    question = f"Summarise topic {item % TOPICS}."
    first = _content(await od.chat(model=CHAT, messages=[_user(question)]))
    follow_up = [_user(question), {"role": "assistant", "content": first}, _user("Shorter.")]
    return _content(await od.chat(model=CHAT, messages=follow_up))


def first_time(marker: Path) -> bool:
    """True once per marker, across processes: whoever creates the file first."""
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL))
    except FileExistsError:
        return False
    return True


def dies_once(marker: Path, victim: int) -> TaskFn[int, str]:
    """``agent``, except that ``victim``'s first attempt kills its worker process."""

    async def task(od: Overdrive, item: int) -> str:
        if item == victim and first_time(marker):
            os._exit(1)  # the actor process dies mid-task, as on an OOM kill
        return await agent(od, item)

    return task


def engine_config(sim: SimServer, **extra: Any) -> dict[str, Any]:
    upstream = {"name": "sim", "base_url": sim.base_url, "models": [CHAT], "rpm": 60_000}
    return {"upstreams": [upstream], "retry": {"base": "10ms"}, **extra}


@pytest.fixture(scope="module")
def ray() -> Iterator[Any]:
    with local_ray() as module:
        yield module


@pytest.fixture(scope="module")
def sim() -> Iterator[SimServer]:
    config = SimConfig(seed=7, ttft_s=0.01, per_token_s=0.0005, jitter=0.0, models=(CHAT,))
    with SimServer(config) as server:
        yield server


@pytest.fixture(scope="module")
def backend(ray: Any, sim: SimServer) -> Iterator[RayBackend]:
    """Two actors kept for the module's runs (each run would otherwise start its own)."""
    backend = RayBackend(workers=2)
    yield backend
    asyncio.run(backend.aclose())


@pytest.fixture(scope="module")
def expected(sim: SimServer) -> list[str]:
    """Every topic's answer, from the same agent on a local engine."""

    async def answers() -> list[str]:
        async with Overdrive.from_config(engine_config(sim)) as od:
            return await distribute(agent, range(TOPICS), engine=od).values()

    return asyncio.run(answers())


async def test_hundreds_of_agent_tasks_survive_a_worker_crash(
    backend: RayBackend, sim: SimServer, expected: list[str], tmp_path: Path
) -> None:
    task = dies_once(tmp_path / "died", victim=7)
    config = engine_config(sim)
    run = distribute(
        task, range(120), backend=backend, config=config, build=Overdrive, concurrency=24
    )
    results = await run.results()

    assert [r.index for r in results] == list(range(120))
    assert all(r.ok for r in results), [r.error for r in results if not r.ok][:3]
    assert [r.value for r in results] == [expected[i % TOPICS] for i in range(120)]
    assert (tmp_path / "died").exists()
    assert results[7].attempts == 2  # the task whose worker died ran again
    assert run.metrics.value("overdrive_distribute_retries_total", reason="crash") >= 1


async def test_task_errors_come_back_unwrapped_after_retries(
    backend: RayBackend, sim: SimServer, tmp_path: Path
) -> None:
    marker = tmp_path / "failed-once"

    async def task(od: Overdrive, item: int) -> int:
        if item == 0:
            raise LookupError("no such document")
        if item == 1 and first_time(marker):
            raise TimeoutError("tool call timed out")
        return item

    config = engine_config(sim)
    run = distribute(task, range(4), backend=backend, config=config, build=Overdrive, backoff=0)
    failed, flaky, *rest = await run.results()
    assert type(failed.error) is LookupError  # the task's own error, not Ray's wrapper
    assert failed.attempts == 3
    assert flaky.ok
    assert flaky.attempts == 2
    assert [r.value for r in rest] == [2, 3]


async def test_leaving_early_cancels_the_remote_tasks(
    backend: RayBackend, sim: SimServer, tmp_path: Path
) -> None:
    async def task(od: Overdrive, item: int) -> int:
        if item == 0:
            return item
        first_time(tmp_path / f"started-{item}")
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            first_time(tmp_path / f"cancelled-{item}")  # the actor saw the cancel
            raise
        return item

    config = engine_config(sim)
    # Exactly as many items as slots: none is sent while the run is being left.
    # (Ray may lose a cancel that overtakes an actor task not yet started.)
    async with distribute(
        task, range(4), backend=backend, config=config, build=Overdrive, concurrency=4
    ) as run:
        assert (await anext(run)).index == 0
        # Leave once the others are surely running on the actors (a cold Ray
        # may take a while to start them).
        for _ in range(400):
            if marked(tmp_path, "started") >= 3:
                break
            await asyncio.sleep(0.05)
    assert backend.in_flight == 0
    # Items 1-3 were running. Cancellation reaches the actors asynchronously,
    # so give it time to land on a busy machine.
    for _ in range(300):
        if marked(tmp_path, "cancelled") == marked(tmp_path, "started"):
            break
        await asyncio.sleep(0.05)
    assert marked(tmp_path, "started") == 3
    assert marked(tmp_path, "cancelled") == 3


def marked(directory: Path, what: str) -> int:
    return len(list(directory.glob(f"{what}-*")))


async def test_workers_share_cache_through_redis(
    ray: Any, sim: SimServer, expected: list[str], redis_server: RedisServer
) -> None:
    sim.reset()
    config = engine_config(sim, redis_url=redis_server.url)
    items = range(100)
    run = distribute(
        agent, items, backend=RayBackend(workers=2), config=config, build=Overdrive, concurrency=20
    )
    values = await run.values()

    assert values == [expected[i % TOPICS] for i in items]
    # Each distinct prompt (two per topic) reaches the sim once across both
    # workers: one engine fetches, the other waits on the Redis lease or hits L2.
    assert sim.stats()["requests"]["/v1/chat/completions"] == 2 * TOPICS
