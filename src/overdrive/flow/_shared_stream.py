"""Streamed responses shared by identical requests that are in flight together.

One upstream stream feeds any number of readers. A pump task reads the
upstream body and keeps every chunk, so a reader that joins late first gets
what it missed, then the rest as it arrives: every reader sees the same bytes
from the first, at the pace of the upstream, and time to first chunk is not
delayed for anyone. Readers that stop early just leave; when the last one
leaves before the end, nobody wants the answer any more and the upstream
stream is closed, freeing its slot and its tokens.

Joining is safe exactly when the non-streamed answer could be shared: the
requests are byte-identical (the same key), so the upstream would have been
asked the same question twice.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

__all__ = ["SharedStream", "StreamReader"]

# Called once the pump stops, with every chunk if the body ended normally, else None.
Close = Callable[[list[bytes] | None], Awaitable[None]]


class SharedStream:
    """The chunks of one upstream body, for every :class:`StreamReader` that asks.

    >>> async def main() -> list[bytes]:
    ...     async def body() -> AsyncIterator[bytes]:
    ...         yield b"data: 1\\n\\n"
    ...         yield b"data: 2\\n\\n"
    ...     async def close(complete: list[bytes] | None) -> None: ...
    ...     shared = SharedStream(body(), close)
    ...     return [chunk async for chunk in shared.reader()]
    >>> asyncio.run(main())
    [b'data: 1\\n\\n', b'data: 2\\n\\n']
    """

    __slots__ = (
        "_arrived",
        "_chunks",
        "_close",
        "_closing",
        "_error",
        "_finished",
        "_pump",
        "_readers",
    )

    def __init__(self, source: AsyncIterator[bytes], close: Close) -> None:
        self._chunks: list[bytes] = []
        self._arrived = asyncio.Event()
        self._finished = False
        self._closing = False
        self._error: BaseException | None = None
        self._readers = 0
        self._close = close
        self._pump = asyncio.ensure_future(self._read(source))

    @property
    def finished(self) -> bool:
        return self._finished

    @property
    def joinable(self) -> bool:
        """True while a new reader would still get the whole body."""
        return not self._finished and not self._closing

    @property
    def readers(self) -> int:
        return self._readers

    def reader(self) -> StreamReader:
        """A new reader that starts from the first chunk."""
        self._readers += 1
        return StreamReader(self)

    async def _read(self, source: AsyncIterator[bytes]) -> None:
        complete = False
        try:
            async for chunk in source:
                self._chunks.append(chunk)
                self._wake()
            complete = True
        except Exception as exc:  # handed to every reader, not lost in this task
            self._error = exc
        finally:
            self._finished = True
            self._wake()
            await self._close(self._chunks if complete else None)

    def _wake(self) -> None:
        # Readers wait on the current event; replacing it lets the next wait block again.
        arrived, self._arrived = self._arrived, asyncio.Event()
        arrived.set()

    async def _chunk(self, index: int) -> bytes | None:
        """Chunk ``index``, waiting for it; None once the body has ended before it."""
        while index >= len(self._chunks):
            if self._finished:
                if self._error is not None:
                    raise self._error
                return None
            await self._arrived.wait()
        return self._chunks[index]

    async def _leave(self) -> None:
        self._readers -= 1
        if self._readers == 0 and not self._finished:
            self._closing = True
            self._pump.cancel()  # the last reader left early: stop paying for the stream
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump

    def __repr__(self) -> str:
        state = "finished" if self._finished else "streaming"
        return f"SharedStream({state}, chunks={len(self._chunks)}, readers={self._readers})"


class StreamReader:
    """One reader's position in a :class:`SharedStream`; iterate it, then ``aclose`` it."""

    __slots__ = ("_closed", "_next", "_stream")

    def __init__(self, stream: SharedStream) -> None:
        self._stream = stream
        self._next = 0
        self._closed = False

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[bytes]:
        try:
            while (chunk := await self._stream._chunk(self._next)) is not None:
                self._next += 1
                yield chunk
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            await self._stream._leave()

    def __repr__(self) -> str:
        return f"StreamReader(at={self._next}, closed={self._closed})"
