from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from overdrive import SlowReaderError
from overdrive.coalesce._shared_stream import SharedStream
from overdrive.testing import FakeClock


class Source:
    """An upstream body released chunk by chunk by the test."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes | Exception | None] = asyncio.Queue()
        self.closed = 0
        self.cancelled = False
        self.complete: list[bytes] | None = None

    async def body(self) -> AsyncIterator[bytes]:
        try:
            while (item := await self.queue.get()) is not None:
                if isinstance(item, Exception):
                    raise item
                yield item
        except asyncio.CancelledError:
            self.cancelled = True
            raise

    async def close(self, complete: list[bytes] | None) -> None:
        self.closed += 1
        self.complete = complete


async def collect(stream: SharedStream) -> list[bytes]:
    return [chunk async for chunk in stream.reader()]


async def test_a_late_reader_gets_every_chunk_from_the_first() -> None:
    source = Source()
    shared = SharedStream(source.body(), source.close)
    early = asyncio.create_task(collect(shared))
    source.queue.put_nowait(b"one")
    source.queue.put_nowait(b"two")
    await asyncio.sleep(0.01)
    assert shared.joinable
    late = asyncio.create_task(collect(shared))
    source.queue.put_nowait(b"three")
    source.queue.put_nowait(None)
    assert await early == await late == [b"one", b"two", b"three"]
    assert source.closed == 1
    assert source.complete == [b"one", b"two", b"three"]  # a whole body, fit to keep
    assert not shared.joinable


async def test_the_stream_stops_when_its_last_reader_leaves() -> None:
    source = Source()
    shared = SharedStream(source.body(), source.close)
    first, second = shared.reader(), shared.reader()
    source.queue.put_nowait(b"a")
    assert await anext(aiter(first)) == b"a"
    await first.aclose()
    await asyncio.sleep(0)
    assert not source.cancelled  # one reader is still there
    await second.aclose()
    assert source.cancelled
    assert source.closed == 1
    assert source.complete is None  # cut short: never to be cached
    assert not shared.joinable


async def test_an_upstream_error_reaches_every_reader() -> None:
    source = Source()
    shared = SharedStream(source.body(), source.close)
    readers = [asyncio.create_task(collect(shared)) for _ in range(3)]
    source.queue.put_nowait(b"partial")
    source.queue.put_nowait(ConnectionError("upstream reset"))
    for reader in readers:
        with pytest.raises(ConnectionError, match="upstream reset"):
            await reader
    assert source.closed == 1
    assert source.complete is None


# -- bounds: every reader's backlog, back-pressure, slow and idle readers -----

KB = 1024
BOUND = 16 * KB


class Endless:
    """An upstream body of 1 KB chunks without end, counting how far it was pulled."""

    def __init__(self, chunk: bytes = b"x" * KB, limit: int | None = None) -> None:
        self.chunk = chunk
        self.limit = limit
        self.pulled = 0
        self.stopped = False
        self.closed = 0
        self.complete: list[bytes] | None = None

    async def body(self) -> AsyncIterator[bytes]:
        try:
            while self.limit is None or self.pulled < self.limit:
                self.pulled += 1
                yield self.chunk
                await asyncio.sleep(0)  # an upstream that always has more, at once
        finally:
            self.stopped = True  # cancelled mid-read, or closed while paused

    async def close(self, complete: list[bytes] | None) -> None:
        self.closed += 1
        self.complete = complete


async def settle(rounds: int = 200) -> None:
    """Let the pump run as far as it will: the source never waits on anything real."""
    for _ in range(rounds):
        await asyncio.sleep(0)


def bounded(source: Endless, clock: FakeClock, idle: float = 30.0) -> SharedStream:
    return SharedStream(
        source.body(), source.close, buffer_bytes=BOUND, idle_timeout=idle, clock=clock
    )


async def test_a_reader_that_never_reads_holds_at_most_the_bound(clock: FakeClock) -> None:
    source = Endless()
    shared = bounded(source, clock)
    idle = shared.reader()
    await settle()
    # The pump stopped pulling once this reader was a whole buffer behind.
    assert source.pulled <= BOUND // KB + 1
    assert shared.retained_bytes <= BOUND + KB
    await settle()
    assert source.pulled <= BOUND // KB + 1  # and it stays stopped
    await idle.aclose()
    assert source.stopped
    assert shared.retained_bytes == 0


async def test_back_pressure_pulls_only_as_fast_as_the_reader_takes(clock: FakeClock) -> None:
    source = Endless()
    shared = bounded(source, clock)
    reader = shared.reader()
    chunks = aiter(reader)
    await settle()
    paused_at = source.pulled
    assert paused_at == BOUND // KB
    for taken in range(1, 100):
        await anext(chunks)
        await settle()
        assert source.pulled - taken <= BOUND // KB  # never more than the bound ahead
        if taken < BOUND // KB // 2:
            assert source.pulled == paused_at  # paused until half the backlog is taken
    assert source.pulled >= 100  # and then it keeps pace with the reader
    await reader.aclose()


async def test_a_slow_reader_is_cut_off_while_the_fast_one_finishes(clock: FakeClock) -> None:
    source = Endless(limit=100)  # 100 KB, over the 16 KB bound
    shared = bounded(source, clock)
    slow = aiter(shared.reader())
    assert await anext(slow) == b"x" * KB
    fast = asyncio.ensure_future(collect_bounded(shared))
    await settle()
    got, peak = await fast
    assert len(got) == 100  # the fast reader got every chunk...
    assert peak <= BOUND + KB  # ...while the stream never held more than the bound
    with pytest.raises(SlowReaderError, match="behind") as cut:
        await anext(slow)
    assert cut.value.behind > BOUND
    assert cut.value.limit == BOUND
    assert cut.value.idle is None
    assert source.complete is None  # ended, but too big to have been kept: never stored
    assert shared.retained_bytes == 0


async def collect_bounded(shared: SharedStream) -> tuple[list[bytes], int]:
    """Every chunk of a new reader, and the most the stream held meanwhile."""
    chunks, peak = [], 0
    async for chunk in shared.reader():
        chunks.append(chunk)
        peak = max(peak, shared.retained_bytes)
    return chunks, peak


async def test_a_stream_past_the_bound_cannot_be_joined(clock: FakeClock) -> None:
    source = Endless(limit=40)
    shared = bounded(source, clock)
    reader = shared.reader()
    chunks = aiter(reader)
    for _ in range(BOUND // KB):
        await anext(chunks)
    assert shared.joinable  # 16 KB so far: a joiner would still get it all
    await anext(chunks)
    await settle(5)
    assert not shared.joinable
    with pytest.raises(RuntimeError, match="no longer holds its first chunk"):
        shared.reader()
    await reader.aclose()


async def test_an_idle_reader_is_dropped_and_the_last_one_closes_the_stream(
    clock: FakeClock,
) -> None:
    source = Endless()
    shared = bounded(source, clock, idle=5.0)
    reader = aiter(shared.reader())
    await anext(reader)
    await clock.run_for(4.9)
    assert not source.stopped  # not idle long enough yet
    await clock.run_for(0.2)
    assert source.stopped  # the only reader went idle: the upstream stream is closed
    assert source.closed == 1
    assert source.complete is None
    with pytest.raises(SlowReaderError, match="took nothing for 5s") as dropped:
        await anext(reader)
    assert dropped.value.idle == 5.0
    assert shared.retained_bytes == 0
    assert clock.sleepers == 0  # the watchdog is gone too


async def test_an_idle_reader_is_dropped_while_an_active_one_goes_on(clock: FakeClock) -> None:
    source = Endless()
    shared = bounded(source, clock, idle=5.0)
    idle, active = shared.reader(), shared.reader()
    chunks = aiter(active)
    for _ in range(6):
        await clock.run_for(1.0)
        await anext(chunks)
    assert shared.readers == 1
    assert not source.stopped
    with pytest.raises(SlowReaderError):
        await anext(aiter(idle))
    for _ in range(3 * BOUND // KB):
        await anext(chunks)  # no longer held back by the idle reader
    await active.aclose()
    assert source.stopped


async def test_waiting_for_a_slow_upstream_is_not_idling(clock: FakeClock) -> None:
    source = Source()
    shared = SharedStream(source.body(), source.close, idle_timeout=5.0, clock=clock)
    reader = shared.reader()
    waiting = asyncio.ensure_future(anext(aiter(reader)))
    await clock.run_for(60.0)  # the upstream thinks for a minute; the reader waits on it
    source.queue.put_nowait(b"late")
    assert await waiting == b"late"
    assert not source.cancelled
    await reader.aclose()
