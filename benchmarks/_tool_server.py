"""A small HTTP tool server with per-tool limits, latency and failures, in a process of its own.

    with ToolServerProcess(TOOLS, seed=7) as server:
        ...httpx.AsyncClient(base_url=server.base_url).get("/tools/search", params={"arg": "q"})
        server.stats()  # {"search": {"requests": ..., "rate_limited": ..., ...}, ...}

``GET /tools/<name>?arg=...`` answers ``{"tool", "arg", "result"}`` after the
tool's latency. Each tool enforces its own limit the way rate-limited APIs
do, refusing rather than queueing:

* ``rpm``: GCRA at ``rpm`` per minute with a tolerance of ``burst`` calls
  (default 2: one call early, for network jitter). A call over it gets a 429
  with ``Retry-After`` (whole seconds, at least one) and is not counted
  against the limit; every admitted call is, whatever it answers;
* ``concurrency``: a call that finds that many of the tool's calls running
  gets a 429 with ``Retry-After: 1``.

An admitted call fails with a 503 (after its latency) with probability
``failure_rate``, drawn from a generator seeded with ``seed``. ``GET /stats``
(or :meth:`ToolServerProcess.stats`) gives per tool: requests, answered
(200), rate_limited (429), failed (503) and max_in_flight.

The server runs in a spawned child process (uvicorn on a socket bound to a
free port), so the CPU it spends is never the benchmarked client's.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import multiprocessing
import random
import socket
import threading
import time
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any, cast
from urllib.parse import parse_qs

import uvicorn

__all__ = ["TOOLS", "ServerStats", "ToolServer", "ToolServerProcess", "ToolSpec"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ServerStats = dict[str, dict[str, int]]


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """One tool of the server: its latency and limits, and whether answers may be cached."""

    name: str
    latency: float
    rpm: int | None = None
    concurrency: int | None = None
    # Read-only tools answer the same for the same argument: a client may cache them.
    read_only: bool = True


TOOLS = (
    ToolSpec("search", latency=0.05, rpm=600),
    ToolSpec("fetch_page", latency=0.15, rpm=240),
    ToolSpec("weather", latency=0.02, rpm=600),
    ToolSpec("code_run", latency=0.2, concurrency=4, read_only=False),
)


@dataclass(slots=True)
class _Counts:
    requests: int = 0
    answered: int = 0
    rate_limited: int = 0
    failed: int = 0
    in_flight: int = 0
    max_in_flight: int = 0


class _Pacer:
    """GCRA over a clock: admits a call unless it comes earlier than the rate (and burst) allow."""

    __slots__ = ("_interval", "_tat", "_tolerance")

    def __init__(self, rpm: int, burst: int) -> None:
        self._interval = 60.0 / rpm
        self._tolerance = (burst - 1) * self._interval
        self._tat = -math.inf

    def admit(self, now: float) -> float:
        """0.0 and the call is booked, or the seconds until it would fit (nothing booked)."""
        early = self._tat - self._tolerance - now
        if early > 0.0:
            return early
        self._tat = max(self._tat, now) + self._interval
        return 0.0


class _Tool:
    """One tool's state on the server: its limits and counts."""

    __slots__ = ("counts", "pacer", "spec")

    def __init__(self, spec: ToolSpec, burst: int) -> None:
        self.spec = spec
        self.pacer = None if spec.rpm is None else _Pacer(spec.rpm, burst)
        self.counts = _Counts()

    def refusal(self, now: float) -> float | None:
        """Seconds the caller should wait if this call is refused now, else None (admitted)."""
        counts, limit = self.counts, self.spec.concurrency
        if limit is not None and counts.in_flight >= limit:
            return 1.0
        early = 0.0 if self.pacer is None else self.pacer.admit(now)
        return early if early > 0.0 else None


class ToolServer:
    """The ASGI app: the tools' routes and ``/stats``."""

    def __init__(
        self, tools: Sequence[ToolSpec], *, seed: int, failure_rate: float, burst: int
    ) -> None:
        self._tools = {spec.name: _Tool(spec, burst) for spec in tools}
        self._failure_rate = failure_rate
        self._rng = random.Random(seed)

    def stats(self) -> ServerStats:
        return {
            name: {k: v for k, v in dataclasses.asdict(t.counts).items() if k != "in_flight"}
            for name, t in self._tools.items()
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return  # lifespan is off; nothing else is served
        path: str = scope["path"]
        if path == "/stats":
            await _respond(send, 200, self.stats())
            return
        tool = self._tools.get(path.removeprefix("/tools/"))
        if tool is None or not path.startswith("/tools/"):
            await _respond(send, 404, {"error": f"no route {path}"})
            return
        arg = parse_qs(scope["query_string"].decode()).get("arg", [""])[0]
        await self._serve_tool(tool, arg, send)

    async def _serve_tool(self, tool: _Tool, arg: str, send: Send) -> None:
        counts = tool.counts
        counts.requests += 1
        wait = tool.refusal(time.monotonic())
        if wait is not None:
            counts.rate_limited += 1
            retry_after = str(max(1, math.ceil(wait)))
            await _respond(send, 429, {"error": "rate limited"}, retry_after=retry_after)
            return
        counts.in_flight += 1
        counts.max_in_flight = max(counts.max_in_flight, counts.in_flight)
        failing = self._rng.random() < self._failure_rate
        try:
            await asyncio.sleep(tool.spec.latency)
        finally:
            # Before the answer is sent, so a client that sees it may send the next call.
            counts.in_flight -= 1
        if failing:
            counts.failed += 1
            await _respond(send, 503, {"error": "temporarily unavailable"})
            return
        counts.answered += 1
        result = {"tool": tool.spec.name, "arg": arg, "result": f"{tool.spec.name}({arg})"}
        await _respond(send, 200, result)


async def _respond(
    send: Send, status: int, body: object, *, retry_after: str | None = None
) -> None:
    payload = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(payload))]
    if retry_after is not None:
        headers.append((b"retry-after", retry_after.encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


class ToolServerProcess:
    """A fresh :class:`ToolServer` in a spawned process; ``stats()`` reads its counts.

    ``start()`` launches the child without waiting for it, so several servers
    can boot at once; entering the context waits until it serves.
    """

    def __init__(
        self,
        tools: Sequence[ToolSpec] = TOOLS,
        *,
        seed: int = 0,
        failure_rate: float = 0.03,
        burst: int = 2,
    ) -> None:
        context = multiprocessing.get_context("spawn")
        self._pipe, child = context.Pipe()
        options = (tuple(tools), seed, failure_rate, burst, child)
        self._process = context.Process(target=_serve, args=options, daemon=True)
        self.base_url = ""

    def start(self) -> ToolServerProcess:
        if self._process.pid is None:
            self._process.start()
        return self

    def __enter__(self) -> ToolServerProcess:
        self.start()
        self.base_url = str(self._pipe.recv())
        return self

    def stats(self) -> ServerStats:
        self._pipe.send("stats")
        return cast(ServerStats, self._pipe.recv())

    def __exit__(self, *exc_info: object) -> None:
        self._pipe.send("stop")
        self._process.join(10)


def _serve(
    tools: tuple[ToolSpec, ...], seed: int, failure_rate: float, burst: int, pipe: Connection
) -> None:
    """The child's body: serve on a free port, answer the pipe until it says "stop"."""
    app = ToolServer(tools, seed=seed, failure_rate=failure_rate, burst=burst)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(
        app, lifespan="off", log_level="warning", access_log=False, backlog=4096
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)  # uvicorn offers no readiness signal across threads
    host, port = sock.getsockname()
    pipe.send(f"http://{host}:{port}")
    # The counts are plain ints read between runs; the GIL makes each read whole.
    while pipe.recv() == "stats":
        pipe.send(app.stats())
    server.should_exit = True
    thread.join(10)
