"""Four processes, one limit: a shared RedisLimiter against a limiter per process.

    python benchmarks/bench_shared_limiter.py [--seconds 60] [--rpm 600] [--burst 0.5]

Starts a private ``redis-server`` on a free loopback port, then runs two groups
of processes over the same window of wall-clock time:

* shared: ``--processes`` processes pacing through one ``RedisLimiter``;
* naive: as many processes, each with its own ``LocalLimiter`` at the same
  limit, which is what a limit configured per process (or per pod) amounts to.

Every process acquires greedily, sleeping exactly the wait it is told, and
records the moment of each grant. For each group the report gives the total,
the expected figure (rate x duration plus the burst), the error, the busiest
sliding window of 1, 10 and 60 s against what the limit allows in it, and each
process's share. Acceptance: the shared total is within +-2% of expected.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import multiprocessing
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

from overdrive.flow import Limiter, LimitSpec, LocalLimiter, RedisLimiter

TOLERANCE = 0.02
WINDOWS = (1.0, 10.0, 60.0)


@dataclass(frozen=True)
class Run:
    """What one process did: the wall-clock moment of each grant, and Redis errors seen."""

    grants: list[float]
    errors: int


@contextmanager
def redis_server() -> Iterator[str]:
    """A throwaway redis-server (no persistence) on a free port; yields its URL."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed (Debian: apt-get install redis-server)")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with tempfile.TemporaryDirectory() as directory:
        args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
        args += ["--appendonly", "no", "--dir", directory]
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_for_ping(port)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            proc.terminate()
            proc.wait()


def wait_for_ping(port: int, deadline: float = 10.0) -> None:
    give_up = time.monotonic() + deadline
    while time.monotonic() < give_up:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(16).startswith(b"+PONG"):
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise SystemExit(f"redis-server on port {port} did not answer")


def worker(url: str | None, spec: LimitSpec, start: float, seconds: float) -> Run:
    """One process: shared through Redis when ``url`` is given, else on its own."""
    return asyncio.run(acquire_greedily(url, spec, start, seconds))


async def acquire_greedily(url: str | None, spec: LimitSpec, start: float, seconds: float) -> Run:
    limiter: Limiter
    limiter = LocalLimiter(spec) if url is None else RedisLimiter(spec, name="bench", url=url)
    await limiter.try_acquire(0, 0)  # connects and loads the script; books nothing
    if time.time() >= start:
        raise RuntimeError("process started after the window opened: raise --warmup")
    await asyncio.sleep(start - time.time())
    grants: list[float] = []
    end = start + seconds
    while (now := time.time()) < end:
        wait = await limiter.try_acquire(1, 0)
        if wait == 0.0:
            grants.append(time.time())
        else:
            await asyncio.sleep(min(wait, end - now))
    await limiter.aclose()
    return Run(grants, getattr(limiter, "errors", 0))


def busiest(moments: list[float], window: float) -> int:
    """The most grants in any window of ``window`` seconds (starting at a grant)."""
    return max(
        (bisect.bisect_left(moments, t + window) - i for i, t in enumerate(moments)), default=0
    )


def report(label: str, runs: list[Run], spec: LimitSpec, seconds: float) -> float:
    """Print one group's figures; return its total over the expected total."""
    assert spec.rpm is not None
    rate = spec.rpm / 60
    burst_units = max(spec.burst, 1 / rate) * rate
    expected = rate * seconds + burst_units
    moments = sorted(t for run in runs for t in run.grants)
    total = len(moments)
    errors = sum(run.errors for run in runs)
    print(f"\n{label}")
    print(
        f"  grants {total}   expected {expected:.0f} ({rate:g}/s x {seconds:g} s"
        f" + a burst of {burst_units:g})   error {(total - expected) / expected:+.2%}"
    )
    for window in (w for w in WINDOWS if w <= seconds):
        allowed = rate * window + burst_units
        print(
            f"  busiest {window:g} s window: {busiest(moments, window)} (limit allows {allowed:g})"
        )
    shares = "  ".join(f"{len(run.grants)} ({len(run.grants) / max(total, 1):.0%})" for run in runs)
    print(f"  per process: {shares}   redis errors: {errors}")
    return total / expected


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--rpm", type=int, default=600)
    parser.add_argument("--burst", type=float, default=0.5, help="seconds of rate")
    parser.add_argument("--processes", type=int, default=4, help="processes per group")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds to start processes")
    args = parser.parse_args()
    spec = LimitSpec(rpm=args.rpm, tpm=None, burst=args.burst)
    context = multiprocessing.get_context("spawn")
    n = args.processes
    with redis_server() as url, ProcessPoolExecutor(2 * n, mp_context=context) as pool:
        start = time.time() + args.warmup
        jobs = [pool.submit(worker, url, spec, start, args.seconds) for _ in range(n)]
        jobs += [pool.submit(worker, None, spec, start, args.seconds) for _ in range(n)]
        runs = [job.result() for job in jobs]
    shared = report(f"shared: {n} processes, one RedisLimiter", runs[:n], spec, args.seconds)
    naive = report(f"naive: {n} processes, a LocalLimiter each", runs[n:], spec, args.seconds)
    verdict = "PASS" if abs(shared - 1) <= TOLERANCE else "FAIL"
    print(f"\nshared total {shared:.4f}x the limit: {verdict} (acceptance +-{TOLERANCE:.0%})")
    print(f"naive total {naive:.2f}x the limit, {naive / shared:.2f}x the shared total")


if __name__ == "__main__":
    main()
