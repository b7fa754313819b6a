"""Agents on rate-limited, failing tool APIs: plain gather vs a hand-built stack vs @od.tool.

    python benchmarks/bench_tools.py [--agents 40] [--steps 6] [--seed 1] [--runs 1] [--quick]

The tools (``_tool_server.py``, a real HTTP server in a process of its own,
fresh for every contender): ``search`` 600 rpm 50 ms, ``fetch_page`` 240 rpm
150 ms, ``weather`` 600 rpm 20 ms, and ``code_run``, at most 4 at once,
200 ms. Rate limits are GCRA with a tolerance of one call (a burst of 2);
over a limit the server answers 429 with ``Retry-After``, and 3% of admitted
calls fail with a 503. All but ``code_run`` are read-only, so they may be
cached.

The workload (seeded): every agent starts at once and takes ``--steps``
steps, one after another; a step fans out its tool calls with
``asyncio.gather(..., return_exceptions=True)`` (one or two searches, and
maybe a weather, a page fetch, a code run), and the next step waits for all
of them. Arguments are Zipf-distributed, so searches, pages and cities
repeat within and across agents. Every contender calls the server through
one ``httpx.AsyncClient`` and makes the same calls; they differ in what
stands between the agent and the client:

* ``plain``: nothing but the naive retry users write: on a 429 or a 503 sleep
  the ``Retry-After`` (1 s without one) and try again, 4 attempts in all;
* ``hand-built``: what a competent user assembles today, per tool:
  ``aiolimiter.AsyncLimiter(1, 60 / rpm)`` (evenly spaced at the rpm; the
  documented ``AsyncLimiter(rpm, 60)`` would let ``rpm`` calls go at once,
  which the server refuses), an ``asyncio.Semaphore`` for ``code_run``'s
  concurrency, ``tenacity`` retrying 429s, 503s and transport errors with
  ``wait_random_exponential(multiplier=0.2, max=8)`` and
  ``stop_after_attempt(4)``, both inside the retry so every attempt is paced,
  and a ``cachetools.TTLCache`` for each read-only tool (looked up before the
  call, filled after it; cachetools has no asyncio support, so identical
  calls in flight at once each go upstream);
* ``overdrive``: ``@od.tool(name, rpm=..., concurrency=..., retry=...,
  attempts=4, cache="10m")`` with the same limits; the engine's default
  ``[retry]`` backoff is the same full jitter (0.2 s base, 8 s cap).

Lower bound (seconds), the least time any client could need::

    bound = max(max over tools t of T_t, chain)
    T_t   = max(0, n_t - burst) * 60 / rpm_t + latency_t      (a rate-limited tool)
    T_t   = ceil(n_t / concurrency_t) * latency_t              (a concurrency-limited tool)
    chain = max over agents of the sum over its steps of the
            longest latency among the step's calls that must go upstream

``n_t`` is the number of calls of tool ``t`` that must reach the server. The
bound reported against every contender takes perfect caching: ``n_t`` counts
distinct arguments of a read-only tool (every call of the others), and only
non-read-only calls must go upstream in the chain. It is the smallest any
contender could reach; ``plain`` caches nothing, so its own bound (every call
counted) is printed beside it. Retries are left out of the bound: each 503
spends a rate slot again, about 3% over it for a rate-bound tool.

Printed per contender (the median over ``--runs``): makespan, makespan over
the bound, calls failed at the caller (exceptions the agent got back from
``gather``), the server's count of calls, 429s and 503s, and the client
process's CPU time (``time.process_time()``, the server's excluded) over the
run divided by the agents' tool calls; then each figure of the others over
overdrive's. Goals (from the issue): overdrive's makespan <= 1.2x the bound,
no failed call at the caller.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import math
import random
import statistics
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import httpx
from aiolimiter import AsyncLimiter
from cachetools import TTLCache
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_random_exponential,
)

from _tool_server import TOOLS, ServerStats, ToolServerProcess, ToolSpec
from overdrive import Overdrive
from overdrive.monitor.names import TOOL_CALLS, TOOL_RETRIES

ATTEMPTS = 4  # every contender's attempts per call, the first included
BACKOFF_BASE, BACKOFF_CAP = 0.2, 8.0  # overdrive's default [retry] backoff; tenacity's too
CACHE_TTL = 600.0
SERVER_BURST = 2
FAILURE_RATE = 0.03
CONTENDERS = ("plain", "hand-built", "overdrive")
# A dummy upstream: the engine needs one, the tool door never calls it.
_ENGINE_CONFIG = {
    "upstreams": [{"name": "unused", "base_url": "http://127.0.0.1:1/v1", "models": ["m"]}]
}

# -- the workload -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Call:
    tool: str
    arg: str


Step = tuple[Call, ...]
Agent = tuple[Step, ...]


@dataclass(frozen=True, slots=True)
class Workload:
    agents: tuple[Agent, ...]

    def calls(self) -> list[Call]:
        return [call for agent in self.agents for step in agent for call in step]


class _Zipf:
    """Ranks 0..n-1 drawn with weight 1 / (rank + 1) ** s: a few hot, a long tail."""

    def __init__(self, rng: random.Random, n: int, s: float) -> None:
        self._rng, self._ranks = rng, range(n)
        self._cumulative = list(itertools.accumulate(1.0 / (r + 1) ** s for r in self._ranks))

    def draw(self) -> int:
        return self._rng.choices(self._ranks, cum_weights=self._cumulative)[0]


def build_workload(agents: int, steps: int, seed: int) -> Workload:
    """``agents`` agents of ``steps`` steps each, drawn from ``seed``."""
    rng = random.Random(seed)
    queries, pages, cities = _Zipf(rng, 400, 1.0), _Zipf(rng, 200, 1.0), _Zipf(rng, 50, 1.0)
    runs = iter(range(1_000_000))  # code is never repeated: it is not cacheable anyway

    def step() -> Step:
        calls = [Call("search", f"q{queries.draw()}") for _ in range(1 + (rng.random() < 0.5))]
        if rng.random() < 0.4:
            calls.append(Call("weather", f"city{cities.draw()}"))
        if rng.random() < 0.35:
            calls.append(Call("fetch_page", f"page{pages.draw()}"))
        if rng.random() < 0.25:
            calls.append(Call("code_run", f"snippet{next(runs)}"))
        return tuple(calls)

    return Workload(tuple(tuple(step() for _ in range(steps)) for _ in range(agents)))


# -- the lower bound ----------------------------------------------------------


def upstream_counts(workload: Workload, tools: Sequence[ToolSpec], *, cached: bool) -> Counter[str]:
    """Calls per tool that must reach the server: distinct ones of read-only tools if ``cached``."""
    read_only = {spec.name for spec in tools if spec.read_only}
    calls = workload.calls()
    needed = {c for c in calls if c.tool in read_only} if cached else set()
    counts = Counter(c.tool for c in needed)
    counts.update(c.tool for c in calls if not cached or c.tool not in read_only)
    return counts


def tool_bound(spec: ToolSpec, calls: int, burst: int) -> float:
    """The least time ``calls`` calls of ``spec`` need under its limit (see the docstring)."""
    if calls == 0:
        return 0.0
    if spec.rpm is not None:
        return max(0, calls - burst) * 60.0 / spec.rpm + spec.latency
    if spec.concurrency is not None:
        return math.ceil(calls / spec.concurrency) * spec.latency
    return spec.latency


def chain_bound(workload: Workload, tools: Sequence[ToolSpec], *, cached: bool) -> float:
    """The longest agent's steps, each as long as its slowest call that must go upstream."""
    specs = {spec.name: spec for spec in tools}

    def must_go(call: Call) -> bool:
        return not (cached and specs[call.tool].read_only)

    def step_time(step: Step) -> float:
        return max((specs[c.tool].latency for c in step if must_go(c)), default=0.0)

    return max(sum(step_time(step) for step in agent) for agent in workload.agents)


def lower_bound(
    workload: Workload, tools: Sequence[ToolSpec], burst: int, *, cached: bool
) -> tuple[float, str]:
    """The bound and what sets it: a tool's name, or "chain"."""
    counts = upstream_counts(workload, tools, cached=cached)
    candidates = {spec.name: tool_bound(spec, counts[spec.name], burst) for spec in tools}
    candidates["chain"] = chain_bound(workload, tools, cached=cached)
    binding = max(candidates, key=candidates.__getitem__)
    return candidates[binding], binding


# -- the tool client, shared by all ----------------------------------------------


class UpstreamError(Exception):
    """A 429 or 503 from the tool server: worth another attempt."""

    def __init__(self, tool: str, status: int, retry_after: float | None) -> None:
        super().__init__(f"{tool}: HTTP {status}")
        self.status, self.retry_after = status, retry_after


RETRYABLE: tuple[type[Exception], ...] = (UpstreamError, httpx.TransportError)


class ToolClient:
    """The tools over HTTP: one call, one request; a 429 or 503 raises :class:`UpstreamError`."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self._http = http

    async def call(self, tool: str, arg: str) -> str:
        response = await self._http.get(f"/tools/{tool}", params={"arg": arg})
        if response.status_code in (429, 503):
            raw = response.headers.get("retry-after")
            raise UpstreamError(tool, response.status_code, None if raw is None else float(raw))
        response.raise_for_status()
        return str(response.json()["result"])


def http_client(base_url: str) -> httpx.AsyncClient:
    """Every contender's client: a pool wide enough that the pool is never what waits."""
    limits = httpx.Limits(max_connections=256, max_keepalive_connections=256)
    return httpx.AsyncClient(base_url=base_url, timeout=30.0, limits=limits)


# -- the contenders ---------------------------------------------------------------


class Contender(Protocol):
    async def call(self, call: Call) -> str: ...

    def notes(self) -> str: ...

    async def aclose(self) -> None: ...


class Plain:
    """The tool called directly; a 429 or 503 waits its Retry-After (or 1 s) and tries again."""

    def __init__(self, client: ToolClient) -> None:
        self._client = client

    async def call(self, call: Call) -> str:
        for attempt in range(1, ATTEMPTS + 1):
            try:
                return await self._client.call(call.tool, call.arg)
            except UpstreamError as exc:
                if attempt == ATTEMPTS:
                    raise
                await asyncio.sleep(exc.retry_after or 1.0)
        raise AssertionError("unreachable: the last attempt returns or raises")

    def notes(self) -> str:
        return ""

    async def aclose(self) -> None:
        return None


class HandBuilt:
    """aiolimiter + a semaphore + tenacity + cachetools, per tool, as a competent user writes it."""

    def __init__(self, client: ToolClient, tools: Sequence[ToolSpec]) -> None:
        self._client = client
        self._limiters = {t.name: AsyncLimiter(1, 60.0 / t.rpm) for t in tools if t.rpm}
        self._slots = {t.name: asyncio.Semaphore(t.concurrency) for t in tools if t.concurrency}
        self._caches: dict[str, TTLCache[str, str]] = {
            t.name: TTLCache(maxsize=10_000, ttl=CACHE_TTL) for t in tools if t.read_only
        }
        self._retrying = AsyncRetrying(
            retry=retry_if_exception_type(RETRYABLE),
            wait=wait_random_exponential(multiplier=BACKOFF_BASE, max=BACKOFF_CAP),
            stop=stop_after_attempt(ATTEMPTS),
            reraise=True,
        )
        self._hits = 0

    async def call(self, call: Call) -> str:
        cache = self._caches.get(call.tool)
        if cache is not None and call.arg in cache:
            self._hits += 1
            return cache[call.arg]
        value: str = await self._retrying(self._attempt, call)
        if cache is not None:
            cache[call.arg] = value
        return value

    async def _attempt(self, call: Call) -> str:
        async with contextlib.AsyncExitStack() as held:
            if (slots := self._slots.get(call.tool)) is not None:
                await held.enter_async_context(slots)
            if (limiter := self._limiters.get(call.tool)) is not None:
                await held.enter_async_context(limiter)
            return await self._client.call(call.tool, call.arg)

    def notes(self) -> str:
        return f"{self._hits} cache hits"

    async def aclose(self) -> None:
        return None


ToolFn = Callable[[str], Awaitable[str]]


class OverdriveTools:
    """One ``@od.tool`` function per tool, with the tool's limits, retries and cache."""

    def __init__(self, client: ToolClient, tools: Sequence[ToolSpec]) -> None:
        self._od = Overdrive.from_config(_ENGINE_CONFIG)
        self._tools = {spec.name: self._decorated(client, spec) for spec in tools}

    def _decorated(self, client: ToolClient, spec: ToolSpec) -> ToolFn:
        options: dict[str, Any] = {"retry": RETRYABLE, "attempts": ATTEMPTS}
        if spec.rpm is not None:
            options["rpm"] = spec.rpm
        if spec.concurrency is not None:
            options["concurrency"] = spec.concurrency
        if spec.read_only:
            options["cache"] = CACHE_TTL
        name = spec.name

        @self._od.tool(name, **options)
        async def run(arg: str) -> str:
            return await client.call(name, arg)

        return run

    async def call(self, call: Call) -> str:
        return await self._tools[call.tool](call.arg)

    def notes(self) -> str:
        metrics = self._od.metrics
        cached = metrics.value(TOOL_CALLS, outcome="cached")
        coalesced = metrics.value(TOOL_CALLS, outcome="coalesced")
        retries = metrics.value(TOOL_RETRIES)
        return f"{cached:.0f} cache hits, {coalesced:.0f} coalesced, {retries:.0f} retries"

    async def aclose(self) -> None:
        await self._od.aclose()


def make_contender(name: str, client: ToolClient, tools: Sequence[ToolSpec]) -> Contender:
    if name == "plain":
        return Plain(client)
    if name == "hand-built":
        return HandBuilt(client, tools)
    return OverdriveTools(client, tools)


# -- running and measuring ----------------------------------------------------------


@dataclass(slots=True)
class Result:
    """One contender's run."""

    name: str
    makespan: float
    calls: int
    failed: int
    cpu_s: float
    server: ServerStats = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=dict)  # by what was raised
    notes: str = ""

    def upstream(self, key: str) -> int:
        return sum(tool[key] for tool in self.server.values())

    def figures(self, bound: float) -> dict[str, float]:
        return {
            "makespan_s": self.makespan,
            "over_bound": self.makespan / bound,
            "failed": self.failed,
            "upstream_calls": self.upstream("requests"),
            "upstream_429s": self.upstream("rate_limited"),
            "upstream_503s": self.upstream("failed"),
            "cpu_us_per_call": self.cpu_s / self.calls * 1e6,
        }


async def run_agent(agent: Agent, contender: Contender) -> list[str]:
    """Run ``agent``'s steps in order; what each of its calls that raised raised."""
    failed: list[str] = []
    for step in agent:
        answers = await asyncio.gather(*(contender.call(c) for c in step), return_exceptions=True)
        failed += [_failure(a) for a in answers if isinstance(a, BaseException)]
    return failed


def _failure(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"[:200]


async def run_contender(
    name: str, workload: Workload, base_url: str, tools: Sequence[ToolSpec]
) -> Result:
    """All agents at once through contender ``name``; its makespan, failures and CPU."""
    async with http_client(base_url) as http:
        contender = make_contender(name, ToolClient(http), tools)
        try:
            cpu, started = time.process_time(), time.perf_counter()
            failed = await asyncio.gather(*(run_agent(a, contender) for a in workload.agents))
            makespan = time.perf_counter() - started
            cpu = time.process_time() - cpu
            notes = contender.notes()
        finally:
            await contender.aclose()
    calls = len(workload.calls())
    failures = Counter(error for errors in failed for error in errors)
    raised = dict(failures)
    return Result(name, makespan, calls, failures.total(), cpu, failures=raised, notes=notes)


def measure_run(
    workload: Workload, tools: Sequence[ToolSpec], seed: int, names: Sequence[str]
) -> list[Result]:
    """Each contender against a fresh server; the servers boot together, before any timing."""
    servers = [
        ToolServerProcess(tools, seed=seed, failure_rate=FAILURE_RATE, burst=SERVER_BURST).start()
        for _ in names
    ]
    results = []
    with contextlib.ExitStack() as stack:
        for server in servers:
            stack.enter_context(server)
        for name, server in zip(names, servers, strict=True):
            result = asyncio.run(run_contender(name, workload, server.base_url, tools))
            result.server = server.stats()
            results.append(result)
    return results


# -- reporting ----------------------------------------------------------------------

# (figure key, label, format)
ROWS = [
    ("makespan_s", "makespan", "{:.2f} s"),
    ("over_bound", "makespan / lower bound", "{:.2f}x"),
    ("failed", "calls failed at the caller", "{:,.0f}"),
    ("upstream_calls", "upstream calls", "{:,.0f}"),
    ("upstream_429s", "upstream 429s", "{:,.0f}"),
    ("upstream_503s", "upstream 503s", "{:,.0f}"),
    ("cpu_us_per_call", "CPU per tool call", "{:,.0f} µs"),
]


def ratio(other: float, fast: float) -> str:
    """How many times overdrive's figure the other's is."""
    if fast == 0:
        return "=" if other == 0 else "all gone"
    return f"{other / fast:.2f}x"


def medians(runs: Sequence[Sequence[Result]], bound: float) -> dict[str, dict[str, float]]:
    """Each contender's figures, the median over runs."""
    table: dict[str, dict[str, float]] = {}
    for index, first in enumerate(runs[0]):
        per_run = [run[index].figures(bound) for run in runs]
        table[first.name] = {key: statistics.median(f[key] for f in per_run) for key in per_run[0]}
    return table


def print_table(table: dict[str, dict[str, float]]) -> None:
    names = list(table)
    others = [n for n in names if n != "overdrive"] if "overdrive" in names else []
    header = "".join(f"{n:>13}" for n in names) + "".join(f"{n + '/od':>15}" for n in others)
    print(f"\n  {'':<28}{header}")
    for key, label, fmt in ROWS:
        cells = "".join(f"{fmt.format(table[n][key]):>13}" for n in names)
        ratios = "".join(f"{ratio(table[n][key], table['overdrive'][key]):>15}" for n in others)
        print(f"  {label:<28}{cells}{ratios}")


def print_setup(workload: Workload, tools: Sequence[ToolSpec], args: argparse.Namespace) -> float:
    """Describe the workload, the server and the bounds; return the bound every contender faces."""
    calls = workload.calls()
    by_tool = Counter(c.tool for c in calls)
    distinct = Counter(c.tool for c in set(calls))
    shown = ", ".join(f"{t} {by_tool[t]} ({distinct[t]} distinct)" for t in by_tool)
    print(f"{len(workload.agents)} agents x {args.steps} steps (seed {args.seed}):")
    print(f"  {len(calls):,} tool calls: {shown}")
    limits = ", ".join(_describe(spec) for spec in tools)
    print(f"server: {limits}; burst {SERVER_BURST}, {FAILURE_RATE:.0%} 503s")
    bound, binding = lower_bound(workload, tools, SERVER_BURST, cached=True)
    uncached, by = lower_bound(workload, tools, SERVER_BURST, cached=False)
    print(f"lower bound: {bound:.2f} s with perfect caching (set by {binding}), for all;")
    print(f"             {uncached:.2f} s without caching (set by {by}), plain's own")
    return bound


def _describe(spec: ToolSpec) -> str:
    limit = f"{spec.rpm} rpm" if spec.rpm else f"{spec.concurrency} at once"
    return f"{spec.name} {limit} {spec.latency * 1000:.0f} ms"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--agents", type=int, default=40)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--runs", type=int, default=1, help="repeat; medians are printed")
    parser.add_argument("--quick", action="store_true", help="a small run, for a smoke test")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    if args.quick:
        args.agents, args.steps = 8, 2
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    workload = build_workload(args.agents, args.steps, args.seed)
    bound = print_setup(workload, TOOLS, args)
    runs = []
    for number in range(args.runs):
        results = measure_run(workload, TOOLS, args.seed + number, CONTENDERS)
        notes = "; ".join(f"{r.name}: {r.notes}" for r in results if r.notes)
        print(f"run {number + 1}: " + notes, flush=True)
        for result in results:
            if result.failures and result.name != "plain":  # plain's are the point
                print(f"  {result.name} failed calls: {result.failures}", flush=True)
        runs.append(results)
    table = medians(runs, bound)
    print_table(table)
    if args.json is not None:
        args.json.write_text(json.dumps({"bound_s": bound, "contenders": table}, indent=2))
    if args.runs > 1:
        print(f"\n(medians of {args.runs} runs)")


if __name__ == "__main__":
    main()
