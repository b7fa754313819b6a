"""Soak: does the gateway hold its memory and answer every call under steady load?

A simulated upstream runs in a child process of its own (``SimProcess``) and
the gateway in another (``python -m overdrive.cli gateway --config <toml>``),
with a small in-memory cache, so the cache fills in the first seconds and
evicts from then on. ``--clients`` tasks (20) keep it busy with a mix of
calls: chat completions whose prompts come from a bounded pool (cache hits
once seen) or are new every time (misses, evicted later), each streamed or
not, and embeddings of both kinds.

The load runs for a ``--warmup`` (300 s), then for ``--minutes`` (10) more,
which are measured. The warm-up is as long as the engine's longest bounded
structures take to fill: the metric windows keep 300 s of per-slot
histograms, so RSS rises for the first five minutes whatever the cache does.
The gateway's resident set size (its process tree, from ``/proc``) is
sampled every few seconds. The target: RSS at the end at most 5 % over RSS
at the end of the warm-up, and zero errors (a non-200 status, a body that is
not a full answer, a transport error, or a traceback in the gateway's log).
The growth since minute 1 and the slope over the measured minutes are
printed too.

Run: ``python benchmarks/bench_gateway_soak.py [--minutes 10] [--warmup 300] [--clients 20]``
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx

from _sim_process import SimProcess
from overdrive._asgi_server import free_port
from overdrive.sim import SimConfig

CHAT_MODEL = "gpt-4o-mini"
EMBED_MODEL = "text-embedding-3-small"
TARGET_GROWTH = 0.05
POOL = 300  # prompts and texts that repeat: cache hits once seen
FRESH_SHARE = 0.3  # calls with a never-seen prompt: misses that fill the cache, then get evicted
CACHE_MEMORY = "4MB"  # small, so the cache is full well before the warm-up ends
MiB = 1 << 20

SIM = SimConfig(
    seed=1,
    ttft_s=0.02,
    per_token_s=0.001,
    embed_base_s=0.01,
    embed_per_item_s=0.001,
    models=(CHAT_MODEL, EMBED_MODEL),
)

FILLER = (
    "the",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "a",
    "lazy",
    "dog",
    "while",
    "it",
    "rains",
)


# ---------------------------------------------------------------- the gateway process


def write_config(directory: Path, sim_url: str) -> Path:
    path = directory / "overdrive.toml"
    path.write_text(
        "[[upstreams]]\n"
        'name = "sim"\n'
        f'base_url = "{sim_url}"\n'
        f'models = ["{CHAT_MODEL}", "{EMBED_MODEL}"]\n'
        "\n[cache]\n"
        f'memory = "{CACHE_MEMORY}"\n'
    )
    return path


def start_gateway(config: Path, port: int, log: IO[bytes]) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "overdrive.cli", "gateway", "--config", str(config)]
    argv += ["--port", str(port)]
    return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)


def wait_ready(process: subprocess.Popen[bytes], url: str, timeout: float = 30.0) -> None:
    """Poll /health/ready until it answers 200 (startup only; the soak itself never polls)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the gateway exited with {process.returncode} while starting")
        try:
            if httpx.get(f"{url}/health/ready", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"the gateway was not ready within {timeout:.0f} s")


def stop_gateway(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def tree_rss(pid: int) -> int:
    """Bytes resident in ``pid`` and its descendants (uvicorn workers, if any)."""
    return sum(_vm_rss(p) for p in _tree(pid))


def _tree(pid: int) -> Iterator[int]:
    yield pid
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        for child in task.read_text().split():
            yield from _tree(int(child))


def _vm_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


# ---------------------------------------------------------------- the load


@dataclass(frozen=True, slots=True)
class Request:
    kind: str  # "chat", "stream" or "embed"
    fresh: bool
    body: dict[str, Any]

    @property
    def path(self) -> str:
        return "/v1/embeddings" if self.kind == "embed" else "/v1/chat/completions"


@dataclass(slots=True)
class Tally:
    requests: int = 0
    hits: int = 0
    by_kind: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)

    def count(self, request: Request, problem: str | None, hit: bool) -> None:
        self.requests += 1
        self.hits += hit
        self.by_kind[f"{request.kind}/{'fresh' if request.fresh else 'pool'}"] += 1
        if problem is not None:
            self.errors[f"{request.kind}: {problem}"] += 1


def text_for(n: int) -> str:
    """The prompt of number ``n``: the same words for the same ``n``, 5..60 of them."""
    words = random.Random(n).choices(FILLER, k=5 + n % 56)
    return f"soak prompt {n}: " + " ".join(words)


def next_request(rng: random.Random, fresh_numbers: Iterator[int]) -> Request:
    kind = rng.choices(("chat", "stream", "embed"), weights=(5, 3, 2))[0]
    fresh = rng.random() < FRESH_SHARE
    text = text_for(next(fresh_numbers) if fresh else rng.randrange(POOL))
    if kind == "embed":
        one = rng.random() < 0.5
        return Request(kind, fresh, {"model": EMBED_MODEL, "input": text if one else [text]})
    body: dict[str, Any] = {
        "model": CHAT_MODEL,
        "messages": [{"role": "user", "content": text}],
        "max_tokens": 32,
    }
    if kind == "stream":
        body["stream"] = True
        body["stream_options"] = {"include_usage": rng.random() < 0.5}
    return Request(kind, fresh, body)


async def call(http: httpx.AsyncClient, request: Request) -> tuple[str | None, bool]:
    """Send one request; return (what was wrong with the answer or None, was it a cache hit)."""
    async with http.stream("POST", request.path, json=request.body) as response:
        body = await response.aread()
    hit = response.headers.get("x-overdrive-cache") == "HIT"
    if response.status_code != 200:
        return f"status {response.status_code}", hit
    return check(request.kind, body), hit


def check(kind: str, body: bytes) -> str | None:
    if kind == "stream":
        return None if body.endswith(b"data: [DONE]\n\n") else "stream did not end with [DONE]"
    payload = json.loads(body)
    if kind == "embed":
        ok = bool(payload.get("data")) and all(d.get("embedding") for d in payload["data"])
        return None if ok else "no embeddings"
    return None if payload["choices"][0]["message"]["content"] else "empty answer"


async def client(
    http: httpx.AsyncClient, seed: int, fresh: Iterator[int], until: float, tally: Tally
) -> None:
    rng = random.Random(seed)
    while time.monotonic() < until:
        request = next_request(rng, fresh)
        try:
            problem, hit = await call(http, request)
        except (httpx.HTTPError, ValueError, KeyError, IndexError, TypeError) as exc:
            problem, hit = type(exc).__name__, False
        tally.count(request, problem, hit)


# ---------------------------------------------------------------- sampling and the report


@dataclass(slots=True)
class Samples:
    """(seconds since the load began, RSS bytes) every ``every`` seconds."""

    pid: int
    every: float
    points: list[tuple[float, int]] = field(default_factory=list)

    def at(self, second: float) -> int:
        """The first sample at or after ``second`` (the last one if none is)."""
        return next((rss for t, rss in self.points if t >= second), self.points[-1][1])

    def slope(self, since: float) -> float:
        """Least-squares RSS growth in bytes per minute over the samples after ``since``."""
        after = [(t / 60, float(rss)) for t, rss in self.points if t >= since]
        if len(after) < 2:
            return 0.0
        minutes, rss = zip(*after, strict=True)
        return statistics.linear_regression(minutes, rss).slope


async def sample(samples: Samples, started: float, until: float, tally: Tally) -> None:
    next_print = 60.0
    while (now := time.monotonic()) < until:
        samples.points.append((now - started, tree_rss(samples.pid)))
        if now - started >= next_print:
            progress(samples, now - started, tally)
            next_print += 60.0
        await asyncio.sleep(samples.every)
    samples.points.append((time.monotonic() - started, tree_rss(samples.pid)))


def progress(samples: Samples, elapsed: float, tally: Tally) -> None:
    rss = samples.points[-1][1] / MiB
    rate = tally.requests / elapsed
    hits = tally.hits / max(tally.requests, 1)
    errors = sum(tally.errors.values())
    print(
        f"{elapsed / 60:5.1f} min  {tally.requests:8d} requests ({rate:4.0f}/s)  "
        f"hits {hits:4.0%}  errors {errors}  RSS {rss:6.1f} MiB",
        flush=True,
    )


async def soak(url: str, pid: int, args: argparse.Namespace) -> tuple[Samples, Tally, float]:
    tally, samples = Tally(), Samples(pid, args.sample_s)
    fresh = itertools.count(POOL)
    limits = httpx.Limits(max_connections=args.clients, max_keepalive_connections=args.clients)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as http:
        started = time.monotonic()
        until = started + args.warmup + args.minutes * 60
        clients = [client(http, seed, fresh, until, tally) for seed in range(args.clients)]
        await asyncio.gather(sample(samples, started, until, tally), *clients)
        elapsed = time.monotonic() - started
        await final_check(http, tally)
    return samples, tally, elapsed


async def final_check(http: httpx.AsyncClient, tally: Tally) -> None:
    """The gateway still serves health after the soak."""
    live = await http.get("/health/live")
    if live.status_code != 200:
        tally.errors[f"health/live after the soak: {live.status_code}"] += 1


def log_errors(log: Path) -> int:
    text = log.read_text(errors="replace")
    return text.count("Traceback (most recent call last)")


def report(samples: Samples, tally: Tally, elapsed: float, args: argparse.Namespace) -> bool:
    first, warm, end = samples.at(60), samples.at(args.warmup), samples.points[-1][1]
    peak = max(rss for _, rss in samples.points)
    growth, early = (end - warm) / warm, (end - first) / first
    errors = sum(tally.errors.values())
    print(f"\ngateway RSS: at 1 min {first / MiB:.1f} MiB, after the {args.warmup:.0f} s", end=" ")
    print(f"warm-up {warm / MiB:.1f} MiB, end {end / MiB:.1f} MiB, peak {peak / MiB:.1f} MiB")
    print(f"  growth over the measured {args.minutes:g} min: {growth:+.2%},", end=" ")
    print(f"slope {samples.slope(args.warmup) / MiB:+.3f} MiB/min; since minute 1: {early:+.2%}")
    rate = tally.requests / elapsed
    print(f"requests: {tally.requests} in {elapsed:.0f} s ({rate:.0f}/s),", end=" ")
    print(f"cache hits {tally.hits / max(tally.requests, 1):.0%}, errors {errors}")
    print("  mix: " + ", ".join(f"{k} {v}" for k, v in sorted(tally.by_kind.items())))
    for problem, count in tally.errors.most_common():
        print(f"  error: {problem} x{count}")
    ok = growth < TARGET_GROWTH and errors == 0 and tally.requests > 0
    verdict = "PASS" if ok else "FAIL"
    print(f"{verdict}: RSS growth {growth:+.2%} (target < {TARGET_GROWTH:.0%}), {errors} errors")
    return ok


def run(args: argparse.Namespace) -> bool:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="bench-soak-") as tmp, SimProcess(SIM) as sim:
        config, log_path = write_config(Path(tmp), sim.base_url), Path(tmp) / "gateway.log"
        with log_path.open("wb") as log:
            gateway = start_gateway(config, port, log)
            try:
                wait_ready(gateway, url)
                print(f"gateway pid {gateway.pid} on {url}, sim on {sim.base_url};", end=" ")
                print(f"{args.clients} clients, {args.warmup:.0f} s warm-up", end=" ")
                print(f"+ {args.minutes:g} min measured, cache {CACHE_MEMORY}", flush=True)
                samples, tally, elapsed = asyncio.run(soak(url, gateway.pid, args))
            finally:
                stop_gateway(gateway)
        if tracebacks := log_errors(log_path):
            tally.errors["traceback in the gateway log"] += tracebacks
            print(log_path.read_text(errors="replace")[-4000:])
    return report(samples, tally, elapsed, args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="measured minutes")
    parser.add_argument("--clients", type=int, default=20, help="concurrent client tasks")
    parser.add_argument("--warmup", type=float, default=300.0, help="seconds before the baseline")
    parser.add_argument("--sample-s", type=float, default=2.0, help="seconds between RSS samples")
    args = parser.parse_args()
    if args.minutes <= 0 or args.warmup < 0:
        parser.error("--minutes must be positive and --warmup not negative")
    sys.exit(0 if run(args) else 1)


if __name__ == "__main__":
    main()
