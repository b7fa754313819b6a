"""The hidden capacity: calls share an accelerator that slows everyone past the knee."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import httpx
import pytest

from overdrive import cli
from overdrive.sim import SimApp, SimConfig
from overdrive.sim._capacity import Accelerator
from overdrive.testing import FakeClock

MESSAGES = [{"role": "user", "content": "How busy is the accelerator?"}]


def chat(max_tokens: int, **extra: Any) -> dict[str, Any]:
    return {"model": "gpt-4o-mini", "messages": MESSAGES, "max_tokens": max_tokens, **extra}


def connect(app: SimApp) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sim")


def knee(capacity: int, exponent: float = 1.5) -> SimConfig:
    """One second of work per call (no tokens' worth of decode), no jitter."""
    return SimConfig(
        ttft_s=1.0, per_token_s=0.0, jitter=0.0, capacity=capacity, overload_exponent=exponent
    )


async def step(clock: FakeClock, seconds: float, rounds: int = 30) -> None:
    """Advance the clock by ``seconds`` and let every woken task run its course."""
    clock.advance(seconds)
    for _ in range(rounds):
        await asyncio.sleep(0)


async def finish_times(
    clock: FakeClock, tasks: list[asyncio.Task[Any]], until: float, tick: float = 0.01
) -> list[float]:
    """Step the clock and note when each task finishes (to one ``tick``)."""
    finished: dict[int, float] = {}
    for _ in range(round(until / tick)):
        await step(clock, tick)
        for i, task in enumerate(tasks):
            if task.done() and i not in finished:
                finished[i] = clock.now()
    assert len(finished) == len(tasks), "some calls did not finish"
    return [finished[i] for i in range(len(tasks))]


# -- the accelerator alone -----------------------------------------------------------------


def test_speed_is_full_up_to_capacity_then_falls_with_the_exponent() -> None:
    accelerator = Accelerator(4, 1.5, FakeClock())
    assert [accelerator.speed(n) for n in (0, 1, 4)] == [1.0, 1.0, 1.0]
    assert accelerator.speed(8) == pytest.approx(0.5**1.5)
    assert accelerator.speed(16) == pytest.approx(0.25**1.5)


async def work_on(accelerator: Accelerator, seconds: float) -> None:
    with accelerator.occupy():
        await accelerator.work(seconds)


async def test_calls_in_flight_speed_up_when_others_leave(clock: FakeClock) -> None:
    accelerator = Accelerator(1, 1.0, clock)
    short = asyncio.create_task(work_on(accelerator, 1.0))
    long = asyncio.create_task(work_on(accelerator, 3.0))
    # Two on a capacity of one: half speed each, so the short one needs 2 s;
    # then the long one (1 s done, 2 s left) runs alone at full speed.
    done = await finish_times(clock, [short, long], until=4.5)
    assert done[0] == pytest.approx(2.0, abs=0.025)
    assert done[1] == pytest.approx(4.0, abs=0.025)
    assert accelerator.load == 0


async def test_a_call_that_leaves_early_gives_its_share_back(clock: FakeClock) -> None:
    accelerator = Accelerator(1, 1.0, clock)
    leaving = asyncio.create_task(work_on(accelerator, 10.0))
    staying = asyncio.create_task(work_on(accelerator, 2.0))
    await clock.run_for(1.0)  # 0.5 s of work done each
    leaving.cancel()
    done = await finish_times(clock, [staying], until=2.0)
    assert done[0] == pytest.approx(2.5, abs=0.025)
    assert leaving.cancelled()
    assert "load=0, jobs=0" in repr(accelerator)


# -- through the app -----------------------------------------------------------------------


async def concurrent_latency(clock: FakeClock, config: SimConfig, calls: int) -> list[float]:
    async with connect(SimApp(config, clock=clock)) as client:
        tasks = [
            asyncio.create_task(client.post("/v1/chat/completions", json=chat(4)))
            for _ in range(calls)
        ]
        done = await finish_times(clock, tasks, until=30.0)
        assert all(task.result().status_code == 200 for task in tasks)
    return done


@pytest.mark.parametrize(("calls", "stretch"), [(1, 1.0), (4, 1.0), (8, 2**1.5), (12, 3**1.5)])
async def test_latency_is_flat_to_the_knee_then_stretched(
    clock: FakeClock, calls: int, stretch: float
) -> None:
    done = await concurrent_latency(clock, knee(4), calls)
    assert done == pytest.approx([stretch] * calls, abs=0.025)


async def test_no_capacity_means_latency_does_not_depend_on_load(clock: FakeClock) -> None:
    config = SimConfig(ttft_s=1.0, per_token_s=0.0, jitter=0.0)
    assert await concurrent_latency(clock, config, 50) == pytest.approx([1.0] * 50, abs=0.025)


async def test_latency_still_scales_with_output_tokens(clock: FakeClock) -> None:
    config = SimConfig(ttft_s=0.0, per_token_s=0.1, jitter=0.0, capacity=1, overload_exponent=1)
    async with connect(SimApp(config, clock=clock)) as client:
        tasks = [
            asyncio.create_task(client.post("/v1/chat/completions", json=chat(tokens)))
            for tokens in (5, 10)
        ]
        done = await finish_times(clock, tasks, until=3.0)
    # Shared at half speed until the 0.5 s call is done (at 1.0 s), then alone.
    assert done == pytest.approx([1.0, 1.5], abs=0.025)
    assert [t.result().json()["usage"]["completion_tokens"] for t in tasks] == [5, 10]


async def test_streamed_tokens_are_slowed_too(clock: FakeClock) -> None:
    config = SimConfig(ttft_s=0.0, per_token_s=0.1, jitter=0.0, capacity=1, overload_exponent=1)
    request = chat(5, stream=True)
    async with connect(SimApp(config, clock=clock)) as client:
        tasks = [
            asyncio.create_task(client.post("/v1/chat/completions", json=request)) for _ in range(2)
        ]
        done = await finish_times(clock, tasks, until=3.0, tick=0.001)
    assert done == pytest.approx([1.0, 1.0], abs=0.01)
    assert all(task.result().text.endswith("data: [DONE]\n\n") for task in tasks)


async def closed_loop_throughput(clock: FakeClock, workers: int, seconds: float = 20.0) -> float:
    """Completed calls per second with ``workers`` callers sending back to back."""
    completed = 0

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal completed
        while True:
            response = await client.post("/v1/chat/completions", json=chat(4))
            assert response.status_code == 200
            completed += 1

    async with connect(SimApp(knee(8), clock=clock)) as client:
        tasks = [asyncio.create_task(worker(client)) for _ in range(workers)]
        for _ in range(round(seconds / 0.01)):
            await step(clock, 0.01)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return completed / seconds


async def test_throughput_peaks_at_the_capacity() -> None:
    below, at, above = [await closed_loop_throughput(FakeClock(), n) for n in (4, 8, 16)]
    assert at == pytest.approx(8.0, rel=0.1)
    assert below == pytest.approx(4.0, rel=0.1)
    assert above == pytest.approx(8.0 / math.sqrt(2), rel=0.1)  # 16 calls at 2**-1.5 speed


async def test_embeddings_do_not_use_the_accelerator(clock: FakeClock) -> None:
    config = SimConfig(embed_base_s=1.0, embed_per_item_s=0.0, jitter=0.0, capacity=1)
    async with connect(SimApp(config, clock=clock)) as client:
        body = {"model": "e", "input": "text"}
        tasks = [asyncio.create_task(client.post("/v1/embeddings", json=body)) for _ in range(4)]
        done = await finish_times(clock, tasks, until=2.0)
    assert done == pytest.approx([1.0] * 4, abs=0.025)


def test_repr_shows_the_accelerator() -> None:
    assert "Accelerator(capacity=3, exponent=2.0, load=0" in repr(
        SimApp(SimConfig(capacity=3, overload_exponent=2.0))
    )
    assert "Accelerator" not in repr(SimApp(SimConfig()))


# -- the command line ----------------------------------------------------------------------


def test_sim_command_passes_the_capacity(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[SimConfig] = []
    monkeypatch.setattr("overdrive.sim.run_sim", lambda config, host, port: seen.append(config))
    argv = ["sim", "--capacity", "24", "--overload-exponent", "2", "--port", "0"]
    assert cli.main(argv) == 0
    assert (seen[0].capacity, seen[0].overload_exponent) == (24, 2.0)
    assert cli.main(["sim", "--port", "0"]) == 0
    assert (seen[1].capacity, seen[1].overload_exponent) == (None, 1.5)


@pytest.mark.parametrize(
    ("argv", "problem"),
    [
        (["--capacity", "0"], "--capacity: must be an integer >= 1, got 0"),
        (["--overload-exponent", "-1"], "--overload-exponent: must be a finite number > 0, got -1"),
    ],
)
def test_sim_command_rejects_bad_capacity(
    argv: list[str], problem: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        cli.main(["sim", *argv])
    assert problem in capsys.readouterr().err
