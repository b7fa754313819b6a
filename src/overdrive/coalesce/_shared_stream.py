"""Streamed responses shared by identical requests that are in flight together.

One upstream stream feeds any number of readers. A pump task reads the
upstream body; a reader that joins late first gets what it missed, then the
rest as it arrives: every reader sees the same bytes from the first, at the
pace of the upstream, and time to first chunk is not delayed for anyone.
Readers that stop early just leave; when the last one leaves before the end,
nobody wants the answer any more and the upstream stream is closed, freeing
its slot and its tokens.

Joining is safe exactly when the non-streamed answer could be shared: the
requests are byte-identical (the same key), so the upstream would have been
asked the same question twice.

Memory is bounded by ``buffer_bytes``, whatever the readers do:

- While the whole body so far fits in it, every chunk is kept, so a late
  joiner replays from the first and the finished body can be stored. Past
  it the stream can no longer be joined nor stored, and the chunks every
  reader has passed are let go.
- The pump reads the upstream only while some reader is less than
  ``buffer_bytes`` behind: when all are that far behind it pauses, and the
  pause reaches the upstream as TCP back-pressure.
- A reader further behind than ``buffer_bytes`` while another keeps up is cut
  off (its iteration raises :class:`~overdrive.SlowReaderError`), so one slow
  reader neither holds the others nor grows memory.
- A reader that takes nothing for ``idle_timeout`` seconds, while the stream
  is not making it wait, is dropped the same way; when it was the last, the
  upstream stream is closed.

So one stream holds at most ``buffer_bytes`` plus one chunk.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable

from .._clock import Clock, SystemClock
from .._errors import SlowReaderError

__all__ = ["DEFAULT_BUFFER_BYTES", "DEFAULT_IDLE_TIMEOUT", "SharedStream", "StreamReader"]

# Called once the pump stops, with every chunk if the body ended normally and
# was kept whole, else None (cut short, failed, or too big to keep).
Close = Callable[[list[bytes] | None], Awaitable[None]]

DEFAULT_BUFFER_BYTES = 1024 * 1024
DEFAULT_IDLE_TIMEOUT = 30.0


class SharedStream:
    """The chunks of one upstream body, for every :class:`StreamReader` that asks.

    >>> async def main() -> list[bytes]:
    ...     async def body() -> AsyncIterator[bytes]:
    ...         yield b"data: 1\\n\\n"
    ...         yield b"data: 2\\n\\n"
    ...     async def close(complete: list[bytes] | None) -> None: ...
    ...     shared = SharedStream(body(), close, buffer_bytes=64 * 1024)
    ...     return [chunk async for chunk in shared.reader()]
    >>> asyncio.run(main())
    [b'data: 1\\n\\n', b'data: 2\\n\\n']
    """

    __slots__ = (
        "_arrived",
        "_buffer",
        "_chunks",
        "_clock",
        "_close",
        "_closing",
        "_error",
        "_finished",
        "_first",
        "_furthest",
        "_idle_timeout",
        "_joins",
        "_keeping",
        "_opened",
        "_pump",
        "_readers",
        "_retained",
        "_room",
        "_total",
        "_watchdog",
    )

    def __init__(
        self,
        source: AsyncIterator[bytes],
        close: Close,
        *,
        buffer_bytes: int = DEFAULT_BUFFER_BYTES,
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
        clock: Clock | None = None,
    ) -> None:
        self._chunks: deque[bytes] = deque()
        self._first = 0  # the index in the whole body of self._chunks[0]
        self._total = 0  # bytes arrived so far
        self._retained = 0  # bytes still held in self._chunks
        self._buffer = buffer_bytes
        self._idle_timeout = idle_timeout
        self._clock: Clock = clock or SystemClock()
        self._keeping = True  # every chunk is still held: joinable, storable
        self._arrived = asyncio.Event()
        self._room: asyncio.Event | None = None  # set while the pump waits for a reader
        self._finished = False
        self._closing = False
        self._error: BaseException | None = None
        self._readers: set[StreamReader] = set()
        self._joins = 0
        self._furthest = 0  # bytes taken by the reader furthest ahead
        self._opened = self._clock.now()
        self._close = close
        self._pump = asyncio.ensure_future(self._read(source))
        self._watchdog = asyncio.ensure_future(self._watch())

    @property
    def finished(self) -> bool:
        return self._finished

    @property
    def joinable(self) -> bool:
        """True while a new reader would still get the whole body."""
        return self._keeping and not self._finished and not self._closing

    @property
    def readers(self) -> int:
        return len(self._readers)

    @property
    def retained_bytes(self) -> int:
        """Bytes of the body held now: the whole body while kept, else the backlogs."""
        return self._retained

    def reader(self) -> StreamReader:
        """A new reader that starts from the first chunk."""
        if not self.joinable:
            raise RuntimeError(f"{self!r} no longer holds its first chunk for a new reader")
        reader = StreamReader(self, self._clock.now())
        self._readers.add(reader)
        self._joins += 1
        self._make_room()  # the pump waits for its first reader
        return reader

    # -- the pump --------------------------------------------------------------

    async def _read(self, source: AsyncIterator[bytes]) -> None:
        ended = False
        try:
            while True:
                await self._room_for_more()
                try:
                    chunk = await anext(source)
                except StopAsyncIteration:
                    break
                self._arrive(chunk)
            ended = True
        except Exception as exc:  # handed to every reader, not lost in this task
            self._error = exc
        finally:
            self._finished = True
            self._wake()
            try:
                await _close_source(source)
            finally:
                await self._close(list(self._chunks) if ended and self._keeping else None)

    async def _room_for_more(self) -> None:
        """Wait while every reader is a whole buffer behind: the upstream waits with them.

        Once paused, reading resumes when some reader is back within half the
        buffer, so the pump and a reader do not take turns chunk by chunk.
        With no reader left it waits too, for the watchdog or the last reader
        to close the stream: nobody would take what it read.
        """
        if self._readers and self._least_behind() < self._buffer:
            return
        while not self._readers or self._least_behind() > self._buffer // 2:
            self._room = room = asyncio.Event()
            await room.wait()
        self._room = None

    def _make_room(self) -> None:
        """Let a waiting pump look again: a reader took a chunk, came, or went."""
        if self._room is not None:
            self._room.set()

    def _least_behind(self) -> int:
        return self._total - self._furthest

    def _arrive(self, chunk: bytes) -> None:
        self._chunks.append(chunk)
        self._total += len(chunk)
        self._retained += len(chunk)
        if self._keeping and self._total > self._buffer:
            self._keeping = False  # too big to replay to a joiner or to store
            self._let_go()
        # Held bytes reach back to the slowest reader: only past the bound can any be cut.
        if not self._keeping and self._retained > self._buffer and self._cut_slow_readers():
            self._let_go()
        self._wake()

    def _wake(self) -> None:
        # Readers wait on the current event; replacing it lets the next wait block again.
        arrived, self._arrived = self._arrived, asyncio.Event()
        arrived.set()

    def _cut_slow_readers(self) -> bool:
        """Drop every reader past the bound but those furthest ahead (the pump reads for them).

        True if any was dropped.
        """
        oldest = self._total - self._buffer  # a reader that took less is past the bound
        slow = [r for r in self._readers if r._taken < oldest and r._taken < self._furthest]
        for reader in slow:
            self._drop(reader, SlowReaderError(self._total - reader._taken, self._buffer))
        return bool(slow)

    def _let_go(self) -> None:
        """Forget the chunks every reader has passed (once the body is no longer kept whole)."""
        if len(self._readers) == 1:  # the common case, without a generator
            slowest = next(iter(self._readers))._next
        else:
            end = self._first + len(self._chunks)
            slowest = min((reader._next for reader in self._readers), default=end)
        while self._first < slowest:
            self._retained -= len(self._chunks.popleft())
            self._first += 1

    # -- the readers' side -----------------------------------------------------

    async def _next_chunk(self, reader: StreamReader) -> bytes | None:
        """The reader's next chunk, waiting for it; None once the body has ended before it."""
        while True:
            if reader._dropped is not None:
                raise reader._dropped
            index = reader._next - self._first
            if index < len(self._chunks):
                return self._hand(reader, self._chunks[index], index)
            if self._finished:
                if self._error is not None:
                    raise self._error
                return None
            reader._waiting = True
            try:
                await self._arrived.wait()
            finally:
                # Waiting on the upstream is not idling: its idle time starts over.
                reader._waiting = False
                reader._since = self._clock.now()

    def _hand(self, reader: StreamReader, chunk: bytes, index: int) -> bytes:
        reader._next += 1
        reader._taken += len(chunk)
        reader._since = self._clock.now()
        if reader._taken > self._furthest:
            self._furthest = reader._taken
        if self._room is not None and self._total - reader._taken <= self._buffer // 2:
            self._room.set()  # back within the low-water mark: the pump may read again
        if index == 0 and not self._keeping:  # it took the oldest chunk held: maybe the last
            self._let_go()
        return chunk

    def _drop(self, reader: StreamReader, error: SlowReaderError) -> None:
        """Cut ``reader`` off: its next read raises ``error``; it pins no chunk any more."""
        reader._dropped = error
        self._gone(reader)
        self._make_room()  # the pump may have been waiting for this very reader

    def _gone(self, reader: StreamReader) -> None:
        self._readers.discard(reader)
        if reader._taken == self._furthest:  # maybe the one ahead: find who is now
            self._furthest = max((r._taken for r in self._readers), default=0)

    async def _leave(self, reader: StreamReader) -> None:
        self._gone(reader)
        if self._readers:
            self._make_room()
            if not self._keeping:
                self._let_go()
            return
        self._watchdog.cancel()
        if not self._finished:
            await self._stop()  # the last reader left early: stop paying for the stream
        else:
            # It ended, but may still be closing the upstream (and storing the body):
            # once the last reader is closed, the stream's upstream slot is free.
            await asyncio.wait((self._pump,))
        self._let_go()

    async def _stop(self) -> None:
        self._closing = True
        self._pump.cancel()
        # wait(), not await: the pump's cancellation is not this caller's.
        await asyncio.wait((self._pump,))

    async def _watch(self) -> None:
        """Drop readers that take nothing for ``idle_timeout``; stop the stream once none is left.

        A stream nobody joins within ``idle_timeout`` of opening is stopped too.

        Sleeps until the earliest reader could be due: a reader's deadline only
        moves later, and one set after this sleep began is at least a whole
        timeout away, so no deadline is missed and nothing polls.
        """
        while True:
            now = self._clock.now()
            for reader in [r for r in self._readers if self._idle_left(r, now) <= 0.0]:
                behind = self._total - reader._taken
                self._drop(reader, SlowReaderError(behind, self._buffer, self._idle_timeout))
            if self._readers:
                if not self._keeping:
                    self._let_go()
                await self._clock.sleep(min(self._idle_left(r, now) for r in self._readers))
            elif self._joins == 0 and now < self._opened + self._idle_timeout:
                await self._clock.sleep(self._opened + self._idle_timeout - now)  # nobody yet
            else:
                break
        if not self._finished:
            await self._stop()
        self._let_go()

    def _idle_left(self, reader: StreamReader, now: float) -> float:
        """Seconds before ``reader`` is idle; a whole timeout while the stream makes it wait."""
        if reader._waiting:
            return self._idle_timeout
        return reader._since + self._idle_timeout - now

    def __repr__(self) -> str:
        state = "finished" if self._finished else "streaming"
        return (
            f"SharedStream({state}, joinable={self.joinable}, retained={self._retained}B, "
            f"chunks={len(self._chunks)}, readers={len(self._readers)})"
        )


async def _close_source(source: AsyncIterator[bytes]) -> None:
    """Close a body stopped while paused (not inside a read) now, not when it is collected."""
    if isinstance(source, AsyncGenerator):
        with contextlib.suppress(Exception):  # it is over either way; the pump's outcome stands
            await source.aclose()


class StreamReader:
    """One reader's position in a :class:`SharedStream`; iterate it, then ``aclose`` it."""

    __slots__ = ("_closed", "_dropped", "_next", "_since", "_stream", "_taken", "_waiting")

    def __init__(self, stream: SharedStream, now: float) -> None:
        self._stream = stream
        self._next = 0  # index in the whole body of the next chunk to hand over
        self._taken = 0  # bytes handed over so far
        self._since = now  # when it last took a chunk or stopped waiting for one
        self._waiting = False
        self._dropped: SlowReaderError | None = None
        self._closed = False

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[bytes]:
        try:
            while (chunk := await self._stream._next_chunk(self)) is not None:
                yield chunk
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            await self._stream._leave(self)

    def __repr__(self) -> str:
        state = "closed" if self._closed else "dropped" if self._dropped else "reading"
        return f"StreamReader(at={self._next}, taken={self._taken}B, {state})"
