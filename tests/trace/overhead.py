"""What tracing costs: per call in the engine, and the gateway's throughput, off vs on.

    python -m tests.trace.overhead [--seconds 5] [--repeats 3] [--clients 50] [--ratios 0.01,1]

1. In process: the engine's own cost of a cache hit (no network), tracing off
   and on at each ratio; the median of ``--repeats`` runs of many calls.
2. The gateway (``overdrive gateway``, one worker, in a process of its own)
   against the zero-latency sim, loaded by ``benchmarks/_gateway_load.py``
   (50 keep-alive clients, every prompt new, so every call goes upstream),
   once with tracing off and once per ratio, exporting over OTLP/HTTP to a
   receiver in this process that answers as a collector does. Each repeat
   runs every mode in turn; the ratio printed is the median of the
   per-repeat ratios. The receiver decodes what it got after each phase:
   the share of requests that were traced is printed beside each figure.

Not a test (its name is no ``test_*``): a run takes about a minute.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from overdrive import Overdrive
from overdrive._calls import chat_call
from tests.trace.receiver import Receiver

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

from _gateway_load import MODEL, LoadPlan, run_load  # noqa: E402
from _sim_process import SimProcess, zero_latency_sim  # noqa: E402
from bench_gateway import ServerProcess, gateway_config, sim_chat_calls  # noqa: E402
from overdrive._asgi_server import free_port  # noqa: E402

HIT_CALLS = 20_000


def tracing_toml(endpoint: str, ratio: float | None) -> str:
    if ratio is None:
        return ""
    return f'\n[tracing]\nenabled = true\nendpoint = "{endpoint}"\nsample_ratio = {ratio}\n'


# --- 1. the engine's cost per call ---------------------------------------------------------


async def hit_cost_us(base_url: str, endpoint: str, ratio: float | None) -> float:
    """Microseconds per cache hit through ``od.request``, over HIT_CALLS calls."""
    config: dict[str, Any] = {
        "upstreams": [{"name": "sim", "base_url": base_url, "models": [MODEL]}]
    }
    if ratio is not None:
        config["tracing"] = {"enabled": True, "endpoint": endpoint, "sample_ratio": ratio}
    async with Overdrive.from_config(config) as od:
        call = chat_call({"model": MODEL, "messages": [{"role": "user", "content": "hit"}]})
        await od.request(call)  # the miss that fills the cache
        started = time.perf_counter()
        for _ in range(HIT_CALLS):
            await od.request(call)
        took = time.perf_counter() - started
        if od.tracer is not None:
            od.tracer.force_flush()
    return took / HIT_CALLS * 1e6


def engine_costs(base_url: str, endpoint: str, ratios: list[float], repeats: int) -> None:
    modes: list[float | None] = [None, *ratios]
    runs: dict[float | None, list[float]] = {mode: [] for mode in modes}
    for _ in range(repeats):
        for mode in modes:
            runs[mode].append(asyncio.run(hit_cost_us(base_url, endpoint, mode)))
    off = statistics.median(runs[None])
    print(f"engine, cache hit, per call (median of {repeats} x {HIT_CALLS}):")
    for mode in modes:
        cost = statistics.median(runs[mode])
        name = "off" if mode is None else f"on, ratio {mode}"
        print(f"  {name:<16} {cost:7.2f} us   (+{cost - off:5.2f} us)")


# --- 2. the gateway's throughput -----------------------------------------------------------


def _stat(pid: int) -> tuple[int, float]:
    """A process's parent and its CPU seconds so far (user + system), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_seconds(root: int) -> float:
    """CPU seconds of ``root`` and every process under it (the gateway and its workers)."""
    parents: dict[int, int] = {}
    spent: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                parents[int(entry.name)], spent[int(entry.name)] = _stat(int(entry.name))
    under = {root}
    for pid in sorted(parents):  # children have larger pids than their parents, mostly
        if parents[pid] in under:
            under.add(pid)
    return sum(spent.get(pid, 0.0) for pid in under)


def gateway_rps(
    sim: SimProcess, otlp: Receiver, ratio: float | None, args: argparse.Namespace, workdir: Path
) -> tuple[float, float, float]:
    """Requests/s through a fresh gateway, its CPU microseconds per request, the share traced.

    CPU per request is the steadier figure on a shared machine: other
    processes' load moves the throughput, much less the gateway's own cost.
    """
    config = workdir / "overdrive.toml"
    config.write_text(gateway_config(sim.base_url, "auto") + tracing_toml(otlp.endpoint, ratio))
    port = free_port()
    argv = [sys.executable, "-m", "overdrive.cli", "gateway", "--config", str(config)]
    argv += ["--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    before, answered = otlp.counts[f"chat {MODEL}"], sim_chat_calls(sim)
    env = dict(os.environ)
    with ServerProcess("gateway", argv, port, "/health/ready", workdir / "gw.log", env) as gw:
        plan = LoadPlan(port, args.clients, args.seconds, args.warmup, uuid.uuid4().hex)
        cpu = cpu_seconds(gw.pid)
        result = run_load(plan)
        cpu = cpu_seconds(gw.pid) - cpu
        # Every request of the phase, its warmup's too, went upstream once (every prompt is new).
        requests = max(sim_chat_calls(sim) - answered, 1)
    # Stopping the gateway closed its engine: the last spans were exported then.
    traced = otlp.counts[f"chat {MODEL}"] - before
    return result.throughput, cpu / requests * 1e6, traced / requests


def gateway_throughput(sim: SimProcess, otlp: Receiver, args: argparse.Namespace) -> None:
    modes: list[float | None] = [None, *args.ratios]
    runs: dict[float | None, list[tuple[float, float, float]]] = {mode: [] for mode in modes}
    with tempfile.TemporaryDirectory() as folder:
        for _ in range(args.repeats):
            for mode in modes:
                runs[mode].append(gateway_rps(sim, otlp, mode, args, Path(folder)))
    print(f"gateway, {args.clients} clients, {args.seconds:.0f} s, median of {args.repeats}:")
    off = runs[None]
    for mode in modes:
        rps, cpu, share = (statistics.median(figures) for figures in zip(*runs[mode], strict=True))
        paired = [on[0] / base[0] for on, base in zip(runs[mode], off, strict=True)]
        cpu_ratio = statistics.median(
            base[1] / on[1] for on, base in zip(runs[mode], off, strict=True)
        )
        name = "off" if mode is None else f"on, ratio {mode}"
        print(
            f"  {name:<16} {rps:7.0f} req/s (x{statistics.median(paired):.3f} paired)   "
            f"{cpu:6.1f} us CPU/request (x{cpu_ratio:.3f})   traced {share:.4f}   "
            f"runs {[round(r[0]) for r in runs[mode]]}"
        )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument(
        "--ratios", type=lambda s: [float(r) for r in s.split(",")], default=[0.01, 1.0]
    )
    parser.add_argument("--skip-gateway", action="store_true")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    with SimProcess(zero_latency_sim()) as sim:
        with Receiver() as otlp:
            engine_costs(sim.base_url, otlp.endpoint, args.ratios, args.repeats)
        if not args.skip_gateway:
            with Receiver() as otlp:
                gateway_throughput(sim, otlp, args)


if __name__ == "__main__":
    main()
