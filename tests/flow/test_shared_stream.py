from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from overdrive.flow import SharedStream


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
