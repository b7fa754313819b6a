"""Issue 14's four attacks on one HTTP server, a probe beside them, and an upstream of big streams.

    plan = AbusePlan(port=8000, start=time.monotonic() + 2, ramp=3, seconds=30, nonce="r1")
    attacks = run_attacks(plan)  # in a process of its own
    probe = run_probe(plan)  # in another, so the attacks' work never delays its clock

The attacks (all at once, raw asyncio sockets, no HTTP library):

* an endless header value: ``x-big: aaaa...`` in 64 KB writes, unauthenticated,
  reconnecting whenever the server hangs up;
* slowloris: ``slowloris`` connections sending one header byte every
  ``slowloris_every`` seconds, never ending the head (and not reconnecting, so
  how many are still open at the end says whether the server ends them);
* ``streams`` clients that open a streamed chat completion and never read it;
* one client that writes ``pipelined`` ``GET /health/live`` requests and
  never reads an answer.

The probe sends ``GET /health/live`` on a keep-alive connection of its own,
one at a time, from ``start + ramp`` to ``end``. Times are
``time.monotonic()``: on Linux one clock for every process, so processes
spawned apart agree on the schedule.

:class:`StreamUpstream` is the upstream the streams come from: the sim
answers at most 63 words a stream, far from the 20 MB the attack needs, so
this one writes ``stream_bytes`` of well-formed chat chunks a stream, each
write waiting for the reader (so what it counts as sent is what the server
under test took).
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from multiprocessing.connection import Connection
from typing import Any, cast

import orjson
import uvloop

from _gateway_load import MODEL, LoadResult, read_response
from _sim_process import ChildServer

__all__ = [
    "HOST",
    "AbusePlan",
    "AttackReport",
    "ProbeReport",
    "StreamUpstream",
    "run_attacks",
    "run_probe",
]

HOST = "127.0.0.1"
_LIVE = b"GET /health/live HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n"
_ENDLESS_HEAD = b"GET /health/live HTTP/1.1\r\nhost: 127.0.0.1\r\nx-big: "
_ENDLESS_BLOCK = b"a" * (64 * 1024)
_SLOW_LINE = b"GET /health/live HTTP/1.1\r\n"
_PIPELINE_BATCH = 1000  # requests a write: one syscall per 47 KB, not per request
_RECONNECT_PAUSE_S = 0.1  # between endless-header connections: an attack, not a connect flood
_SETTLE_S = 0.5  # how long the end-of-run check reads a silent connection for
# Reading the silent connections lets data flow again: the upstream's counters
# are read at ``end``, this long before that.
_SNAPSHOT_GAP_S = 0.3
_READ_SIZE = 1 << 20


@dataclass(frozen=True, slots=True)
class AbusePlan:
    """Whom to attack, when, and how hard."""

    port: int
    start: float  # time.monotonic() at which the attacks begin
    ramp: float  # seconds of attack before the probe starts counting
    seconds: float  # the probe's window
    nonce: str  # makes every stream's prompt new: no coalescing, no cache hit
    slowloris: int = 200
    slowloris_every: float = 3.0
    streams: int = 15
    pipelined: int = 250_000
    # A safety stop for one endless header on a server that keeps taking it.
    header_cap: int = 1 << 30
    probe_pause: float = 0.02

    @property
    def measured_from(self) -> float:
        return self.start + self.ramp

    @property
    def end(self) -> float:
        return self.start + self.ramp + self.seconds

    @property
    def settle_at(self) -> float:
        """When the silent clients start reading: after the watcher's snapshot at ``end``."""
        return self.end + _SNAPSHOT_GAP_S


def _left(deadline: float) -> float:
    return max(0.0, deadline - time.monotonic())


async def _sleep_until(deadline: float) -> None:
    await asyncio.sleep(_left(deadline))


Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def _connect(port: int) -> Stream:
    return await asyncio.open_connection(HOST, port)


async def _first_word(reader: asyncio.StreamReader) -> str:
    """What the server said first: its status code, or how it hung up."""
    try:
        data = await reader.read(64)
    except ConnectionError:
        return "reset"
    return _status(data) if data else "closed"


def _status(data: bytes) -> str:
    """The status code a response starts with ("none" for anything else)."""
    return data[9:12].decode("latin-1") if data.startswith(b"HTTP/") else "none"


async def _settle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> tuple[str, bool]:
    """For a connection never read: what it was sent first, and whether it is still open.

    Reading resumes for up to ``_SETTLE_S``: what the kernel holds comes
    first, then the end of the connection if the server ended it. What it was
    sent is a status code, or "closed"/"reset" when the server hung up
    before anything arrived, or "none" when nothing came and it is open.
    """
    _reading(writer).resume_reading()
    first, end = b"", "none"
    try:
        async with asyncio.timeout(_SETTLE_S):
            while data := await reader.read(_READ_SIZE):
                first = first or data[:64]
            end = "closed"
    except TimeoutError:
        pass
    except ConnectionError:
        end = "reset"
    finally:
        writer.close()
    return (_status(first) if first else end), end == "none"


def _reading(writer: asyncio.StreamWriter) -> asyncio.Transport:
    """The connection's transport, to pause or resume reading (open_connection's is one)."""
    return cast(asyncio.Transport, writer.transport)


async def _end_task(task: asyncio.Future[Any]) -> None:
    """Cancel ``task`` and collect it, so no exception is left unretrieved."""
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


@dataclass(slots=True)
class Connections:
    """Connections an attack opened, could not open, and still had open at the end."""

    opened: int = 0
    refused: int = 0
    open_at_end: int = 0


async def _open(port: int, tally: Connections) -> Stream | None:
    try:
        stream = await _connect(port)
    except OSError:
        tally.refused += 1
        return None
    tally.opened += 1
    return stream


# --- the endless header ------------------------------------------------------------------


@dataclass(slots=True)
class HeaderReport:
    """Bytes written count what the kernel took: the server's read plus socket buffers."""

    connections: int = 0
    bytes_written: int = 0
    most_on_one: int = 0  # on one connection, before the server hung up (or the run ended)
    ends: Counter[str] = field(default_factory=Counter)  # how each connection ended


class _Meter:
    __slots__ = ("bytes",)

    def __init__(self) -> None:
        self.bytes = 0


async def endless_header(plan: AbusePlan, report: HeaderReport) -> None:
    await _sleep_until(plan.start)
    while time.monotonic() < plan.end:
        await _endless_once(plan, report)
        await asyncio.sleep(_RECONNECT_PAUSE_S)


async def _endless_once(plan: AbusePlan, report: HeaderReport) -> None:
    try:
        reader, writer = await _connect(plan.port)
    except OSError:
        report.ends["refused"] += 1
        return
    report.connections += 1
    meter = _Meter()
    heard = asyncio.ensure_future(_first_word(reader))
    feed = asyncio.ensure_future(_feed_header(writer, plan.header_cap, meter))
    try:
        await asyncio.wait((heard, feed), timeout=_left(plan.end), return_when="FIRST_COMPLETED")
    finally:
        writer.close()
    report.ends[_header_end(heard, feed)] += 1
    for task in (heard, feed):
        await _end_task(task)
    report.bytes_written += meter.bytes
    report.most_on_one = max(report.most_on_one, meter.bytes)


def _header_end(heard: asyncio.Future[str], feed: asyncio.Future[None]) -> str:
    if heard.done():
        return heard.result()
    if feed.done():
        return "reset" if feed.exception() is not None else "cap reached"
    return "open at end"


async def _feed_header(writer: asyncio.StreamWriter, cap: int, meter: _Meter) -> None:
    writer.write(_ENDLESS_HEAD)
    while meter.bytes < cap:
        writer.write(_ENDLESS_BLOCK)
        await writer.drain()  # waits while the server does not read
        meter.bytes += len(_ENDLESS_BLOCK)


# --- slowloris ---------------------------------------------------------------------------


@dataclass(slots=True)
class SlowlorisReport(Connections):
    ends: Counter[str] = field(default_factory=Counter)  # how the server ended the others
    lifetimes: list[float] = field(default_factory=list)  # seconds each ended one lived


async def slowloris(plan: AbusePlan, report: SlowlorisReport) -> None:
    await _sleep_until(plan.start)
    await asyncio.gather(*(_trickle(plan, i, report) for i in range(plan.slowloris)))


def _trickled() -> Iterator[bytes]:
    """A header line, one byte at a time, that never ends."""
    for byte in b"x-slowloris: ":
        yield bytes((byte,))
    while True:
        yield b"a"


async def _trickle(plan: AbusePlan, index: int, report: SlowlorisReport) -> None:
    if (stream := await _open(plan.port, report)) is None:
        return
    reader, writer = stream
    opened = time.monotonic()
    heard = asyncio.ensure_future(_first_word(reader))
    writer.write(_SLOW_LINE)
    # Spread over the interval, so the server sees a byte every few ms, not 200 at once.
    await asyncio.wait((heard,), timeout=plan.slowloris_every * index / plan.slowloris)
    for byte in _trickled():
        if heard.done() or time.monotonic() >= plan.end:
            break
        writer.write(byte)
        await asyncio.wait((heard,), timeout=min(plan.slowloris_every, _left(plan.end)))
    writer.close()
    if heard.done():
        report.ends[heard.result()] += 1
        report.lifetimes.append(time.monotonic() - opened)
    else:
        report.open_at_end += 1
        await _end_task(heard)


# --- streams nobody reads ----------------------------------------------------------------


@dataclass(slots=True)
class StreamReport(Connections):
    statuses: Counter[str] = field(default_factory=Counter)  # of the answers, read at the end


def stream_request(plan: AbusePlan, index: int) -> bytes:
    prompt = f"[{plan.nonce} stream {index}] Tell me everything."
    body = orjson.dumps(
        {"model": MODEL, "messages": [{"role": "user", "content": prompt}], "stream": True}
    )
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nhost: {HOST}:{plan.port}\r\n"
        f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def silent_streams(plan: AbusePlan, report: StreamReport) -> None:
    await _sleep_until(plan.start)
    await asyncio.gather(*(_silent_stream(plan, i, report) for i in range(plan.streams)))


async def _silent_stream(plan: AbusePlan, index: int, report: StreamReport) -> None:
    if (stream := await _open(plan.port, report)) is None:
        return
    reader, writer = stream
    # Never read: the kernel's buffers fill, then whatever the server keeps.
    _reading(writer).pause_reading()
    writer.write(stream_request(plan, index))
    await _sleep_until(plan.settle_at)
    status, still_open = await _settle(reader, writer)
    report.statuses[status] += 1
    report.open_at_end += still_open


# --- pipelined requests nobody reads -----------------------------------------------------


@dataclass(slots=True)
class PipelineReport:
    requests: int = 0  # the plan's
    written: int = 0  # handed to the kernel: the server read them, or its buffers hold them
    all_written_s: float | None = None  # how long writing them all took, if it got there
    reset: bool = False
    open_at_end: bool = False
    first_answer: str = "none"


async def pipeline_no_read(plan: AbusePlan, report: PipelineReport) -> None:
    await _sleep_until(plan.start)
    report.requests = plan.pipelined
    try:
        reader, writer = await _connect(plan.port)
    except OSError:
        report.first_answer = "refused"
        return
    _reading(writer).pause_reading()
    started = time.monotonic()
    try:
        async with asyncio.timeout(_left(plan.end)):
            await _pipeline(plan.pipelined, writer, report)
        report.all_written_s = time.monotonic() - started
    except TimeoutError:
        pass  # the server stopped reading: what it took is in report.written
    except ConnectionError:
        report.reset = True
    await _sleep_until(plan.settle_at)
    report.first_answer, report.open_at_end = await _settle(reader, writer)


async def _pipeline(requests: int, writer: asyncio.StreamWriter, report: PipelineReport) -> None:
    batch = _LIVE * _PIPELINE_BATCH
    while report.written < requests:
        writer.write(batch)
        await writer.drain()
        report.written += _PIPELINE_BATCH


# --- all four at once ---------------------------------------------------------------------


@dataclass(slots=True)
class AttackReport:
    header: HeaderReport = field(default_factory=HeaderReport)
    slowloris: SlowlorisReport = field(default_factory=SlowlorisReport)
    streams: StreamReport = field(default_factory=StreamReport)
    pipeline: PipelineReport = field(default_factory=PipelineReport)


def run_attacks(plan: AbusePlan) -> AttackReport:
    """Every attack from ``plan.start`` to ``plan.end``, then what each saw (in about 1 s)."""
    return uvloop.run(_attacks(plan))


async def _attacks(plan: AbusePlan) -> AttackReport:
    report = AttackReport()
    await asyncio.gather(
        endless_header(plan, report.header),
        slowloris(plan, report.slowloris),
        silent_streams(plan, report.streams),
        pipeline_no_read(plan, report.pipeline),
    )
    return report


# --- the probe ----------------------------------------------------------------------------


@dataclass(slots=True)
class ProbeReport:
    """``load.latencies`` holds every probe; one still waiting at the end counts its wait so far."""

    load: LoadResult
    unanswered: int = 0  # waiting when the window closed
    connects: int = 0


def run_probe(plan: AbusePlan) -> ProbeReport:
    """``GET /health/live`` one at a time from ``plan.measured_from`` to ``plan.end``."""
    return uvloop.run(_probe(plan))


async def _probe(plan: AbusePlan) -> ProbeReport:
    report = ProbeReport(LoadResult(plan.seconds))
    await _sleep_until(plan.measured_from)
    while time.monotonic() < plan.end:
        try:
            await _probe_connection(plan, report)
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            report.load.errors += 1
            report.load.first_error = report.load.first_error or repr(exc)
            await asyncio.sleep(plan.probe_pause)
    return report


async def _probe_connection(plan: AbusePlan, report: ProbeReport) -> None:
    """Probe on one keep-alive connection until the window ends or it breaks."""
    sent = time.monotonic()
    try:
        async with asyncio.timeout(_left(plan.end)):
            reader, writer = await _connect(plan.port)
    except TimeoutError:
        _unanswered(report, sent)
        return
    report.connects += 1
    try:
        while (sent := time.monotonic()) < plan.end:
            writer.write(_LIVE)
            try:
                async with asyncio.timeout(_left(plan.end)):
                    status, body = await read_response(reader)
            except TimeoutError:
                _unanswered(report, sent)
                return
            _answered(report, time.monotonic() - sent, status, body)
            await asyncio.sleep(plan.probe_pause)
    finally:
        writer.close()


def _unanswered(report: ProbeReport, sent: float) -> None:
    report.unanswered += 1
    report.load.latencies.append(time.monotonic() - sent)


def _answered(report: ProbeReport, latency: float, status: int, body: bytes) -> None:
    report.load.latencies.append(latency)
    if status == 200:
        report.load.answered += 1
    else:
        report.load.errors += 1
        report.load.first_error = report.load.first_error or f"HTTP {status}: {body[:100]!r}"


# --- the upstream of big streams ----------------------------------------------------------


def _chunk(payload: bytes) -> bytes:
    """One HTTP/1.1 chunk."""
    return b"%x\r\n%b\r\n" % (len(payload), payload)


def _event(delta: dict[str, str], finish: str | None) -> bytes:
    choice = {"index": 0, "delta": delta, "finish_reason": finish}
    chunk = {"id": "chatcmpl-abuse", "object": "chat.completion.chunk", "created": 0}
    chunk |= {"model": MODEL, "choices": [choice]}
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


# About 64 KB of events a write, ~1 KB of text each: the body is a real chat stream.
_STREAM_EVENTS = _event({"content": "lorem ipsum " * 85}, None) * 60
_STREAM_BLOCK = _chunk(_STREAM_EVENTS)
_STREAM_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
    b"cache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n"
)
_STREAM_TAIL = _chunk(_event({}, "stop") + b"data: [DONE]\n\n") + b"0\r\n\r\n"


def _json_answer(body: bytes, status: str = "200 OK") -> bytes:
    head = f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\n"
    return (head + f"content-length: {len(body)}\r\n\r\n").encode() + body


_MODELS = _json_answer(orjson.dumps({"object": "list", "data": [{"id": MODEL, "object": "model"}]}))
_NOT_FOUND = _json_answer(b'{"error":{"message":"not here"}}', "404 Not Found")
_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*(\d+)", re.IGNORECASE)


class _Tally:
    """The upstream's counters, written on its loop's thread, read on the pipe's."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def snapshot(self) -> dict[str, int]:
        counts = dict(self.counts)
        counts["open"] = (
            counts.get("streams", 0) - counts.get("completed", 0) - counts.get("cut", 0)
        )
        return counts


async def _upstream_connection(
    stream_bytes: int, tally: _Tally, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    """Answer requests on one keep-alive connection until the client leaves."""
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            found = _CONTENT_LENGTH.search(head)
            body = await reader.readexactly(int(found[1]) if found else 0)
            await _upstream_answer(head, body, stream_bytes, tally, writer)
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
        pass  # the client left, or sent what this double does not speak
    finally:
        writer.close()


async def _upstream_answer(
    head: bytes, body: bytes, stream_bytes: int, tally: _Tally, writer: asyncio.StreamWriter
) -> None:
    if head.startswith(b"POST ") and b'"stream":true' in body:
        await _big_stream(stream_bytes, tally, writer)
    elif head.startswith(b"GET ") and b"/models " in head.split(b"\r\n", 1)[0]:
        writer.write(_MODELS)  # the gateway's health probe
    else:
        writer.write(_NOT_FOUND)


async def _big_stream(stream_bytes: int, tally: _Tally, writer: asyncio.StreamWriter) -> None:
    tally.counts["streams"] += 1
    writer.write(_STREAM_HEAD)
    sent = 0
    try:
        while sent < stream_bytes:
            writer.write(_STREAM_BLOCK)
            await writer.drain()  # so what counts as sent is what the reader took
            sent += len(_STREAM_EVENTS)
            tally.counts["bytes_sent"] += len(_STREAM_EVENTS)
        writer.write(_STREAM_TAIL)
        await writer.drain()
    except ConnectionError:
        tally.counts["cut"] += 1
        raise
    tally.counts["completed"] += 1


class StreamUpstream(ChildServer):
    """An upstream whose every streamed chat answer is ``stream_bytes`` long, in a process."""

    def __init__(self, stream_bytes: int) -> None:
        super().__init__(_serve_upstream, stream_bytes)

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.address}/v1"

    def stats(self) -> dict[str, int]:
        """streams, completed, cut (by the reader), open, bytes_sent."""
        return cast(dict[str, int], self.ask("stats"))


def _serve_upstream(stream_bytes: int, pipe: Connection) -> None:
    tally = _Tally()
    loop = uvloop.new_event_loop()
    handler = partial(_upstream_connection, stream_bytes, tally)
    server = loop.run_until_complete(_start_server(handler))
    # The loop serves in a thread; this one answers the pipe, as ChildServer wants.
    threading.Thread(target=loop.run_forever, daemon=True).start()
    pipe.send(server.sockets[0].getsockname()[1])
    while pipe.recv() == "stats":
        pipe.send(tally.snapshot())


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _start_server(handler: Handler) -> asyncio.Server:
    return await asyncio.start_server(handler, HOST, 0, backlog=1024)
