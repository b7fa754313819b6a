"""Single-flight for streamed calls: identical streams in flight share one upstream stream.

Each stream's memory is bounded by the :class:`~overdrive.flow.SharedStream`
under it (``buffer_bytes`` per reader, back-pressure, slow and idle readers
dropped), and its whole body by the upstream's ``max_response_bytes``: past
it the stream is cut with :class:`~overdrive.UpstreamProtocolError` and
nothing is stored.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from .._clock import Clock
from ..upstream import AnswerBounds, Exchange, read_within
from ._shared_stream import DEFAULT_BUFFER_BYTES, DEFAULT_IDLE_TIMEOUT, SharedStream, StreamReader

__all__ = ["Settlement", "StreamFlight", "StreamReply", "replay", "sse_lines"]

Opener = Callable[[], Awaitable[Exchange]]
# Keeps a whole streamed body (its chunks, as they came) once it ended well.
Store = Callable[[str, list[bytes]], Awaitable[None]]


class Settlement(Protocol):
    """Books what a stream used: it sees every chunk, then hears how the stream ended."""

    def feed(self, chunk: bytes) -> None: ...

    async def finish(self, exchange: Exchange, ended: bool) -> None:
        """The stream is over (``ended``: it reached its end, not cut); its exchange still open."""
        ...


@dataclass(slots=True)
class _Origin:
    """What the upstream answered: a shared body for a 200, the whole body otherwise."""

    status: int
    headers: Mapping[str, str]
    upstream: str
    shared: SharedStream | None
    chunks: list[bytes] = field(default_factory=list)
    queued_s: float = 0.0
    model: str = ""  # the model it was sent as (the exchange's)


def replay(
    chunks: list[bytes],
    upstream: str,
    media_type: str = "text/event-stream",
    model: str = "",
    *,
    similarity: float | None = None,
) -> StreamReply:
    """A reply that plays a stored streamed body back chunk by chunk.

    With ``similarity`` it is a semantic hit: the answer to a question that
    meant the same (``source`` "semantic").
    """
    headers = {"content-type": media_type}
    origin = _Origin(200, headers, upstream, None, chunks, model=model)
    reply = StreamReply(origin, "cache" if similarity is None else "semantic")
    reply.similarity = similarity
    return reply


class StreamReply:
    """One caller's streamed answer: status, headers, then the body chunk by chunk.

    ``source`` is "upstream" for the caller whose request went out,
    "coalesced" for one that joined it, "cache" for a stored stream played
    back and "semantic" for one stored for a question that meant the same
    (``similarity`` says how close). ``model`` is the model that served it.
    Always ``aclose`` it (iterating to the end does too).
    """

    __slots__ = (
        "_reader",
        "_stored",
        "headers",
        "model",
        "queued_s",
        "similarity",
        "source",
        "status",
        "upstream",
    )

    def __init__(self, origin: _Origin, source: str) -> None:
        self.status = origin.status
        self.headers = origin.headers
        self.upstream = origin.upstream
        self.model = origin.model
        self.source = source
        self.similarity: float | None = None
        # Only the caller whose request went out waited for admission.
        self.queued_s = origin.queued_s if source == "upstream" else 0.0
        self._stored = origin.chunks
        self._reader: StreamReader | None = (
            origin.shared.reader() if origin.shared is not None else None
        )

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[bytes]:
        if self._reader is None:
            for chunk in self._stored:
                yield chunk
            return
        async for chunk in self._reader:
            yield chunk

    async def aread(self) -> bytes:
        return b"".join([chunk async for chunk in self])

    async def aclose(self) -> None:
        if self._reader is not None:
            await self._reader.aclose()

    def __repr__(self) -> str:
        return f"StreamReply(status={self.status}, upstream={self.upstream!r}, {self.source})"


class StreamFlight:
    """Opens one upstream stream per key at a time; callers with that key join it.

    ``buffer_bytes`` and ``idle_timeout`` bound every stream it opens (see
    :class:`~overdrive.flow.SharedStream`); ``clock`` times the idle readers.
    """

    __slots__ = ("_buffer", "_clock", "_idle_timeout", "_open", "joined", "led")

    def __init__(
        self,
        clock: Clock | None = None,
        *,
        buffer_bytes: int = DEFAULT_BUFFER_BYTES,
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
    ) -> None:
        self._open: dict[Hashable, asyncio.Future[_Origin]] = {}
        self._clock = clock
        self._buffer = buffer_bytes
        self._idle_timeout = idle_timeout
        self.led = 0
        self.joined = 0

    async def open(
        self,
        key: Hashable,
        opener: Opener,
        store: Store | None = None,
        settlement: Settlement | None = None,
    ) -> StreamReply:
        """The reply for ``key``: a reader of the stream in flight, or a new stream.

        ``store`` receives the chunks of a new stream that ended and was kept
        whole (no bigger than ``buffer_bytes``); it judges whether they are
        worth keeping. ``settlement`` books a new stream's usage (a joined one
        was booked by the caller it joined).
        """
        pending = self._open.get(key)
        if pending is not None:
            origin = await _outcome(pending)
            if origin is not None and origin.shared is not None and origin.shared.joinable:
                self.joined += 1
                return StreamReply(origin, "coalesced")
        return await self._lead(key, opener, store, settlement)

    async def alone(self, opener: Opener, settlement: Settlement | None = None) -> StreamReply:
        """A stream of the caller's own: nobody joins it and nothing stores it."""
        self.led += 1
        origin = await self._start(opener, _nothing, None, settlement)
        return StreamReply(origin, "upstream")

    async def _lead(
        self, key: Hashable, opener: Opener, store: Store | None, settlement: Settlement | None
    ) -> StreamReply:
        self.led += 1
        pending: asyncio.Future[_Origin] = asyncio.get_running_loop().create_future()
        self._open[key] = pending
        forget = lambda: self._forget(key, pending)  # noqa: E731 (one closure)
        try:
            origin = await self._start(opener, forget, store, settlement)
        except BaseException as exc:
            self._forget(key, pending)
            if isinstance(exc, Exception):
                pending.set_exception(exc)  # joiners get the same error
                pending.exception()  # retrieved: no warning if nobody joined
            else:
                pending.cancel()  # joiners open the stream themselves
            raise
        reply = StreamReply(origin, "upstream")  # a reader before anyone can leave
        pending.set_result(origin)
        if origin.shared is None:
            self._forget(key, pending)
        return reply

    async def _start(
        self,
        opener: Opener,
        finished: Callable[[], None],
        store: Store | None,
        settlement: Settlement | None = None,
    ) -> _Origin:
        exchange = await opener()
        response = exchange.response
        headers = dict(response.headers)
        name = exchange.upstream.name
        bounds = exchange.upstream.bounds
        if response.status_code != 200:
            try:
                body = await read_within(response, bounds)
            finally:
                await exchange.aclose()
            chunks = [body] if body else []
            queued = exchange.lease.queued_s
            return _Origin(
                response.status_code, headers, name, None, chunks, queued, exchange.model
            )
        tally = _Tally()

        async def close(kept: list[bytes] | None) -> None:
            finished()
            if tally.ended:
                # About one token per event: lets the adaptive limit judge per token.
                exchange.lease.output_tokens = max(1, tally.events)
            if settlement is not None:  # may put the reported count in its place
                await settlement.finish(exchange, tally.ended)
            await exchange.aclose()
            if kept is not None and store is not None:
                await store(name, kept)

        # Decoded: we relay no content-encoding.
        source = _counted(response.aiter_bytes(), bounds, tally, settlement)
        shared = SharedStream(
            source,
            close,
            buffer_bytes=self._buffer,
            idle_timeout=self._idle_timeout,
            clock=self._clock,
        )
        queued = exchange.lease.queued_s
        return _Origin(200, headers, name, shared, queued_s=queued, model=exchange.model)

    def forget_loop(self) -> None:
        """The event loop the streams ran on is gone: forget them (nobody can join those)."""
        self._open.clear()

    def _forget(self, key: Hashable, pending: asyncio.Future[_Origin]) -> None:
        """Take the key off the board once its stream ended or failed to open."""
        if self._open.get(key) is pending:
            del self._open[key]

    def __len__(self) -> int:
        return len(self._open)

    def __repr__(self) -> str:
        return f"StreamFlight(open={len(self)}, led={self.led}, joined={self.joined})"


class _Tally:
    """What went by in a streamed body: its bytes, about how many events, whether it ended."""

    __slots__ = ("ended", "events", "size")

    def __init__(self) -> None:
        self.size = 0
        self.events = 0
        self.ended = False


async def _counted(
    body: AsyncIterator[bytes],
    bounds: AnswerBounds,
    tally: _Tally,
    settlement: Settlement | None = None,
) -> AsyncIterator[bytes]:
    """``body`` as it comes, cut with an error once it passes the upstream's body bound."""
    async for chunk in body:
        tally.size += len(chunk)
        if tally.size > bounds.body_bytes:
            raise bounds.body_error()
        # Server-sent data events, the closing [DONE] left out (a split "data:" is missed).
        tally.events += chunk.count(b"data:") - chunk.count(b"data: [DONE]")
        if settlement is not None:
            settlement.feed(chunk)
        yield chunk
    tally.ended = True


def _nothing() -> None:
    """No board to take a stream nobody joins off."""


async def _outcome(pending: asyncio.Future[_Origin]) -> _Origin | None:
    """The leader's origin; None if the leader was cancelled before the stream opened."""
    try:
        return await asyncio.shield(pending)
    except asyncio.CancelledError:
        if pending.cancelled():
            return None
        raise


async def sse_lines(chunks: AsyncIterator[bytes] | StreamReply) -> AsyncIterator[str]:
    """The lines of a server-sent-events body, whatever the chunk boundaries."""
    pending = b""
    async for chunk in chunks:
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            yield line.rstrip(b"\r").decode()
    if pending:
        yield pending.rstrip(b"\r").decode()
