"""Closed-loop HTTP load on loopback: N clients, each with one keep-alive connection.

Each client sends ``POST /v1/chat/completions`` with a prompt no request has
sent before (the run's nonce, the client and a counter), waits for the whole
answer and sends the next. The clients are raw asyncio HTTP/1.1 on uvloop,
split over one or more processes of their own, so the load generator costs
the server under test as little CPU as we can manage: no HTTP library, no JSON
parsing of the answers.

    result = run_load(LoadPlan(port=8000, clients=50, seconds=10.0, warmup=2.0, nonce="r1"))
    result.throughput, result.percentile(50)
"""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from array import array
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Barrier

import orjson
import uvloop

__all__ = ["MODEL", "LoadPlan", "LoadResult", "run_load"]

MODEL = "gpt-4o-mini"
MAX_TOKENS = 64
_SYSTEM = "You are a terse assistant."
_HEAD_END = b"\r\n\r\n"
_GRACE_S = 30.0  # for the last answers after the window closes


@dataclass(frozen=True, slots=True)
class LoadPlan:
    """Who to load and for how long; ``processes`` split the clients between them."""

    port: int
    clients: int
    seconds: float
    warmup: float
    nonce: str
    processes: int = 1
    path: str = "/v1/chat/completions"
    # 0: closed loop (the next request as soon as an answer is in). Otherwise each
    # client starts a request every ``interval`` seconds, so the offered load is
    # ``clients / interval`` whatever the server's speed, and latency is service
    # time plus what queueing that load causes, not saturation queueing.
    interval: float = 0.0

    def share(self, index: int) -> range:
        """The client numbers load process ``index`` runs."""
        return range(index, self.clients, self.processes)


@dataclass(slots=True)
class LoadResult:
    """Requests answered within the measured window, and each one's latency in seconds."""

    seconds: float
    latencies: array[float] = field(default_factory=lambda: array("d"))
    errors: int = 0
    first_error: str = ""
    answered: int = 0  # every 200, warmup and the tail after the window included

    @property
    def requests(self) -> int:
        return len(self.latencies)

    @property
    def throughput(self) -> float:
        return self.requests / self.seconds

    def percentile(self, q: float) -> float:
        """The ``q``-th percentile latency in milliseconds (nearest rank); NaN if none."""
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        rank = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))
        return ordered[rank] * 1000

    def merge(self, other: LoadResult) -> None:
        self.latencies.extend(other.latencies)
        self.errors += other.errors
        self.answered += other.answered
        self.first_error = self.first_error or other.first_error


# --- one request ---------------------------------------------------------------------


def chat_request(plan: LoadPlan, client: int, sequence: int) -> bytes:
    """One whole HTTP/1.1 request with a prompt of its own."""
    prompt = f"[{plan.nonce} {client}.{sequence}] In one sentence: why is the sky blue?"
    body = orjson.dumps(
        {
            "model": MODEL,
            "messages": [
                {"role": "system", "content": _SYSTEM},
                {"role": "user", "content": prompt},
            ],
            "max_tokens": MAX_TOKENS,
        }
    )
    head = (
        f"POST {plan.path} HTTP/1.1\r\nhost: 127.0.0.1:{plan.port}\r\n"
        f"content-type: application/json\r\nauthorization: Bearer sk-bench\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """The status and body of one response, sized by content-length or chunked."""
    head = await reader.readuntil(_HEAD_END)
    status = int(head[9:12])
    fields = _header_fields(head)
    if b"content-length" in fields:
        return status, await reader.readexactly(int(fields[b"content-length"]))
    if fields.get(b"transfer-encoding", b"").lower() == b"chunked":
        return status, await _read_chunked(reader)
    raise ValueError(f"response without a length: {head[:200]!r}")


def _header_fields(head: bytes) -> dict[bytes, bytes]:
    fields = {}
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        fields[name.strip().lower()] = value.strip()
    return fields


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    parts = []
    while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
        parts.append(await _chunk(reader, size))
    await reader.readuntil(b"\r\n")  # the empty trailer
    return b"".join(parts)


async def _chunk(reader: asyncio.StreamReader, size: int) -> bytes:
    data = await reader.readexactly(size + 2)
    return data[:-2]


# --- one client, one process ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Window:
    """The measured window on ``time.monotonic()``: after warmup, for ``seconds``."""

    start: float
    end: float


async def _client(plan: LoadPlan, client: int, window: _Window, result: LoadResult) -> None:
    """Send, wait for the whole answer, repeat until the window ends; reconnect after a break."""
    sequence = 0
    while time.monotonic() < window.end:
        reader, writer = await asyncio.open_connection("127.0.0.1", plan.port)
        try:
            sequence = await _exchanges(plan, client, sequence, (reader, writer), window, result)
        except (ConnectionError, asyncio.IncompleteReadError, ValueError) as exc:
            _error(result, time.monotonic(), window, f"connection broke: {exc!r}")
            sequence += 1
        finally:
            writer.close()


async def _exchanges(
    plan: LoadPlan,
    client: int,
    sequence: int,
    stream: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    window: _Window,
    result: LoadResult,
) -> int:
    reader, writer = stream
    # Paced clients start out of step, so the load is spread over each interval.
    due = time.monotonic() + plan.interval * (client / plan.clients)
    while (sent := await _when_due(due)) < window.end:
        due = sent + plan.interval
        writer.write(chat_request(plan, client, sequence))
        status, body = await read_response(reader)
        done = time.monotonic()
        sequence += 1
        if status != 200:
            _error(result, done, window, f"HTTP {status}: {body[:200]!r}")
            continue
        result.answered += 1
        if window.start <= done <= window.end:
            result.latencies.append(done - sent)
    return sequence


async def _when_due(due: float) -> float:
    """Wait for ``due`` (a paced client's next start); the time it sends at."""
    now = time.monotonic()
    if due > now:
        await asyncio.sleep(due - now)
        now = time.monotonic()
    return now


def _error(result: LoadResult, at: float, window: _Window, text: str) -> None:
    if window.start <= at <= window.end:
        result.errors += 1
        result.first_error = result.first_error or text


async def _process_load(plan: LoadPlan, index: int) -> LoadResult:
    now = time.monotonic()
    window = _Window(now + plan.warmup, now + plan.warmup + plan.seconds)
    result = LoadResult(plan.seconds)
    async with asyncio.timeout(plan.warmup + plan.seconds + _GRACE_S):  # a hung server ends it
        await asyncio.gather(*(_client(plan, c, window, result) for c in plan.share(index)))
    return result


def _load_process(plan: LoadPlan, index: int, start: Barrier, out: Connection) -> None:
    start.wait()  # every process starts its clock together
    try:
        out.send(uvloop.run(_process_load(plan, index)))
    except Exception as exc:
        out.send(exc)


# --- the whole load ------------------------------------------------------------------


def run_load(plan: LoadPlan) -> LoadResult:
    """Run ``plan`` in ``plan.processes`` fresh processes and merge what they measured."""
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(plan.processes)
    pipes, processes = [], []
    for index in range(plan.processes):
        parent, child = context.Pipe(duplex=False)
        process = context.Process(target=_load_process, args=(plan, index, start, child))
        process.start()
        pipes.append(parent)
        processes.append(process)
    try:
        return _merge([pipe.recv() for pipe in pipes], plan.seconds)
    finally:
        for process in processes:
            process.join(10)


def _merge(parts: list[LoadResult | Exception], seconds: float) -> LoadResult:
    merged = LoadResult(seconds)
    for part in parts:
        if isinstance(part, Exception):
            raise RuntimeError(f"a load process failed: {part!r}") from part
        merged.merge(part)
    return merged
