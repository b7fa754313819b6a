"""The ``overdrive`` command: dashboard | demo | gateway | hash-key | report | sim | top.

``overdrive demo`` runs the built-in agent workload plainly and through
overdrive against an in-process simulated upstream and prints both side by
side; ``overdrive sim --port 8080`` serves the simulated upstream;
``overdrive gateway --config overdrive.toml`` serves the engine over HTTP.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ._errors import ConfigError
from ._validate import check_float, check_int

if TYPE_CHECKING:
    from .optimize import Sample

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    handler = {
        "dashboard": _dashboard,
        "demo": _demo,
        "gateway": _gateway,
        "hash-key": _hash_key,
        "report": _report,
        "sim": _sim,
        "top": _top,
    }[args.command]
    try:
        return handler(args)
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="overdrive", description="Make AI agents fast and cheap.")
    parser.add_argument("--version", action="version", version=f"overdrive {_version()}")
    commands = parser.add_subparsers(dest="command")
    dashboard = commands.add_parser("dashboard", help="an engine and its live dashboard")
    dashboard.add_argument("--config", default=None, help="the engine's TOML (default: --demo)")
    dashboard.add_argument("--host", default="127.0.0.1")
    dashboard.add_argument("--port", type=int, default=8765)
    dashboard.add_argument(
        "--demo", action="store_true", help="simulated upstreams and agents calling them"
    )
    demo = commands.add_parser("demo", help="agent workload, plain vs through overdrive")
    demo.add_argument("--json", action="store_true", help="print one JSON line instead of a table")
    demo.add_argument("--tasks", type=_positive_int, default=60, help="agent tasks (default 60)")
    demo.add_argument(
        "--api",
        choices=("chat", "responses", "messages"),
        default="chat",
        help="the API the agents call: chat completions, OpenAI Responses or Anthropic "
        "Messages (default chat)",
    )
    gateway = commands.add_parser("gateway", help="serve the engine as an OpenAI-compatible API")
    gateway.add_argument("--config", required=True, help="the engine's TOML config file")
    gateway.add_argument("--host", default="127.0.0.1")
    gateway.add_argument("--port", type=int, default=8000)
    gateway.add_argument("--workers", type=_positive_int, default=1, help="processes (default 1)")
    gateway.add_argument(
        "--allow-anonymous",
        action="store_true",
        help="serve callers without a key on a non-loopback address (no [[gateway.keys]])",
    )
    gateway.add_argument(
        "--no-access-log", action="store_true", help="write no line per request to stderr"
    )
    commands.add_parser(
        "hash-key", help="print the SHA-256 of an API key read from stdin (for key_sha256)"
    )
    report = commands.add_parser("report", help="where the last run's time went, and why")
    source = report.add_mutually_exclusive_group()
    source.add_argument("--file", default=None, help="saved run (default .overdrive/last-run.json)")
    source.add_argument("--url", default=None, help="a running gateway, e.g. http://127.0.0.1:8000")
    report.add_argument(
        "--key-env", default=None, help="with --url: the env variable holding a gateway key"
    )
    report.add_argument("--json", action="store_true", help="print one JSON line instead")
    top = commands.add_parser("top", help="the dashboard's figures in the terminal, live")
    where = top.add_mutually_exclusive_group(required=True)
    where.add_argument("--url", default=None, help="a gateway or od.dashboard() server")
    where.add_argument("--file", default=None, help="a run saved with od.save_run(path)")
    top.add_argument("--key-env", default=None, help="with --url: the env variable of a key")
    top.add_argument("--interval", type=_positive_float, default=1.0, help="seconds per frame")
    top.add_argument("--frames", type=_positive_int, default=None, help="stop after N frames")
    sim = commands.add_parser("sim", help="serve the simulated OpenAI-compatible upstream")
    sim.add_argument("--host", default="127.0.0.1")
    sim.add_argument("--port", type=int, default=8080)
    sim.add_argument("--rpm", type=_positive_int, default=None, help="requests per minute limit")
    sim.add_argument("--tpm", type=_positive_int, default=None, help="tokens per minute limit")
    sim.add_argument("--ttft", type=float, default=0.25, help="seconds to the first token")
    sim.add_argument("--per-token", type=float, default=0.004, help="seconds per output token")
    sim.add_argument(
        "--capacity",
        type=_positive_int,
        default=None,
        help="chat calls served at full speed at once; more slow all down (default: no limit)",
    )
    sim.add_argument(
        "--overload-exponent",
        type=_positive_float,
        default=1.5,
        help="past capacity, latency x (in flight / capacity) ** this (default 1.5)",
    )
    sim.add_argument(
        "--prefix-cache-tokens",
        type=_positive_int,
        default=None,
        help="tokens of prompt prefixes this deployment caches (default: no prefix cache)",
    )
    sim.add_argument(
        "--prefill-per-token",
        type=float,
        default=0.0,
        help="seconds before the first token per prompt token not cached (default 0)",
    )
    sim.add_argument(
        "--prefill-shared",
        action="store_true",
        help="read one prompt at a time, so uncached prompts wait for those ahead",
    )
    sim.add_argument(
        "--charge-rejected",
        action="store_true",
        help="a 429 still costs a request, as providers document",
    )
    sim.add_argument("--seed", type=int, default=0)
    sim.add_argument("--api-key-env", default=None, help="require the key in this env variable")
    return parser


def _dashboard(args: argparse.Namespace) -> int:
    from .dashboard import run_dashboard
    from .engine import Overdrive

    try:
        return run_dashboard(
            args.config, Overdrive.from_config, host=args.host, port=args.port, demo=args.demo
        )
    except (ConfigError, OSError) as exc:  # a bad file, a port in use: one line
        print(f"overdrive dashboard: {exc}", file=sys.stderr)
        return 2


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    summary = run_demo(tasks=args.tasks, as_json=args.json, api=args.api)
    plain, fast = summary["plain"], summary["overdrive"]
    return 0 if fast["makespan_s"] < plain["makespan_s"] else 1


def _gateway(args: argparse.Namespace) -> int:
    from ._errors import ConfigError
    from .gateway import run_gateway

    try:
        run_gateway(
            args.config,
            args.host,
            args.port,
            args.workers,
            allow_anonymous=args.allow_anonymous,
            access_log=not args.no_access_log,
        )
    except ConfigError as exc:
        print(f"overdrive gateway: {exc}", file=sys.stderr)
        return 2
    return 0


def _hash_key(args: argparse.Namespace) -> int:
    from .gateway import hash_key

    # Read from stdin, never from the command line, where shells and `ps` would keep it.
    secret = sys.stdin.readline().strip()
    if not secret:
        print("overdrive hash-key: expected the API key on standard input", file=sys.stderr)
        return 2
    print(hash_key(secret))
    return 0


def _report(args: argparse.Namespace) -> int:
    from ._json import dumps
    from .optimize import analyse, render

    try:
        sample = _report_sample(args)
    except ReportSourceError as exc:
        print(f"overdrive report: {exc}", file=sys.stderr)
        return 2
    analysis = analyse(sample)
    if args.json:
        sys.stdout.write(dumps(analysis.to_dict()).decode() + "\n")
    else:
        from rich.console import Console

        Console().print(render(analysis))
    return 0


class ReportSourceError(Exception):
    """A run to report on that cannot be read: the one line ``overdrive report`` prints."""


def _report_sample(args: argparse.Namespace) -> Sample:
    from .optimize import LAST_RUN, load_sample

    if args.url:
        return _gateway_sample(args.url, args.key_env)
    path = args.file or LAST_RUN
    try:
        return load_sample(path)
    except FileNotFoundError:
        hint = "run `overdrive demo` first, or save one with od.save_run(path)"
        raise ReportSourceError(f"no run saved at {path}; {hint}") from None
    except IsADirectoryError:
        raise ReportSourceError(f"{path} is a directory, not a saved run") from None
    except ValueError as exc:
        raise ReportSourceError(str(exc)) from None


def _gateway_sample(url: str, key_env: str | None) -> Sample:
    from ._json import loads
    from ._top import TopSourceError, operator_get
    from .gateway import REPORT_PATH
    from .optimize import sample_of

    try:
        body = operator_get(url, REPORT_PATH, key_env)
    except TopSourceError as exc:
        raise ReportSourceError(str(exc)) from None
    try:
        return sample_of(loads(body).get("sample"))
    except (ValueError, AttributeError) as exc:
        raise ReportSourceError(f"{url.rstrip('/')}{REPORT_PATH} sent no report: {exc}") from None


def _top(args: argparse.Namespace) -> int:
    from rich.console import Console

    from ._top import TopSourceError, fetch_url, frame, read_file, run_top

    try:
        if args.file:
            Console().print(frame(read_file(args.file)))
            return 0
        run_top(fetch_url(args.url, args.key_env), interval=args.interval, frames=args.frames)
    except TopSourceError as exc:
        print(f"overdrive top: {exc}", file=sys.stderr)
        return 2
    return 0


def _sim(args: argparse.Namespace) -> int:
    from .sim import SimConfig, run_sim

    api_key = None
    if args.api_key_env:
        api_key = os.environ.get(args.api_key_env)
        if not api_key:
            print(f"overdrive sim: --api-key-env {args.api_key_env} is not set", file=sys.stderr)
            return 2
    config = SimConfig(
        seed=args.seed,
        rpm=args.rpm,
        tpm=args.tpm,
        ttft_s=args.ttft,
        per_token_s=args.per_token,
        capacity=args.capacity,
        overload_exponent=args.overload_exponent,
        prefix_cache_tokens=args.prefix_cache_tokens,
        prefill_per_token_s=args.prefill_per_token,
        prefill_shared=args.prefill_shared,
        charge_rejected=args.charge_rejected,
        api_key=api_key,
    )
    run_sim(config, args.host, args.port)
    return 0


def _positive_int(text: str) -> int:
    try:
        return check_int("argument", int(text), 1)
    except ConfigError as exc:
        # argparse names the option itself; a plain ValueError would lose the reason.
        raise argparse.ArgumentTypeError(exc.problem) from None


def _positive_float(text: str) -> float:
    try:
        return check_float("argument", float(text), 0.0, open_low=True, finite=True)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(exc.problem) from None


def _version() -> str:
    from . import __version__

    return __version__


if __name__ == "__main__":
    raise SystemExit(main())
