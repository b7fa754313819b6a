"""Python function calls per cache-miss chat call in this process: an exact count across builds.

    python benchmarks/bench_engine_calls.py [--calls 3000]

Wall and CPU times move with a shared machine's load; the number of Python
calls a request makes does not. Against the zero-latency sim in a process of
its own, it counts (with cProfile) the calls of three ways, each with
prompts of its own: the lean upstream client alone, ``od.request`` (every
stage of the pipeline) and ``od.http_client()`` (the in-process door, httpx
included). It uses only names every build since the lean client has, so it
runs against an older tree as well: ``PYTHONPATH=<old tree>/src python
benchmarks/bench_engine_calls.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from _gateway_load import MAX_TOKENS, MODEL
from _sim_process import SimProcess, zero_latency_sim
from overdrive import Overdrive
from overdrive._calls import chat_call

Send = Callable[[int], Awaitable[None]]
WARMUP_CALLS = 200


def body(way: str, sequence: int) -> dict[str, Any]:
    prompt = f"[{way}.{sequence}] In one sentence: why is the sky blue?"
    return {
        "model": MODEL,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": MAX_TOKENS,
    }


def ways(od: Overdrive, http: Any) -> dict[str, Send]:
    wire = od.upstreams()[0]._wire
    assert wire is not None, "the sim's URL should take the lean client"

    async def by_wire(n: int) -> None:
        assert (
            await wire.post("/chat/completions", orjson.dumps(body("wire", n)))
        ).status_code == 200

    async def by_engine(n: int) -> None:
        assert (await od.request(chat_call(body("engine", n)))).status == 200

    async def by_door(n: int) -> None:
        assert (await http.post("/chat/completions", json=body("door", n))).status_code == 200

    return {"wire": by_wire, "engine": by_engine, "door": by_door}


async def count(send: Send, calls: int) -> float:
    for n in range(-WARMUP_CALLS, 0):
        await send(n)
    profile = cProfile.Profile()
    profile.enable()
    for n in range(calls):
        await send(n)
    profile.disable()
    # Each entry: (primitive calls, all calls, own time, cumulative time, callers).
    entries = vars(pstats.Stats(profile))["stats"].values()  # typeshed leaves ``stats`` out
    return sum(int(entry[1]) for entry in entries) / calls


async def run(base_url: str, calls: int) -> None:
    upstream: dict[str, Any] = {"name": "sim", "base_url": base_url, "models": [MODEL]}
    upstream |= {"rpm": 100_000_000, "tpm": 100_000_000_000}
    async with (
        Overdrive.from_config({"upstreams": [upstream]}) as od,
        od.http_client(base_url="http://any.test/v1") as http,
    ):
        for name, send in ways(od, http).items():
            print(f"{name:<8}{await count(send, calls):10.1f} Python calls per request")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--calls", type=int, default=3000, help="counted calls per way")
    args = parser.parse_args()
    with SimProcess(zero_latency_sim()) as sim:
        asyncio.run(run(sim.base_url, args.calls))


if __name__ == "__main__":
    main()
