"""``chunks(source, size)``: any byte source cut into pieces of exactly ``size`` bytes.

Back-pressure comes from pulling: a chunk is read only when the consumer asks
for it, so a slow consumer slows the reader and memory stays near one chunk.
``prefetch=n`` lets a background task stay at most ``n`` chunks ahead, which
overlaps reading with the consumer's work.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

from .._errors import RequestError
from ._base import Stream, aclose_consumed, whole_number
from ._sources import ByteSource, Reader, describe, open_source

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

__all__ = ["ChunkStream", "Rechunker", "chunks"]

# Tiny chunks are read in blocks of about this many bytes: one thread hop per
# 10-byte chunk would cost more than the data. It bounds the read-ahead too.
MIN_READ = 64 * 1024


def chunks(source: ByteSource, size: int, *, prefetch: int = 0) -> ChunkStream:
    """Stream ``source`` as chunks of exactly ``size`` bytes; the last may be shorter.

    ``source`` is a path (read in worker threads, a block at a time), bytes, a
    binary file object (``read`` runs in a worker thread unless it is an
    ``io.BytesIO``), an object with an async ``read(n)`` (``asyncio.StreamReader``),
    an ``httpx.Response`` (its ``aiter_bytes()``), or a sync or async iterable of
    bytes-like pieces of any sizes (sync ones are iterated on the event loop, so
    they must not block).

    Nothing is read until the consumer asks: paths and files are read ``size``
    bytes at a time (a multiple of ``size`` near 64 KiB when ``size`` is
    smaller), iterables one piece at a time. ``prefetch=n`` reads up to ``n``
    chunks ahead in a background task. A chunk is joined once from views of its
    pieces (no growing buffer copied per piece); a ``bytes`` piece that is
    exactly one chunk is passed on without a copy.

    The stream closes the file it opened and the iterator it consumed when it
    ends or is closed (``aclose()``, ``async with``); your file objects stay open.

    >>> import asyncio, io
    >>> async def main() -> list[bytes]:
    ...     async with chunks(io.BytesIO(b"abcdefgh"), 3) as stream:
    ...         return [chunk async for chunk in stream]
    >>> asyncio.run(main())
    [b'abc', b'def', b'gh']
    """
    whole_number("size", size, 1)
    whole_number("prefetch", prefetch, 0)
    opened = open_source(source)
    if isinstance(opened, AsyncIterator):
        agen = from_pieces(opened, size)
    else:
        agen = from_reader(opened, size, size * max(1, MIN_READ // size))
    if prefetch:
        agen = read_ahead(agen, prefetch)
    return ChunkStream(agen, describe(source), size, prefetch)


class ChunkStream(Stream[bytes]):
    """The chunks of one source; ``repr`` shows how far it has got.

    Use it with ``async for``; close it with ``aclose()`` or ``async with`` when
    you stop early (dropping it also cleans up, a little later, via the loop).
    """

    __slots__ = ("_bytes", "_count", "_prefetch", "_size", "_source")

    def __init__(
        self, agen: AsyncGenerator[bytes, None], source: str, size: int, prefetch: int
    ) -> None:
        super().__init__(agen)
        self._source, self._size, self._prefetch = source, size, prefetch
        self._count = self._bytes = 0

    async def __anext__(self) -> bytes:
        chunk = await self._agen.__anext__()
        self._count += 1
        self._bytes += len(chunk)
        return chunk

    @property
    def delivered(self) -> tuple[int, int]:
        """(chunks, bytes) handed to the consumer so far."""
        return self._count, self._bytes

    def __repr__(self) -> str:
        return (
            f"ChunkStream({self._source}, size={self._size}, prefetch={self._prefetch}, "
            f"delivered={self._count} chunks / {self._bytes} bytes)"
        )


class Rechunker:
    """Cuts pieces of any sizes into chunks of exactly ``size`` bytes.

    Parts of the next chunk are kept as views and joined once, so each byte is
    copied once however the pieces fall (a ``bytes +=`` loop copies the
    growing chunk on every piece).

    >>> cut = Rechunker(4)
    >>> [*cut.feed(b"ab"), *cut.feed(b"cdefghij")], cut.tail()
    ([b'abcd', b'efgh'], b'ij')
    """

    __slots__ = ("_held", "_parts", "size")

    def __init__(self, size: int) -> None:
        self.size = size
        self._parts: list[memoryview | bytes] = []
        self._held = 0

    @property
    def held(self) -> int:
        """Bytes waiting for the rest of their chunk."""
        return self._held

    def feed(self, piece: object) -> Iterator[bytes]:
        """The chunks that ``piece`` completes; its remainder waits for the next piece."""
        view = byte_view(piece)
        if type(piece) is bytes and not self._parts and len(view) == self.size:
            yield piece  # already one whole chunk: no copy
            return
        start, end = 0, self.size - self._held
        while end <= len(view):
            self._parts.append(view[start:end])
            yield self._flush()
            start, end = end, end + self.size
        if start < len(view):
            rest = view[start:]
            # A mutable piece may be reused by its producer once we move on: copy the rest.
            self._parts.append(rest if type(piece) is bytes else rest.tobytes())
            self._held += len(rest)

    def tail(self) -> bytes:
        """The last, short chunk (empty when the data ended on a chunk boundary)."""
        return self._flush()

    def _flush(self) -> bytes:
        chunk = b"".join(self._parts)
        self._parts.clear()
        self._held = 0
        return chunk

    def __repr__(self) -> str:
        return f"Rechunker(size={self.size}, held={self._held})"


def byte_view(piece: object) -> memoryview:
    """A flat byte view of ``piece``, or a RequestError naming what the source produced."""
    try:
        view = memoryview(cast("ReadableBuffer", piece))
        return view if view.ndim == 1 and view.itemsize == 1 else view.cast("B")
    except TypeError:
        hint = " (encode it, or open the file in binary mode)" if isinstance(piece, str) else ""
        raise RequestError(
            "source", f"produced a {type(piece).__name__}, not bytes{hint}"
        ) from None


async def from_reader(reader: Reader, size: int, block: int) -> AsyncGenerator[bytes, None]:
    """Chunks read from ``reader``, asking for just enough to end on a chunk boundary."""
    cut = Rechunker(size)
    try:
        # After a short read, ask for the rest of the block so reads realign and stay copy-free.
        while data := await reader.read(block - cut.held):
            for chunk in cut.feed(data):
                yield chunk
        if tail := cut.tail():
            yield tail
    finally:
        await reader.aclose()


async def from_pieces(pieces: AsyncIterator[object], size: int) -> AsyncGenerator[bytes, None]:
    """Chunks cut from pieces pulled one at a time."""
    cut = Rechunker(size)
    try:
        async for piece in pieces:
            for chunk in cut.feed(piece):
                yield chunk
        if tail := cut.tail():
            yield tail
    finally:
        await aclose_consumed(pieces)


@dataclass(slots=True)
class _End:
    error: Exception | None = None


async def read_ahead(
    source: AsyncGenerator[bytes, None], ahead: int
) -> AsyncGenerator[bytes, None]:
    """``source`` read by a background task that stays at most ``ahead`` chunks in front."""
    room = asyncio.Semaphore(ahead)  # a slot per chunk read but not yet taken
    ready: asyncio.Queue[bytes | _End] = asyncio.Queue()
    pump = asyncio.create_task(_pump(source, room, ready))
    try:
        while not isinstance(item := await ready.get(), _End):
            room.release()
            yield item
        if item.error is not None:
            raise item.error
    finally:
        pump.cancel()
        await asyncio.wait([pump])  # the source must stop running before it can be closed
        await source.aclose()


async def _pump(
    source: AsyncGenerator[bytes, None], room: asyncio.Semaphore, ready: asyncio.Queue[bytes | _End]
) -> None:
    try:
        while True:
            await room.acquire()
            chunk = await anext(source, None)
            if chunk is None:
                break
            ready.put_nowait(chunk)
    except Exception as exc:  # handed to the consumer in order, after the chunks before it
        ready.put_nowait(_End(exc))
    else:
        ready.put_nowait(_End())
