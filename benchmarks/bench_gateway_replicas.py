"""Gateway replicas sharing one Redis: does one key's rpm hold in total, not per replica?

Starts a private redis-server, the sim, and ``--replicas`` ``overdrive gateway``
processes with one config: a key limited to ``--rpm``, a top-level
``redis_url``. One client per replica sends calls with that key as fast as
they are answered (429s included) for ``--seconds``, spread evenly. Then it
runs once more with the replicas' own limits (no ``redis_url``).

Prints grants against what the key allows (its burst plus rpm over the run).

    python benchmarks/bench_gateway_replicas.py [--replicas 2] [--rpm 120] [--seconds 60]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import httpx

from bench_gateway_soak import start_gateway, stop_gateway, wait_ready
from bench_shared_limiter import redis_server
from overdrive._asgi_server import free_port
from overdrive.gateway import hash_key
from overdrive.sim import SimConfig, SimServer

SECRET = "sk-bench-replicas"
BURST_S = 1.0


def write_config(directory: Path, sim_url: str, rpm: int, redis_url: str | None) -> Path:
    path = directory / f"gateway-{'shared' if redis_url else 'local'}.toml"
    shared = f'redis_url = "{redis_url}"\n' if redis_url else ""
    path.write_text(
        shared + "[[upstreams]]\n"
        'name = "sim"\n'
        f'base_url = "{sim_url}"\n'
        'models = ["gpt-4o-mini"]\n'
        "\n[[gateway.keys]]\n"
        'name = "team"\n'
        f'key_sha256 = "{hash_key(SECRET)}"\n'
        f"rpm = {rpm}\n"
        f"burst = {BURST_S}\n"
    )
    return path


@contextlib.contextmanager
def replicas(config: Path, count: int, log: IO[bytes]) -> Iterator[list[str]]:
    """``count`` gateway processes on one config, ready; yields their base URLs."""
    processes: list[subprocess.Popen[bytes]] = []
    urls = []
    try:
        for _ in range(count):
            port = free_port()
            processes.append(start_gateway(config, port, log))
            wait_ready(processes[-1], f"http://127.0.0.1:{port}")
            urls.append(f"http://127.0.0.1:{port}/v1")
        yield urls
    finally:
        for process in processes:
            stop_gateway(process)


async def hammer(url: str, seconds: float, outcomes: Counter[tuple[str, int]]) -> None:
    headers = {"authorization": f"Bearer {SECRET}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=10) as http:
        deadline = time.monotonic() + seconds
        sent = 0
        while time.monotonic() < deadline:
            body = {
                "model": "gpt-4o-mini",
                "messages": [{"role": "user", "content": f"{url} call {sent}"}],
                "max_tokens": 2,
            }
            response = await http.post("/chat/completions", json=body)
            outcomes[url, response.status_code] += 1
            sent += 1
            await asyncio.sleep(0.002)  # a steady stream, not a busy loop


def run(urls: list[str], seconds: float) -> tuple[Counter[tuple[str, int]], float]:
    outcomes: Counter[tuple[str, int]] = Counter()
    started = time.monotonic()

    async def all_replicas() -> None:
        await asyncio.gather(*(hammer(url, seconds, outcomes) for url in urls))

    asyncio.run(all_replicas())
    return outcomes, time.monotonic() - started


def report(label: str, outcomes: Counter[tuple[str, int]], elapsed: float, rpm: int) -> None:
    granted = sum(n for (_, status), n in outcomes.items() if status == 200)
    refused = sum(n for (_, status), n in outcomes.items() if status == 429)
    other = sum(n for (_, status), n in outcomes.items() if status not in (200, 429))
    allowed = rpm / 60 * (BURST_S + elapsed)
    per_replica = [n for (_, status), n in sorted(outcomes.items()) if status == 200]
    print(
        f"{label:<22} granted {granted:>5} of {allowed:7.1f} allowed "
        f"({granted / allowed:5.2f}x; per replica {per_replica}), "
        f"429s {refused}, other {other}, {elapsed:.1f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--rpm", type=int, default=120)
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args()
    sim_config = SimConfig(ttft_s=0.0, per_token_s=0.0, jitter=0.0)
    with (
        tempfile.TemporaryDirectory() as directory,
        redis_server() as redis_url,
        SimServer(sim_config) as sim,
    ):
        workdir = Path(directory)
        log = (workdir / "gateways.log").open("wb")
        for label, shared in (("shared through Redis", redis_url), ("a limit per replica", None)):
            config = write_config(workdir, sim.base_url, args.rpm, shared)
            with replicas(config, args.replicas, log) as urls:
                outcomes, elapsed = run(urls, args.seconds)
            report(label, outcomes, elapsed, args.rpm)


if __name__ == "__main__":
    main()
