"""Gateway overhead on loopback: the zero-latency sim direct vs through overdrive vs LiteLLM proxy.

    python benchmarks/bench_gateway.py [--seconds 10] [--warmup 2] [--repeats 3]
        [--clients 50] [--load-processes 1] [--skip-litellm] [--litellm-venv DIR]
        [--floor] [--gateway-concurrency auto|N] [--paced-rate 5000] [--profile FILE]

Acceptance (issue 7): with 50 concurrent clients sending distinct prompts (no
cache hits), the gateway serves >= 0.4x the requests/s of the sim served
directly and >= 20x those of LiteLLM proxy with an equivalent config, in the
same run, and adds <= 2 ms to the p50 latency.

Every server runs in a process of its own, started once for the whole run:

* the sim (``overdrive.sim``) with no latency, no jitter and no rate limit, so
  what is measured is each door's own cost;
* ``overdrive gateway`` (one worker) from a TOML config naming the sim with
  rpm/tpm far above what the run can use, the cache on;
* ``litellm`` proxy (one worker) with the sim as an ``openai/`` deployment
  carrying the same rpm/tpm, no auth, its response cache off (every prompt is
  new, so a cache could only cost it). LiteLLM pins ``openai<3``, so it runs
  from a venv of its own, built on first use under
  ``~/.cache/overdrive-bench/litellm-venv`` with ``httptools`` beside it, so
  its uvicorn parses HTTP as fast as ours. Without the venv (or with
  ``--skip-litellm``) the report covers the sim and the gateway;
* with ``--floor``, a raw passthrough proxy on the same uvicorn settings as
  the gateway (no engine, no parsing, a bare asyncio keep-alive pool): the
  most a Python door on uvicorn gets on this machine, to read the gateway's
  row against.

Load comes from fresh processes (``_gateway_load.py``): ``--clients`` raw
HTTP/1.1 keep-alive clients in a closed loop, every prompt unique to its run,
client and request. Each repeat measures every door in turn, ``--warmup``
seconds then ``--seconds`` counted; the table gives medians over repeats, and
each ratio is the median of the per-repeat ratios. The machine this was
written on has 2 cores shared by the load, the sim and the door under test,
so the door's figure pays for the sim's CPU too.

The sim counts the chat completions it answered during each gateway phase:
"upstream/answered" near 1.00 shows no request was served from the cache.
The gateway's phase line also gives its mean admission wait (from
``/metrics``): the part of its latency spent queued for a concurrency slot.
In a closed loop at saturation, p50 is clients / throughput (Little's law),
so "added p50" there restates the throughput gap. ``--paced-rate R`` (default
5000; 0 skips it) then loads the sim and the gateway once more at the same
offered R requests/s, each client starting a request every ``clients / R``
seconds: the p50 difference there is the time the gateway adds to a call
when it is not the bottleneck. It is printed beside the verdict, not in it.

``--profile FILE`` runs one more gateway phase under py-spy after the table's
phases and prints the hottest frames.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from types import TracebackType

import orjson

from _gateway_load import MODEL, LoadPlan, LoadResult, read_response, run_load
from _sim_process import ChildServer, SimProcess, zero_latency_sim
from overdrive._asgi import Receive, Scope, Send, read_body
from overdrive._asgi_server import BackgroundServer, free_port

LITELLM_SPEC = "litellm[proxy]==1.106.2"  # the pin of pyproject's `peers` extra
LITELLM_EXTRAS = ("httptools",)
LITELLM_VENV = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / (
    "overdrive-bench/litellm-venv"
)
# Far above what a run can use: the limiters run, but never make a call wait.
RPM = 100_000_000
TPM = 100_000_000_000
CHAT_PATH = "/v1/chat/completions"
# Acceptance, from the issue.
MIN_VS_SIM = 0.4
MIN_VS_LITELLM = 20.0
MAX_ADDED_P50_MS = 2.0
READY_TIMEOUT_S = 90.0

SIM, FLOOR, GATEWAY, LITELLM = (
    "sim direct",
    "passthrough floor",
    "overdrive gateway",
    "litellm proxy",
)


# --- servers in processes of their own ---------------------------------------------------


def sim_port(sim: SimProcess) -> int:
    return int(sim.base_url.rsplit(":", 1)[1].split("/", 1)[0])


class ServerProcess:
    """A server command in a subprocess, ready once GET ``ready_path`` answers 200.

    Its output goes to ``log``; if it exits or is not ready in time, the error
    carries the log's tail.
    """

    def __init__(
        self, name: str, argv: list[str], port: int, ready_path: str, log: Path, env: dict[str, str]
    ) -> None:
        self.name, self.argv, self.port = name, argv, port
        self.ready_url = f"http://127.0.0.1:{port}{ready_path}"
        self.log, self.env = log, env
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def __enter__(self) -> ServerProcess:
        with self.log.open("wb") as out:
            # A process group of its own, so its workers can be paused with it.
            self.process = subprocess.Popen(
                self.argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.env,
                start_new_session=True,
            )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited ({self.process.returncode}):\n{self.tail()}"
                )
            if _answers_200(self.ready_url):
                return
            time.sleep(0.2)  # a subprocess tells us nothing else
        raise RuntimeError(f"{self.name} not ready after {READY_TIMEOUT_S:.0f} s:\n{self.tail()}")

    def tail(self, lines: int = 30) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        _signal_group(process.pid, signal.SIGCONT)  # a paused server could not stop
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def _signal_group(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signum)


def _answers_200(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            status: int = response.status
            return status == 200
    except (urllib.error.URLError, OSError):
        return False


# --- overdrive gateway ---------------------------------------------------------------------


def gateway_config(sim_base_url: str, concurrency: str) -> str:
    """The gateway as a user sets it up for one provider: its limits, the cache on."""
    limit = f'"{concurrency}"' if concurrency == "auto" else str(int(concurrency))
    return (
        "[[upstreams]]\n"
        'name = "sim"\n'
        f'base_url = "{sim_base_url}"\n'
        f'models = ["{MODEL}"]\n'
        f"rpm = {RPM}\n"
        f"tpm = {TPM}\n"
        f"concurrency = {limit}\n"
        "\n[cache]\n"
        "enabled = true\n"
    )


def gateway_process(
    sim_base_url: str, workdir: Path, concurrency: str, workers: int
) -> ServerProcess:
    config = workdir / "overdrive.toml"
    config.write_text(gateway_config(sim_base_url, concurrency))
    port = free_port()
    argv = [sys.executable, "-m", "overdrive.cli", "gateway", "--config", str(config)]
    argv += ["--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)]
    log = workdir / "gateway.log"
    return ServerProcess(GATEWAY, argv, port, "/health/ready", log, dict(os.environ))


# --- LiteLLM proxy -------------------------------------------------------------------------


class LiteLLMUnavailable(Exception):
    """The LiteLLM venv could not be built; the message says why."""


def litellm_executable(venv: Path) -> Path:
    """The venv's ``litellm`` command, building the venv first if it is missing or stale."""
    marker = venv / "overdrive-bench.txt"
    wanted = " ".join((LITELLM_SPEC, *LITELLM_EXTRAS))
    command = venv / "bin" / "litellm"
    if command.exists() and marker.exists() and marker.read_text() == wanted:
        return command
    print(f"building the LiteLLM venv in {venv} (once): pip install {wanted}", flush=True)
    shutil.rmtree(venv, ignore_errors=True)
    _run_or_explain([sys.executable, "-m", "venv", str(venv)], "python -m venv")
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", LITELLM_SPEC]
    _run_or_explain([*pip, *LITELLM_EXTRAS], "pip install")
    if not command.exists():
        raise LiteLLMUnavailable(f"{command} missing after pip install")
    marker.write_text(wanted)
    return command


def _run_or_explain(argv: list[str], what: str) -> None:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=900, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise LiteLLMUnavailable(f"{what} failed: {exc}") from exc
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-15:])
        raise LiteLLMUnavailable(f"{what} exited {done.returncode}:\n{tail}")


def litellm_config(sim_base_url: str) -> bytes:
    """The proxy's config: the sim as one deployment with the gateway's limits, no cache.

    JSON is YAML, so no YAML writer is needed.
    """
    params = {
        "model": f"openai/{MODEL}",
        "api_base": sim_base_url,
        "api_key": "sk-sim",
        "rpm": RPM,
        "tpm": TPM,
    }
    return orjson.dumps(
        {
            "model_list": [{"model_name": MODEL, "litellm_params": params}],
            "litellm_settings": {"telemetry": False, "cache": False, "set_verbose": False},
            # No auth, like the gateway; 1.106 refuses to start without it unless told.
            "general_settings": {"dangerously_permit_weak_or_unset_master_key": True},
        },
        option=orjson.OPT_INDENT_2,
    )


def litellm_env() -> dict[str, str]:
    """Offline and quiet: the bundled cost map, errors-only logs (no access log line per call)."""
    env = dict(os.environ)
    env.update(LITELLM_LOCAL_MODEL_COST_MAP="True", LITELLM_LOG="ERROR", LITELLM_TELEMETRY="False")
    return env


def litellm_process(command: Path, sim_base_url: str, workdir: Path, workers: int) -> ServerProcess:
    config = workdir / "litellm.yaml"
    config.write_bytes(litellm_config(sim_base_url))
    port = free_port()
    argv = [str(command), "--config", str(config), "--host", "127.0.0.1", "--port", str(port)]
    argv += ["--num_workers", str(workers)]
    log = workdir / "litellm.log"
    return ServerProcess(LITELLM, argv, port, "/health/readiness", log, litellm_env())


# --- the floor: the least a proxy in Python on uvicorn can do --------------------------------


class Passthrough:
    """Forwards each body to the sim on a pooled keep-alive connection and relays the answer.

    No parsing, no engine, a raw asyncio client: what any Python gateway on
    the same uvicorn settings pays at least, so the gateway's row reads
    against what this machine allows.
    """

    __slots__ = ("_idle", "_port")

    def __init__(self, upstream_port: int) -> None:
        self._port = upstream_port
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        body = await read_body(scope, receive, 1 << 20)
        status, answer = await self._forward(scope["path"], body)
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(answer))]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": answer})

    async def _forward(self, path: str, body: bytes) -> tuple[int, bytes]:
        head = f"POST {path} HTTP/1.1\r\nhost: 127.0.0.1:{self._port}\r\n"
        head += f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
        request = head.encode() + body
        if self._idle:
            # A pooled connection the sim closed while idle (its keep-alive
            # timeout) fails at once; then the call goes on a fresh one.
            with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
                return await self._exchange(self._idle.pop(), request)
        return await self._exchange(await self._connect(), request)

    async def _exchange(
        self, stream: tuple[asyncio.StreamReader, asyncio.StreamWriter], request: bytes
    ) -> tuple[int, bytes]:
        reader, writer = stream
        try:
            writer.write(request)
            answer = await read_response(reader)
        except BaseException:
            writer.close()
            raise
        self._idle.append(stream)
        return answer

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection("127.0.0.1", self._port)


class PassthroughProcess(ChildServer):
    """A :class:`Passthrough` served by uvicorn, as the sim is, in a spawned process."""

    def __init__(self, upstream_port: int) -> None:
        super().__init__(_serve_passthrough, upstream_port)

    @property
    def port(self) -> int:
        return int(self.address)


def _serve_passthrough(upstream_port: int, pipe: Connection) -> None:
    with BackgroundServer(Passthrough(upstream_port)) as server:
        pipe.send(server.port)
        pipe.recv()


# --- measuring -----------------------------------------------------------------------------


@dataclass(slots=True)
class Phase:
    """One contender measured once, what the sim answered meanwhile, the gateway's queueing."""

    load: LoadResult
    upstream_calls: int
    queue_wait_ms: float | None = None  # the gateway's mean admission wait, when it is the door

    @property
    def upstream_share(self) -> float:
        """Upstream chat calls per answered request: 1.0 when nothing came from the cache."""
        return self.upstream_calls / self.load.answered if self.load.answered else float("nan")


@dataclass(slots=True)
class Run:
    """Every contender's phases, one per repeat, in order."""

    phases: dict[str, list[Phase]] = field(default_factory=dict)

    def add(self, name: str, phase: Phase) -> None:
        self.phases.setdefault(name, []).append(phase)

    def repeats(self) -> int:
        return min(len(p) for p in self.phases.values())


def queue_wait(port: int) -> tuple[float, float]:
    """The gateway's summed admission wait (s) and its count, from /metrics; zeros if absent."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text = response.read().decode()
    except (urllib.error.URLError, OSError):
        return 0.0, 0.0
    figures = {"sum": 0.0, "count": 0.0}
    for line in text.splitlines():
        name, _, value = line.partition("{")
        if name in ("overdrive_queue_wait_seconds_sum", "overdrive_queue_wait_seconds_count"):
            figures[name.rsplit("_", 1)[1]] += float(value.rsplit(" ", 1)[1])
    return figures["sum"], figures["count"]


def mean_wait_ms(before: tuple[float, float], after: tuple[float, float]) -> float | None:
    calls = after[1] - before[1]
    return (after[0] - before[0]) / calls * 1000 if calls else None


def sim_chat_calls(sim: SimProcess) -> int:
    requests: dict[str, int] = sim.stats().get("requests", {})
    return int(requests.get(CHAT_PATH, 0))


def measure(
    name: str, port: int, sim: SimProcess, args: argparse.Namespace, rate: float = 0.0
) -> Phase:
    """One phase of load on ``port``: closed loop, or paced at ``rate`` requests/s in all."""
    plan = LoadPlan(
        port=port,
        clients=args.clients,
        seconds=args.seconds,
        warmup=args.warmup,
        nonce=uuid.uuid4().hex[:12],  # no prompt repeats, across phases or runs
        processes=args.load_processes,
        interval=args.clients / rate if rate else 0.0,
    )
    calls, waited = sim_chat_calls(sim), queue_wait(port) if name == GATEWAY else None
    load = run_load(plan)
    phase = Phase(load, sim_chat_calls(sim) - calls)
    if waited is not None:
        phase.queue_wait_ms = mean_wait_ms(waited, queue_wait(port))
    print_phase(name, phase)
    return phase


def print_phase(name: str, phase: Phase) -> None:
    load = phase.load
    line = (
        f"  {name:<18} {load.throughput:9.0f} req/s  p50 {load.percentile(50):7.2f} ms  "
        f"p99 {load.percentile(99):7.2f} ms  errors {load.errors}"
    )
    if name != SIM:
        line += f"  upstream/answered {phase.upstream_share:.2f}"
    if phase.queue_wait_ms is not None:
        line += f"  mean queue wait {phase.queue_wait_ms:.2f} ms"
    print(line + (f"  first error: {load.first_error}" if load.first_error else ""), flush=True)


def run_all(doors: dict[str, Door], sim: SimProcess, args: argparse.Namespace) -> Run:
    """Each repeat measures every door in turn, so drift in the machine hits them alike."""
    run = Run()
    for repeat in range(1, args.repeats + 1):
        print(f"repeat {repeat}/{args.repeats}", flush=True)
        for name, door in doors.items():
            with alone(doors, name):
                run.add(name, measure(name, door.port, sim, args))
    return run


@contextlib.contextmanager
def alone(doors: dict[str, Door], name: str) -> Iterator[None]:
    """Pause (SIGSTOP) every other server we started while ``name`` is measured.

    A proxy between phases still runs background work (LiteLLM's schedulers,
    the gateway's health probes); paused, none of it takes the two cores from
    the door under load. The sim, which every phase needs, is never paused.
    """
    others = [door.pid for other, door in doors.items() if other != name and door.pid]
    for pid in others:
        _signal_group(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in others:
            _signal_group(pid, signal.SIGCONT)


def run_paced(doors: dict[str, Door], sim: SimProcess, args: argparse.Namespace) -> Run:
    """The sim and the gateway once more, each at the same offered rate (not saturated)."""
    print(f"paced at {args.paced_rate:g} req/s offered", flush=True)
    run = Run()
    for name in (SIM, GATEWAY):
        with alone(doors, name):
            run.add(name, measure(name, doors[name].port, sim, args, args.paced_rate))
    return run


def print_paced(paced: Run, rate: float) -> None:
    """The p50 each door gives when it is not the bottleneck, and the difference."""
    sim, gateway = (median_of(paced.phases[n], lambda r: r.percentile(50)) for n in (SIM, GATEWAY))
    served = median_of(paced.phases[GATEWAY], lambda r: r.throughput)
    print(
        f"INFO  at {rate:g} req/s offered (gateway served {served:.0f}/s): p50 sim {sim:.2f} ms, "
        f"gateway {gateway:.2f} ms: the gateway adds {gateway - sim:.2f} ms per call"
    )


# --- profiling the gateway -----------------------------------------------------------------


def profile_gateway(doors: dict[str, Door], sim: SimProcess, args: argparse.Namespace) -> None:
    """One more gateway phase (not in the table) under py-spy; print where its time went."""
    door = doors[GATEWAY]
    spy = shutil.which("py-spy")
    if spy is None or door.pid is None:
        print("\n--profile: py-spy not found (pip install py-spy)", flush=True)
        return
    seconds = str(math.ceil(args.warmup + args.seconds))
    argv = [spy, "record", "-p", str(door.pid), "-d", seconds, "-r", "200", "--gil"]
    argv += ["-f", "raw", "-o", str(args.profile)]
    print(f"\nprofiling the gateway with py-spy into {args.profile}", flush=True)
    quiet = subprocess.DEVNULL
    with subprocess.Popen(argv, stdout=quiet, stderr=quiet) as recorder, alone(doors, GATEWAY):
        measure(GATEWAY, door.port, sim, args)
    if recorder.returncode == 0:
        print_profile(args.profile)


def print_profile(path: Path, top: int = 15) -> None:
    """The frames most often on top of the stack (own time) and the overdrive ones inclusive."""
    own: Counter[str] = Counter()
    overdrive: Counter[str] = Counter()
    for line in path.read_text().splitlines():
        stack, _, samples = line.rpartition(" ")
        frames = stack.split(";")
        own[frames[-1]] += int(samples)
        for frame in set(frames):
            if "overdrive/" in frame and "cli.py" not in frame:
                overdrive[frame] += int(samples)
    total = sum(own.values()) or 1
    for title, counts in (("own time", own), ("overdrive frames, inclusive", overdrive)):
        print(f"top {top} by {title} (% of GIL-held samples):")
        for frame, count in counts.most_common(top):
            print(f"  {count / total:6.1%}  {frame}")


# --- the report ----------------------------------------------------------------------------

Figure = Callable[[LoadResult], float]
COLUMNS: list[tuple[str, str, Figure]] = [
    ("req/s", "{:.0f}", lambda r: r.throughput),
    ("p50 ms", "{:.2f}", lambda r: r.percentile(50)),
    ("p99 ms", "{:.2f}", lambda r: r.percentile(99)),
    ("errors", "{:.0f}", lambda r: float(r.errors)),
]


def median_of(phases: list[Phase], figure: Figure) -> float:
    return statistics.median(figure(p.load) for p in phases)


def print_table(run: Run) -> None:
    print(f"\nmedian of {run.repeats()} repeat(s)")
    print(f"{'':<20}" + "".join(f"{label:>10}" for label, _, _ in COLUMNS))
    for name, phases in run.phases.items():
        cells = (fmt.format(median_of(phases, figure)) for _, fmt, figure in COLUMNS)
        print(f"{name:<20}" + "".join(f"{cell:>10}" for cell in cells))


def paired(run: Run, name: str, other: str, combine: Callable[[Phase, Phase], float]) -> float:
    """The median over repeats of ``combine(name's phase, other's phase)`` of the same repeat."""
    pairs = zip(run.phases[name], run.phases[other], strict=False)
    return statistics.median(combine(a, b) for a, b in pairs)


def throughput_ratio(a: Phase, b: Phase) -> float:
    return a.load.throughput / b.load.throughput if b.load.throughput else float("inf")


def added_p50(a: Phase, b: Phase) -> float:
    return a.load.percentile(50) - b.load.percentile(50)


def print_verdict(run: Run) -> None:
    vs_sim = paired(run, GATEWAY, SIM, throughput_ratio)
    added = paired(run, GATEWAY, SIM, added_p50)
    checks = [
        (
            f"gateway / sim direct throughput {vs_sim:.2f}x",
            f">= {MIN_VS_SIM}x",
            vs_sim >= MIN_VS_SIM,
        ),
        (f"added p50 {added:.2f} ms", f"<= {MAX_ADDED_P50_MS} ms", added <= MAX_ADDED_P50_MS),
    ]
    if LITELLM in run.phases:
        vs_litellm = paired(run, GATEWAY, LITELLM, throughput_ratio)
        litellm_ok = vs_litellm >= MIN_VS_LITELLM
        checks.append((f"gateway / litellm throughput {vs_litellm:.1f}x", ">= 20x", litellm_ok))
    cache = statistics.median(p.upstream_share for p in run.phases[GATEWAY])
    print(f"\ngateway upstream calls per answered request: {cache:.2f} (1.00: no cache hits)")
    for figure, bound, passed in checks:
        print(f"{'PASS' if passed else 'FAIL'}  {figure:<42} (acceptance {bound})")
    if LITELLM not in run.phases:
        print("SKIP  gateway / litellm throughput (LiteLLM proxy not run)")


# --- main ----------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="counted, per phase")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds before counting")
    parser.add_argument("--repeats", type=int, default=3, help="the table shows medians")
    parser.add_argument("--clients", type=int, default=50, help="concurrent closed-loop clients")
    parser.add_argument("--load-processes", type=int, default=1, help="processes the clients share")
    parser.add_argument("--skip-litellm", action="store_true", help="sim and gateway only")
    parser.add_argument(
        "--workers", type=int, default=1, help="server processes of each proxy (default 1)"
    )
    parser.add_argument("--litellm-venv", type=Path, default=LITELLM_VENV)
    parser.add_argument(
        "--floor", action="store_true", help="also measure a raw passthrough proxy (the floor)"
    )
    parser.add_argument(
        "--profile",
        type=Path,
        default=None,
        metavar="FILE",
        help="after the run, one more gateway phase under py-spy (raw stacks into FILE)",
    )
    parser.add_argument(
        "--paced-rate",
        type=float,
        default=5000.0,
        help="requests/s for the paced phase of the sim and the gateway (0: none)",
    )
    parser.add_argument(
        "--gateway-concurrency",
        default="auto",
        help="the upstream's concurrency in the gateway's config: auto (default) or a number",
    )
    return parser.parse_args()


def litellm_command(args: argparse.Namespace) -> Path | None:
    if args.skip_litellm:
        return None
    try:
        return litellm_executable(args.litellm_venv)
    except LiteLLMUnavailable as exc:
        print(f"LiteLLM proxy skipped, its venv could not be built: {exc}", flush=True)
        return None


@dataclass(frozen=True, slots=True)
class Door:
    """Where to send the load, and the process serving it when we started one by command."""

    port: int
    pid: int | None = None


@contextlib.contextmanager
def doors(
    sim: SimProcess, litellm: Path | None, workdir: Path, args: argparse.Namespace
) -> Iterator[dict[str, Door]]:
    """Each door to load: the sim itself, then each server, ready in a process of its own."""
    with contextlib.ExitStack() as stack:
        found = {SIM: Door(sim_port(sim))}
        if args.floor:
            found[FLOOR] = Door(stack.enter_context(PassthroughProcess(sim_port(sim))).port)
        gateway = gateway_process(sim.base_url, workdir, args.gateway_concurrency, args.workers)
        found[GATEWAY] = Door(stack.enter_context(gateway).port, gateway.pid)
        proxy = litellm and start_litellm(stack, litellm, sim, workdir, args.workers)
        if proxy:
            found[LITELLM] = Door(proxy.port, proxy.pid)
        yield found


def start_litellm(
    stack: contextlib.ExitStack, command: Path, sim: SimProcess, workdir: Path, workers: int
) -> ServerProcess | None:
    """LiteLLM proxy, ready; or None, saying why, if it does not start."""
    try:
        return stack.enter_context(litellm_process(command, sim.base_url, workdir, workers))
    except RuntimeError as exc:
        print(f"LiteLLM proxy skipped: {exc}", flush=True)
        return None


def main() -> None:
    args = parse_args()
    litellm = litellm_command(args)
    with contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-gateway-")))
        sim = stack.enter_context(SimProcess(zero_latency_sim()))
        found = stack.enter_context(doors(sim, litellm, workdir, args))
        print(f"{args.clients} clients, {args.warmup:g} s warmup + {args.seconds:g} s counted")
        run = run_all(found, sim, args)
        paced = run_paced(found, sim, args) if args.paced_rate else None
        if args.profile:
            profile_gateway(found, sim, args)
    print_table(run)
    print_verdict(run)
    if paced is not None:
        print_paced(paced, args.paced_rate)


if __name__ == "__main__":
    main()
