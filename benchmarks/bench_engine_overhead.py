"""The engine's own CPU per call, without an HTTP server in front: where the gateway's time goes.

    python benchmarks/bench_engine_overhead.py [--seconds 5] [--clients 50]
        [--cache-memory 256MB] [--steps 1]

The zero-latency sim runs in a process of its own; this process runs
``--clients`` closed-loop tasks on uvloop, each sending chat calls with
prompts no call has sent before, three ways in turn:

* ``wire``: the lean upstream client alone (``WirePool.post``), the floor;
* ``engine``: ``od.request(chat_call(...))``, every stage of the pipeline;
* ``door``: ``answer(od, "chat", ...)``, what the gateway runs per request
  (JSON parse, checks, the engine, the answer's headers).

Each row gives calls/s and this process's CPU time per call (``process_time``),
the figure to compare between builds: the gateway spends it plus uvicorn's
share on every request. The GC is tuned as the gateway tunes it. ``--steps N``
splits the engine's phase in N and prints each part, to see the cost change as
the memory cache fills (``--cache-memory 16MB`` fills it within a second). ``--ways door`` runs one
way alone, to profile it (``py-spy record -- python ...``).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import uvloop

from _gateway_load import MAX_TOKENS, MODEL
from _sim_process import SimProcess, zero_latency_sim
from overdrive._calls import chat_call
from overdrive.doors._answer import answer
from overdrive.engine import Overdrive
from overdrive.gateway._app import _GC_THRESHOLDS

Send = Callable[[bytes], Awaitable[None]]
WAYS = ("wire", "engine", "door")


def chat_body(way: str, client: int, sequence: int) -> bytes:
    # The way is in the prompt: a later way must not hit what an earlier one stored.
    prompt = f"[{way}.{client}.{sequence}] In one sentence: why is the sky blue?"
    messages = [
        {"role": "system", "content": "You are a terse assistant."},
        {"role": "user", "content": prompt},
    ]
    return orjson.dumps({"model": MODEL, "messages": messages, "max_tokens": MAX_TOKENS})


class Load:
    """Closed-loop clients sending through ``send`` until stopped; counts the calls."""

    def __init__(self, way: str, send: Send, clients: int) -> None:
        self.calls = 0
        self._way = way
        self._send = send
        self._running = True
        self._tasks = [asyncio.ensure_future(self._client(c)) for c in range(clients)]

    async def _client(self, client: int) -> None:
        sequence = 0
        while self._running:
            sequence += 1
            await self._send(chat_body(self._way, client, sequence))
            self.calls += 1

    async def measure(self, seconds: float) -> tuple[float, float]:
        """Calls/s and CPU microseconds per call over the next ``seconds``."""
        calls, cpu, wall = self.calls, time.process_time(), time.perf_counter()
        await asyncio.sleep(seconds)
        done = max(1, self.calls - calls)
        return done / (time.perf_counter() - wall), 1e6 * (time.process_time() - cpu) / done

    async def stop(self) -> None:
        self._running = False
        await asyncio.gather(*self._tasks)


def senders(od: Overdrive) -> dict[str, Send]:
    wire = od.upstreams()[0]._wire
    assert wire is not None, "the sim's URL should take the lean client"

    async def by_wire(body: bytes) -> None:
        response = await wire.post("/chat/completions", body)
        assert response.status_code == 200, response

    async def by_engine(body: bytes) -> None:
        result = await od.request(chat_call(orjson.loads(body)))
        assert result.status == 200, result

    async def by_door(body: bytes) -> None:
        reply = await answer(od, "chat", {}, body)
        assert reply.status == 200, reply.body

    return {"wire": by_wire, "engine": by_engine, "door": by_door}


async def run(base_url: str, args: argparse.Namespace) -> None:
    # Limits far above what the run uses: paced, never held back.
    upstream: dict[str, Any] = {"name": "sim", "base_url": base_url, "models": [MODEL]}
    upstream |= {"rpm": 100_000_000, "tpm": 100_000_000_000}
    config = {"upstreams": [upstream], "cache": {"memory": args.cache_memory}}
    async with Overdrive.from_config(config) as od:
        print(f"{'':8}{'calls/s':>10}{'CPU us/call':>14}")
        for name, send in senders(od).items():
            if name not in args.ways:
                continue
            load = Load(name, send, args.clients)
            await asyncio.sleep(args.warmup)
            steps = args.steps if name == "engine" else 1
            for step in range(steps):
                rate, cpu = await load.measure(args.seconds / steps)
                label = name if steps == 1 else f"{name} {step + 1}/{steps}"
                entries = len(od._cache.memory)
                print(f"{label:<12}{rate:>6.0f}{cpu:>14.1f}   cache entries {entries}")
            await load.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="measured, per way")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds before measuring")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--cache-memory", default="256MB", help="the memory tier's budget")
    parser.add_argument("--steps", type=int, default=1, help="parts of the engine's phase")
    parser.add_argument(
        "--ways", nargs="+", choices=WAYS, default=list(WAYS), help="which ways to run"
    )
    args = parser.parse_args()
    gc.collect()
    gc.freeze()
    gc.set_threshold(*_GC_THRESHOLDS)
    with SimProcess(zero_latency_sim()) as sim:
        uvloop.run(run(sim.base_url, args))


if __name__ == "__main__":
    main()
