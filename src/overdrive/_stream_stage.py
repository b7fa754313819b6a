"""A streamed call's path: cache, then coalesce, then send, then store when complete.

A fresh stored stream is played back; else an identical stream in flight is
joined; else one is opened (paced and retried until its first byte) and kept,
once it ended with its API's terminal event and carried no error. Whether a
stream is complete, and what an error event is, the call's adapter says.

A call naming a ``[[models]]`` alias is resolved first (see
``route/_aliases.py``); one with fallbacks is opened by the sender, which moves
on to the next model only before the first byte, and its stream is kept only
when its own model served it.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from ._assembly import Parts
from ._calls import Call, SampledPolicy, shares_answers
from ._errors import UpstreamProtocolError, UpstreamStatusError
from ._json import loads
from .cache import StoredAnswer
from .coalesce import StreamFlight, StreamReply, replay, sse_lines
from .monitor.names import STREAMS_NOT_STORED
from .upstream import Exchange

__all__ = ["StreamStage"]

KeyOf = Callable[[Call], bytes]
Opener = Callable[[], Awaitable[Exchange]]
# Keeps a streamed body that ended: (call, key, upstream, chunks).
Keep = Callable[[Call, bytes, str, list[bytes]], Awaitable[None]]


class StreamStage:
    """Opens streamed calls for every door; ``events`` reads one as parsed events."""

    __slots__ = ("_flight", "_key_of", "_parts", "_sampled", "_wall")

    def __init__(
        self,
        parts: Parts,
        flight: StreamFlight,
        key_of: KeyOf,
        wall: Callable[[], float],
        sampled: SampledPolicy,
    ) -> None:
        self._parts = parts
        self._flight = flight
        self._key_of = key_of
        self._wall = wall
        self._sampled = sampled

    async def open(self, call: Call) -> StreamReply:
        """The caller's reply: stored, joined or newly opened; the caller closes it."""
        parts = self._parts
        aliases = parts.send.aliases
        if call.model in aliases:
            call = aliases[call.model].apply(call)
        meters = parts.meters.of(call.op)
        meters.requests.inc()
        router = parts.send.router
        upstream_api = call.api.upstream_api
        if not router.serves(call.model, upstream_api):  # fail fast, before any queueing
            raise router.unknown(call.model, upstream_api)
        if call.fallbacks:
            opener, keep = self._falling_back(call)
        else:
            opener, keep = (
                functools.partial(parts.send.dispatcher.send, call, stream=True),
                self._store,
            )
        if not shares_answers(call, self._sampled):
            return await self._flight.alone(opener)
        key = self._key_of(call)
        cache = parts.cache
        if cache.switch.on and call.cache == "default":
            stored = await cache.stage.fresh_answer(key, call.max_age)
            if stored is not None:
                meters.hits.inc()
                return replay(stored.chunks(), stored.upstream, call.api.stream_type, call.model)
            meters.misses.inc()
        keeps = cache.switch.on and call.cache != "no-store"
        store = functools.partial(keep, call, key) if keeps else None
        reply = await self._flight.open(key, opener, store)
        if reply.source == "coalesced":
            meters.coalesced.inc()
        return reply

    def _falling_back(self, call: Call) -> tuple[Opener, Keep]:
        """How a call with fallbacks opens, and keeps its stream only if its own model served it."""
        sender = self._parts.send.sender
        served: list[str] = []  # the model the opened exchange went as

        async def opener() -> Exchange:
            exchange = await sender.open_stream(call)
            served.append(exchange.model)
            return exchange

        async def keep(call: Call, key: bytes, upstream: str, chunks: list[bytes]) -> None:
            if served == [call.model]:  # a fallback's stream is no answer of the key's model
                await self._store(call, key, upstream, chunks)

        return opener, keep

    def forget_loop(self) -> None:
        """The event loop the streams in flight ran on is gone: nobody can join them."""
        self._flight.forget_loop()

    async def events(
        self, call: Call, open: Callable[[Call], Awaitable[StreamReply]] | None = None
    ) -> AsyncIterator[dict[str, Any]]:
        """Each parsed event of a streamed call; an error event raises UpstreamProtocolError.

        ``open`` opens it (the engine's ``open_stream``, which may run it on
        another loop); :meth:`open` when None.
        """
        reply = await (open or self.open)(call)
        try:
            if reply.status != 200:
                raise UpstreamStatusError(reply.upstream, reply.status, await reply.aread())
            async for line in sse_lines(reply):
                if line.startswith("data: ") and line != "data: [DONE]":
                    event = loads(line[6:])
                    if call.api.is_error_event(event):
                        # An error mid-stream is the upstream failing, not an event to use.
                        detail = str(event.get("error") or event)[:200]
                        raise UpstreamProtocolError(reply.upstream, f"stream error: {detail}")
                    yield event
        finally:
            await reply.aclose()

    async def _store(self, call: Call, key: bytes, upstream: str, chunks: list[bytes]) -> None:
        """Keep a streamed body that is complete and clean, as its chunks (replayed as a stream)."""
        if not call.api.stream_complete(chunks):  # truncated, or it carried an error event
            self._parts.metrics.counter(STREAMS_NOT_STORED).inc()
            return
        answer = StoredAnswer(200, chunks, upstream, self._wall())
        cache = self._parts.cache
        await cache.stage.store(key, answer, cache.ttl.seconds, wait=False)
