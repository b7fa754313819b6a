"""Gateway under abuse (issue 14): does one gateway keep answering, in bounded memory?

    python benchmarks/bench_gateway_abuse.py [--seconds 30] [--ramp 3] [--quick] [--json]
        [--servers overdrive,httptools,h11] [--stream-mb 20] [--keep-logs DIR]

Four attacks run at once against one server (``_abuse.py``, raw asyncio
sockets in one process of their own): an endless header value (``x-big:
aaaa...`` in 64 KB writes, unauthenticated, reconnecting when cut off), 200
slowloris connections sending one header byte every 3 s, 15 clients that open
a streamed chat completion of ``--stream-mb`` MB and never read it, and one
client that writes 250,000 pipelined ``GET /health/live`` and never reads an
answer. Meanwhile a probe (a process of its own) sends ``GET /health/live``
one at a time on its own keep-alive connection, and this process samples the
server's resident set size (``VmRSS``) and CPU time from ``/proc``.

The attacks start together; after ``--ramp`` seconds the probe counts for
``--seconds``. A probe still unanswered when the window closes counts the
wait it had so far, so a stalled server shows its stall, not an empty sample.

The same ``GatewayApp`` with the same config is served three ways, each in a
process of its own and alone on the machine while attacked:

* ``overdrive gateway`` (its own HTTP/1.1 protocol, ``gateway/_protocol.py``);
* ``uvicorn --http httptools`` and ``uvicorn --http h11``: uvicorn's own
  protocols, no flags beyond the lean ones the gateway uses too (uvloop, no
  access log, no server or date header).

Upstream is ``_abuse.StreamUpstream``, not the sim: the sim's answers are
16..63 words, a few KB a stream, and an unread stream only hurts when the
upstream has megabytes to push. It writes well-formed chat chunks, waiting
for each write to be taken, so "upstream MB sent" is what the server under
test read from it, give or take the kernel's socket buffers on both hops
(on loopback up to ~14 MB a stream): far above that, the server kept it in
memory; "up cut" counts the streams the server closed upstream. The config is
bench_gateway's (rpm/tpm far above use) for that upstream with a
concurrency of 64 (all 15 streams upstream at once), the memory cache at
``CACHE_MEMORY``, the access log off (one line per pipelined request would
measure the log writer), the ``[gateway]`` hardening knobs at their defaults.

What each attack saw: how many endless-header connections it took and the
most header bytes one of them was written before the server hung up (the
kernel's socket buffers, megabytes on loopback, are in that figure: it is
what the server could have taken, at most); how many slowloris connections
are still open at the end and how long the ended ones lived; how many unread
streams are still open; how many pipelined requests were written. MB are
MiB (2**20 bytes) throughout.

Acceptance (issue 14), for the overdrive gateway: probe p50 under 20 ms, and
peak RSS within idle RSS + the cache budget + the bound these attacks may
hold under the config: 15 x (``stream_buffer_bytes`` + ``write_buffer_bytes``)
(each unread stream's buffer and its connection's) + ``write_buffer_bytes``
(the pipeliner's unread answers) + 201 x ``max_head_bytes`` (heads still
arriving) + ``SLACK_MB`` (allocator and per-connection objects). The same
bound is shown for uvicorn's modes, which do not read those knobs.

Prints a table of the probe and the server's resources, a table of what each
attack saw, gateway / uvicorn ratios, and the verdict; ``--json`` adds one
JSON line with every figure.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import orjson

from _abuse import (
    HOST,
    AbusePlan,
    AttackReport,
    ProbeReport,
    StreamUpstream,
    run_attacks,
    run_probe,
)
from bench_gateway import ServerProcess, gateway_config
from bench_gateway_soak import tree_rss
from overdrive._asgi_server import free_port
from overdrive.config import CONFIG_ENV, Config, load_config

OVERDRIVE, HTTPTOOLS, H11 = "overdrive gateway", "uvicorn httptools", "uvicorn h11"
SERVER_KEYS = {"overdrive": OVERDRIVE, "httptools": HTTPTOOLS, "h11": H11}
CACHE_MEMORY = "64MiB"
CONCURRENCY = 64  # every stream upstream at once: none waits in the queue
SLACK_MB = 64
MAX_P50_MS = 20.0  # acceptance, from the issue
SPAWN_S = 3.0  # time for the attack and probe processes to start before the attacks begin
SAMPLE_S = 0.05
MB = 1 << 20


# --- the servers -------------------------------------------------------------------------


def write_config(workdir: Path, upstream_url: str) -> Path:
    """bench_gateway's config (limits far above use), the cache bounded, the access log off."""
    path = workdir / "overdrive.toml"
    # The config ends in its [cache] table, so the cache's size goes straight after it.
    path.write_text(
        gateway_config(upstream_url, str(CONCURRENCY))
        + f'memory = "{CACHE_MEMORY}"\n'
        # A server stopped mid-attack should not sit out the default 30 s drain.
        + '\n[gateway]\naccess_log = "off"\ndrain_timeout = 1\n'
    )
    return path


def overdrive_argv(config: Path, port: int) -> list[str]:
    argv = [sys.executable, "-m", "overdrive.cli", "gateway", "--config", str(config)]
    return [*argv, "--host", HOST, "--port", str(port), "--workers", "1"]


def uvicorn_argv(http: str) -> Callable[[Path, int], list[str]]:
    """uvicorn serving the gateway's app with its own ``http`` protocol, lean as the gateway."""

    def argv(config: Path, port: int) -> list[str]:
        app = ["overdrive.gateway._app:create_app", "--factory", "--http", http]
        lean = ["--loop", "uvloop", "--lifespan", "on", "--no-access-log", "--no-server-header"]
        lean += ["--no-date-header", "--backlog", "4096", "--timeout-graceful-shutdown", "1"]
        return [sys.executable, "-m", "uvicorn", *app, *lean, "--host", HOST, "--port", str(port)]

    return argv


SERVERS: dict[str, Callable[[Path, int], list[str]]] = {
    OVERDRIVE: overdrive_argv,
    HTTPTOOLS: uvicorn_argv("httptools"),
    H11: uvicorn_argv("h11"),
}


def server_process(name: str, config: Path, workdir: Path) -> ServerProcess:
    port = free_port()
    env = dict(os.environ, **{CONFIG_ENV: str(config)})  # uvicorn's factory reads it
    log = workdir / f"{name.replace(' ', '-')}.log"
    return ServerProcess(name, SERVERS[name](config, port), port, "/health/ready", log, env)


# --- watching the server -------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` so far (``/proc/<pid>/stat``, fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Watch:
    """The server's RSS and CPU over one attack, and the upstream's counters at its end."""

    def __init__(self, pid: int, plan: AbusePlan, upstream: StreamUpstream) -> None:
        self._pid, self._plan, self._upstream = pid, plan, upstream
        self.idle = self.peak = self.at_end = tree_rss(pid)
        self._cpu_from = cpu_seconds(pid)
        self.cpu_s = 0.0
        self.upstream: dict[str, int] | None = None

    def tick(self) -> None:
        if self.upstream is not None:
            return  # after the window: the clients' own checks are not the attack
        now, rss = time.monotonic(), tree_rss(self._pid)
        if now < self._plan.start:  # idle: what the attacks are measured from
            self.idle, self.peak, self._cpu_from = rss, rss, cpu_seconds(self._pid)
            return
        self.peak = max(self.peak, rss)
        if now >= self._plan.end:
            self.at_end = rss
            self.cpu_s = cpu_seconds(self._pid) - self._cpu_from
            self.upstream = self._upstream.stats()

    def until_done(self, jobs: list[Future[Any]]) -> None:
        while not all(job.done() for job in jobs):
            self.tick()
            time.sleep(SAMPLE_S)
        self.tick()


# --- one server under attack -------------------------------------------------------------


@dataclass(slots=True)
class Phase:
    name: str
    plan: AbusePlan
    watch: Watch
    attacks: AttackReport
    probe: ProbeReport
    bound: dict[str, int]  # the parts of the RSS bound, bytes
    alive: bool  # the server still ran at the end
    tracebacks: int  # in the server's log, shutdown included


def rss_bound(config: Config, plan: AbusePlan) -> dict[str, int]:
    """What the config lets these attacks hold at most, part by part (bytes)."""
    gateway = config.gateway
    return {
        "cache": config.cache.memory,
        # A relayed stream may hold its buffer and, past it, a full write buffer.
        "streams": plan.streams * (gateway.stream_buffer_bytes + gateway.write_buffer_bytes),
        "pipeline": gateway.write_buffer_bytes,
        "heads": (plan.slowloris + 1) * gateway.max_head_bytes,
        "slack": SLACK_MB * MB,
    }


def attack(name: str, args: argparse.Namespace) -> Phase:
    """Start the upstream and ``name``, attack it, and stop both."""
    with (
        tempfile.TemporaryDirectory(prefix="bench-abuse-") as tmp,
        StreamUpstream(args.stream_mb * MB) as upstream,
    ):
        workdir = Path(tmp)
        config = write_config(workdir, upstream.base_url)
        with server_process(name, config, workdir) as server:
            plan = make_plan(server.port, args)
            watch = Watch(server.pid, plan, upstream)
            attacks, probe = run_clients(plan, watch)
            alive = server.process is not None and server.process.poll() is None
        log = server.log.read_text(errors="replace")
        if args.keep_logs is not None:
            args.keep_logs.mkdir(parents=True, exist_ok=True)
            (args.keep_logs / server.log.name).write_text(log)
        tracebacks = log.count("Traceback")
        bound = rss_bound(load_config(config), plan)
        return Phase(name, plan, watch, attacks, probe, bound, alive, tracebacks)


def make_plan(port: int, args: argparse.Namespace) -> AbusePlan:
    start = time.monotonic() + SPAWN_S
    return AbusePlan(port, start, args.ramp, args.seconds, uuid.uuid4().hex[:12])


def run_clients(plan: AbusePlan, watch: Watch) -> tuple[AttackReport, ProbeReport]:
    """The attacks and the probe, each in a fresh process, while ``watch`` samples the server."""
    with ProcessPoolExecutor(2, mp_context=get_context("spawn")) as pool:
        attacks, probe = pool.submit(run_attacks, plan), pool.submit(run_probe, plan)
        watch.until_done([attacks, probe])
        return attacks.result(), probe.result()


# --- the figures -------------------------------------------------------------------------


def figures(phase: Phase) -> dict[str, Any]:
    """Every figure of one phase, flat: the table's cells and the JSON line's values."""
    return {**_probe_figures(phase), **_resource_figures(phase), **_attack_figures(phase)}


def _probe_figures(phase: Phase) -> dict[str, Any]:
    load = phase.probe.load
    return {
        "probe_p50_ms": load.percentile(50),
        "probe_p95_ms": load.percentile(95),
        "probe_max_ms": max(load.latencies, default=float("nan")) * 1000,
        "probes": len(load.latencies),
        "probes_unanswered": phase.probe.unanswered,
        "probe_errors": load.errors,
        "probe_first_error": load.first_error,
    }


def _resource_figures(phase: Phase) -> dict[str, Any]:
    watch = phase.watch
    limit = watch.idle + sum(phase.bound.values())
    return {
        "rss_idle_mb": watch.idle / MB,
        "rss_peak_mb": watch.peak / MB,
        "rss_end_mb": watch.at_end / MB,
        "rss_growth_mb": (watch.peak - watch.idle) / MB,
        "rss_bound_mb": limit / MB,
        "rss_within_bound": watch.peak <= limit,
        "cpu_s": watch.cpu_s,
        "alive": phase.alive,
        "log_tracebacks": phase.tracebacks,
    }


def _attack_figures(phase: Phase) -> dict[str, Any]:
    header, loris = phase.attacks.header, phase.attacks.slowloris
    streams, pipeline = phase.attacks.streams, phase.attacks.pipeline
    upstream = phase.watch.upstream or {}
    return {
        "header_connections": header.connections,
        "header_mb_written": header.bytes_written / MB,
        "header_most_on_one_mb": header.most_on_one / MB,
        "header_ends": dict(header.ends),
        "slowloris_opened": loris.opened,
        "slowloris_open_at_end": loris.open_at_end,
        "slowloris_ends": dict(loris.ends),
        "slowloris_median_life_s": statistics.median(loris.lifetimes or [float("nan")]),
        "streams_opened": streams.opened,
        "streams_open_at_end": streams.open_at_end,
        "stream_statuses": dict(streams.statuses),
        "upstream_streams": upstream.get("streams", 0),
        "upstream_cut": upstream.get("cut", 0),
        "upstream_mb_sent": upstream.get("bytes_sent", 0) / MB,
        "pipelined_written": pipeline.written,
        "pipelined_all_written_s": pipeline.all_written_s,
        "pipeline_open_at_end": pipeline.open_at_end,
        "pipeline_first_answer": pipeline.first_answer,
    }


# --- the report --------------------------------------------------------------------------

Cell = Callable[[dict[str, Any]], str]
RESOURCE_COLUMNS: list[tuple[str, Cell]] = [
    ("p50 ms", lambda f: f"{f['probe_p50_ms']:.2f}"),
    ("p95 ms", lambda f: f"{f['probe_p95_ms']:.2f}"),
    ("max ms", lambda f: f"{f['probe_max_ms']:.0f}"),
    ("probes", lambda f: f"{f['probes']}/{f['probes_unanswered']}"),
    ("RSS idle", lambda f: f"{f['rss_idle_mb']:.0f}"),
    ("RSS peak", lambda f: f"{f['rss_peak_mb']:.0f}"),
    ("growth", lambda f: f"{f['rss_growth_mb']:.0f}"),
    ("in bound", lambda f: "yes" if f["rss_within_bound"] else "NO"),
    ("CPU s", lambda f: f"{f['cpu_s']:.1f}"),
    ("tracebacks", lambda f: f"{f['log_tracebacks']}"),
]
ATTACK_COLUMNS: list[tuple[str, Cell]] = [
    ("hdr conns", lambda f: f"{f['header_connections']}"),
    ("hdr max MB", lambda f: f"{f['header_most_on_one_mb']:.2f}"),
    ("loris open", lambda f: f"{f['slowloris_open_at_end']}/{f['slowloris_opened']}"),
    ("loris life s", lambda f: _maybe(f["slowloris_median_life_s"])),
    ("streams open", lambda f: f"{f['streams_open_at_end']}/{f['streams_opened']}"),
    ("up MB sent", lambda f: f"{f['upstream_mb_sent']:.0f}"),
    ("up cut", lambda f: f"{f['upstream_cut']}/{f['upstream_streams']}"),
    ("pipelined", lambda f: f"{f['pipelined_written']}"),
    ("pipe open", lambda f: "yes" if f["pipeline_open_at_end"] else "no"),
]


def _maybe(seconds: float) -> str:
    """A median that may not exist (no slowloris connection ended): "-"."""
    return "-" if math.isnan(seconds) else f"{seconds:.1f}"


def print_table(
    title: str, columns: list[tuple[str, Cell]], rows: dict[str, dict[str, Any]]
) -> None:
    print(f"\n{title}")
    print(f"{'':<19}" + "".join(f"{label:>13}" for label, _ in columns))
    for name, row in rows.items():
        print(f"{name:<19}" + "".join(f"{cell(row):>13}" for _, cell in columns))


def print_report(rows: dict[str, dict[str, Any]]) -> None:
    print_table(
        "probe (GET /health/live; probes: counted/unanswered) and server (RSS MB)",
        RESOURCE_COLUMNS,
        rows,
    )
    print_table("what each attack saw at the end", ATTACK_COLUMNS, rows)
    print("\nhow the server ended them (status, or closed/reset):")
    for name, row in rows.items():
        ends = (f"{key} {row[key]}" for key in ("header_ends", "slowloris_ends", "stream_statuses"))
        print(f"  {name:<18} " + "; ".join(ends) + f"; pipeline {row['pipeline_first_answer']}")


RATIO_FIGURES = {
    "probe_p50_ms": "p50",
    "probe_p95_ms": "p95",
    "rss_growth_mb": "RSS growth",
    "cpu_s": "CPU",
}


def ratios(rows: dict[str, dict[str, Any]]) -> dict[str, dict[str, float]]:
    """The gateway's figure over each uvicorn mode's, for what lower is better in."""
    if OVERDRIVE not in rows:
        return {}
    ours = rows[OVERDRIVE]
    return {
        peer: {key: _ratio(ours[key], row[key]) for key in RATIO_FIGURES}
        for peer, row in rows.items()
        if peer != OVERDRIVE
    }


def _ratio(ours: float, theirs: float) -> float:
    return ours / theirs if theirs else float("nan")


def print_ratios(found: dict[str, dict[str, float]]) -> None:
    if found:
        print(f"\n{OVERDRIVE} / peer (below 1: the gateway did better)")
    for peer, figures_ in found.items():
        cells = ", ".join(f"{RATIO_FIGURES[key]} {value:.3g}x" for key, value in figures_.items())
        print(f"  / {peer:<18} {cells}")


def bound_text(phase: Phase, row: dict[str, Any]) -> str:
    """The RSS bound, part by part, in MB."""
    bound, plan = phase.bound, phase.plan
    heads = plan.slowloris + 1
    return (
        f"idle {row['rss_idle_mb']:.0f} + cache {bound['cache'] / MB:.0f} "
        f"+ {plan.streams} streams x {bound['streams'] / plan.streams / MB:.2f} (buffer + write) "
        f"+ pipeline {bound['pipeline'] / MB:.2f} "
        f"+ {heads} heads x {bound['heads'] / heads / MB:.3f} + slack {SLACK_MB}"
    )


def verdict(phase: Phase, row: dict[str, Any]) -> dict[str, bool]:
    """Print the acceptance checks for the gateway; return which held."""
    passed = {"p50": row["probe_p50_ms"] < MAX_P50_MS, "rss": row["rss_within_bound"]}
    p50 = f"probe p50 {row['probe_p50_ms']:.2f} ms (< {MAX_P50_MS:g} ms)"
    rss = f"peak RSS {row['rss_peak_mb']:.0f} MB <= {row['rss_bound_mb']:.0f} MB"
    print(f"\n{_mark(passed['p50'])}  {p50}")
    print(f"{_mark(passed['rss'])}  {rss} = {bound_text(phase, row)} (MB)")
    if not row["alive"]:
        print("FAIL  the gateway process died during the attack")
    return passed


def _mark(passed: bool) -> str:
    return "PASS" if passed else "FAIL"


# --- main --------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="probe window per server")
    parser.add_argument("--ramp", type=float, default=3.0, help="attack seconds before probing")
    parser.add_argument("--quick", action="store_true", help="a short smoke run (4 s + 1 s ramp)")
    parser.add_argument("--stream-mb", type=int, default=20, help="size of each unread stream")
    parser.add_argument("--json", action="store_true", help="also print one JSON line")
    parser.add_argument("--keep-logs", type=Path, metavar="DIR", help="copy each server's log here")
    parser.add_argument(
        "--servers",
        default="overdrive,httptools,h11",
        help="which to attack, in order: overdrive, httptools, h11",
    )
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.ramp = 4.0, 1.0
    unknown = set(args.servers.split(",")) - set(SERVER_KEYS)
    if unknown:
        parser.error(f"unknown servers: {', '.join(sorted(unknown))}")
    return args


@contextlib.contextmanager
def announced(name: str) -> Iterator[None]:
    print(f"attacking {name} ...", flush=True)
    began = time.monotonic()
    yield
    print(f"  done in {time.monotonic() - began:.0f} s", flush=True)


def main() -> None:
    args = parse_args()
    print(
        f"at once: an endless header (64 KB writes), 200 slowloris (1 byte / 3 s), "
        f"15 unread streams of {args.stream_mb} MB, 250000 pipelined requests unread; "
        f"probe every 20 ms; {args.ramp:g} s ramp + {args.seconds:g} s counted per server"
    )
    phases: dict[str, Phase] = {}
    for key in args.servers.split(","):
        name = SERVER_KEYS[key]
        with announced(name):
            phases[name] = attack(name, args)
    rows = {name: figures(phase) for name, phase in phases.items()}
    print_report(rows)
    found = ratios(rows)
    print_ratios(found)
    passed = verdict(phases[OVERDRIVE], rows[OVERDRIVE]) if OVERDRIVE in phases else {}
    if args.json:
        line: dict[str, Any] = {"seconds": args.seconds, "ramp": args.ramp}
        line["stream_mb"] = args.stream_mb
        parts = next(iter(phases.values())).bound
        line["bound_parts_mb"] = {part: size / MB for part, size in parts.items()}
        line |= {"servers": rows, "ratios": found, "pass": passed}
        print(orjson.dumps(line).decode())


if __name__ == "__main__":
    main()
