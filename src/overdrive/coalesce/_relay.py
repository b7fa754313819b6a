"""A streamed reply read from another event loop than the one its stream runs on."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any, Protocol, TypeVar

from ._stream_flight import StreamReply

__all__ = ["FilteredReply", "Hop", "RelayedReply"]

T = TypeVar("T")


class Hop(Protocol):
    """Runs a coroutine on the stream's own loop; the caller awaits its outcome on its loop."""

    def __call__(self, work: Coroutine[Any, Any, T], /) -> Awaitable[T]: ...


class RelayedReply(StreamReply):
    """``inner``'s head at once, then its chunks fetched one at a time through ``hop``.

    One chunk is in transit at a time, so the relay holds no more than the
    stream it reads; closing it closes ``inner`` on its own loop.
    """

    __slots__ = ("_hop", "_inner")

    def __init__(self, inner: StreamReply, hop: Hop) -> None:
        _copy_head(self, inner)  # plain data: copied, not fetched
        self._inner = inner
        self._hop = hop

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._relay()

    async def _relay(self) -> AsyncIterator[bytes]:
        chunks = self._inner.__aiter__()
        while (chunk := await self._hop(_next(chunks))) is not None:
            yield chunk

    async def aclose(self) -> None:
        await self._hop(self._inner.aclose())

    def __repr__(self) -> str:
        return f"RelayedReply({self._inner!r})"


class FilteredReply(StreamReply):
    """``inner`` with its body passed through ``transform`` (its head as it is)."""

    __slots__ = ("_inner", "_transform")

    def __init__(
        self,
        inner: StreamReply,
        transform: Callable[[AsyncIterator[bytes]], AsyncIterator[bytes]],
    ) -> None:
        _copy_head(self, inner)
        self._inner = inner
        self._transform = transform

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._transform(self._inner.__aiter__())

    async def aclose(self) -> None:
        await self._inner.aclose()

    def __repr__(self) -> str:
        return f"FilteredReply({self._inner!r})"


def _copy_head(reply: StreamReply, inner: StreamReply) -> None:
    reply.status, reply.headers, reply.upstream = inner.status, inner.headers, inner.upstream
    reply.source, reply.queued_s, reply.model = inner.source, inner.queued_s, inner.model
    reply.similarity = inner.similarity
    reply._stored = []
    reply._reader = None


async def _next(chunks: AsyncIterator[bytes]) -> bytes | None:
    """The next chunk, None at the end (StopAsyncIteration does not cross loops well)."""
    return await anext(chunks, None)
