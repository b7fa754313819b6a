"""What seeing costs: gateway throughput with tracing on and the dashboard open, vs both off.

    python benchmarks/bench_observability.py [--seconds 8] [--warmup 2] [--repeats 3]
        [--clients 50] [--sample-ratio R]

Acceptance (issue 20): with tracing on and the dashboard open, the gateway's
throughput stays >= 0.9x of it with both off.

Two ``overdrive gateway`` processes serve the same zero-latency sim with the
same config (``bench_gateway.py``'s: the cache on, limits far above the
load), except that the second has ``[tracing]`` on, exporting every span
(``--sample-ratio``, 1.0 by default: every call traced) over OTLP/HTTP to a
real receiver in this process, which decodes each export and counts its
spans; and while it is measured a dashboard client reads its
``/dashboard/live`` feed (one snapshot a second, as the page does). Load is
``bench_gateway.py``'s: closed-loop keep-alive clients in a process of their
own, every prompt new (no cache hits). Each repeat measures both gateways in
turn, the other paused; the ratio is the median of the per-repeat ratios.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from _gateway_load import LoadPlan, LoadResult, run_load
from _sim_process import SimProcess, zero_latency_sim
from bench_gateway import Door, ServerProcess, alone, gateway_config, sim_port
from overdrive._asgi_server import free_port
from overdrive.trace import DEFAULT_SAMPLE_RATIO

MIN_RATIO = 0.9
PLAIN, OBSERVED = "tracing and dashboard off", "tracing on, dashboard open"


# --- a real OTLP/HTTP receiver ---------------------------------------------------------


class SpanCounter(ThreadingHTTPServer):
    """Accepts OTLP/HTTP trace exports and counts the spans in them."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _ExportHandler)
        self.spans = 0
        self.exports = 0
        self.lock = threading.Lock()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1/traces"


class _ExportHandler(BaseHTTPRequestHandler):
    server: SpanCounter

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        request = ExportTraceServiceRequest.FromString(body)
        spans = sum(len(s.spans) for r in request.resource_spans for s in r.scope_spans)
        with self.server.lock:
            self.server.spans += spans
            self.server.exports += 1
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


# --- the gateways ------------------------------------------------------------------------


def gateway(name: str, sim_url: str, workdir: Path, tracing: str) -> ServerProcess:
    config = workdir / f"{name}.toml"
    config.write_text(gateway_config(sim_url, "auto") + tracing)
    port = free_port()
    argv = [sys.executable, "-m", "overdrive.cli", "gateway", "--config", str(config)]
    argv += ["--host", "127.0.0.1", "--port", str(port)]
    log = workdir / f"{name}.log"
    return ServerProcess(name, argv, port, "/health/ready", log, dict(os.environ))


def tracing_section(endpoint: str, ratio: float | None) -> str:
    sampled = "" if ratio is None else f"sample_ratio = {ratio}\n"
    return (
        f'\n[tracing]\nenabled = true\nendpoint = "{endpoint}"\nservice_name = "bench"\n' + sampled
    )


@contextlib.contextmanager
def dashboard_open(port: int) -> Iterator[list[int]]:
    """A client reading the live feed, as an open page does; yields the frames counter."""
    frames = [0]
    stop = threading.Event()

    def read() -> None:
        url = f"http://127.0.0.1:{port}/dashboard/live?interval=1"
        with httpx.stream("GET", url, timeout=None) as feed:
            for line in feed.iter_lines():
                if line.startswith("data:"):
                    frames[0] += 1
                if stop.is_set():
                    return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        yield frames
    finally:
        stop.set()  # the reader leaves at its next frame; daemon, so it never holds the exit


# --- measuring -----------------------------------------------------------------------------


def phase(port: int, args: argparse.Namespace) -> LoadResult:
    plan = LoadPlan(
        port=port,
        clients=args.clients,
        seconds=args.seconds,
        warmup=args.warmup,
        nonce=uuid.uuid4().hex[:12],
        processes=1,
    )
    return run_load(plan)


def line(name: str, load: LoadResult, extra: str = "") -> None:
    print(
        f"  {name:<28} {load.throughput:8.0f} req/s  p50 {load.percentile(50):6.2f} ms  "
        f"p99 {load.percentile(99):6.2f} ms  errors {load.errors}{extra}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--sample-ratio", type=float, default=None, help="default: the shipped")
    args = parser.parse_args()
    receiver = SpanCounter()
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    ratios: list[float] = []
    results: dict[str, list[LoadResult]] = {PLAIN: [], OBSERVED: []}
    with contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-obs-")))
        sim = stack.enter_context(SimProcess(zero_latency_sim()))
        plain = stack.enter_context(gateway("plain", sim.base_url, workdir, ""))
        traced = tracing_section(receiver.endpoint, args.sample_ratio)
        observed = stack.enter_context(gateway("observed", sim.base_url, workdir, traced))
        doors = {
            "sim": Door(sim_port(sim)),
            PLAIN: Door(plain.port, plain.pid),
            OBSERVED: Door(observed.port, observed.pid),
        }
        ratio = DEFAULT_SAMPLE_RATIO if args.sample_ratio is None else args.sample_ratio
        print(f"{args.clients} clients, {args.warmup:g} s warmup + {args.seconds:g} s counted")
        print(f"traces sampled at {ratio:g}")
        for repeat in range(1, args.repeats + 1):
            print(f"repeat {repeat}/{args.repeats}", flush=True)
            with alone(doors, PLAIN):
                results[PLAIN].append(phase(plain.port, args))
            line(PLAIN, results[PLAIN][-1])
            spans_before = receiver.spans
            with alone(doors, OBSERVED), dashboard_open(observed.port) as frames:
                results[OBSERVED].append(phase(observed.port, args))
            load = results[OBSERVED][-1]
            spans = receiver.spans - spans_before
            line(OBSERVED, load, f"  spans received {spans:,}  dashboard frames {frames[0]}")
            ratios.append(load.throughput / results[PLAIN][-1].throughput)
    report(results, ratios)


def report(results: dict[str, list[LoadResult]], ratios: list[float]) -> None:
    print(f"\nmedian of {len(ratios)} repeat(s)")
    for name, loads in results.items():
        throughput = statistics.median(r.throughput for r in loads)
        p50 = statistics.median(r.percentile(50) for r in loads)
        print(f"  {name:<28} {throughput:8.0f} req/s  p50 {p50:6.2f} ms")
    ratio = statistics.median(ratios)
    verdict = "PASS" if ratio >= MIN_RATIO else "FAIL"
    print(f"{verdict}  observed / plain throughput {ratio:.3f}x (acceptance >= {MIN_RATIO}x)")


if __name__ == "__main__":
    main()
