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
from ._semantic_stage import Looked, SemanticStage
from .apis import hide_usage_events
from .cache import StoredAnswer
from .coalesce import FilteredReply, StreamFlight, StreamReply, replay, sse_lines
from .monitor.names import STREAMS_NOT_STORED
from .upstream import Exchange

__all__ = ["StreamStage"]

KeyOf = Callable[[Call], bytes]
Opener = Callable[[], Awaitable[Exchange]]
# Keeps a streamed body that ended: (call, key, upstream, chunks); True if it was stored.
Keep = Callable[[Call, bytes, str, list[bytes]], Awaitable[bool]]


class StreamStage:
    """Opens streamed calls for every door; ``events`` reads one as parsed events."""

    __slots__ = ("_ask_usage", "_flight", "_key_of", "_parts", "_sampled", "_semantic", "_wall")

    def __init__(
        self,
        parts: Parts,
        flight: StreamFlight,
        key_of: KeyOf,
        wall: Callable[[], float],
        sampled: SampledPolicy,
        semantic: SemanticStage | None = None,
        ask_usage: bool = True,
    ) -> None:
        self._parts = parts
        self._ask_usage = ask_usage
        self._semantic = semantic
        self._flight = flight
        self._key_of = key_of
        self._wall = wall
        self._sampled = sampled

    async def open(self, call: Call) -> StreamReply:
        """The caller's reply: stored, joined or newly opened; the caller closes it.

        A stream whose API reports usage only when asked (chat's
        ``include_usage``) is asked for it, so its cost can be booked, and the
        usage event is hidden from a caller who did not ask: it shares its
        stream, and its cache entry, with callers who did.
        """
        asked = call.api.with_stream_usage(call) if self._ask_usage else None
        if asked is None:
            return await self._open(call)
        reply = await self._open(asked)
        if reply.status != 200:
            return reply
        is_usage = call.api.is_usage_event
        return FilteredReply(reply, lambda chunks: hide_usage_events(chunks, is_usage))

    async def _open(self, call: Call) -> StreamReply:
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
        if not shares_answers(call, self._sampled):
            return await self._alone(await self._admitted(call))
        key = self._key_of(call)
        cache = parts.cache
        looked = None
        if cache.switch.on and call.cache == "default":
            played, looked = await self._played_back(call, key)
            if played is not None:
                meters.hits.inc()
                return played
            meters.misses.inc()
        admitted = await self._admitted(call)
        if admitted is not call:  # moved to a budget's fallback: not an answer of the key's model
            return await self._alone(admitted)
        opener, keep = self._opener(call)
        store = self._keeper(call, key, keep, looked) if cache.switch.on else None
        settlement = parts.send.sender.stream_settlement(call)
        reply = await self._flight.open(key, opener, store, settlement)
        if reply.source == "coalesced":
            meters.coalesced.inc()
        return reply

    async def _admitted(self, call: Call) -> Call:
        """``call`` as a spent budget lets it go: itself, moved to a fallback, or refused."""
        budgets = self._parts.send.sender.budgets
        return await budgets.admit(call) if budgets.active else call

    async def _alone(self, call: Call) -> StreamReply:
        """A stream of ``call``'s own: nobody joins it, nothing stores it; its usage booked."""
        opener, _ = self._opener(call)
        return await self._flight.alone(opener, self._parts.send.sender.stream_settlement(call))

    def _opener(self, call: Call) -> tuple[Opener, Keep]:
        """How ``call`` opens (on its fallbacks, if it has any) and what may keep its stream."""
        if call.fallbacks:
            return self._falling_back(call)
        opener = functools.partial(self._parts.send.dispatcher.send, call, stream=True)
        return opener, self._store

    async def _played_back(
        self, call: Call, key: bytes
    ) -> tuple[StreamReply | None, Looked | None]:
        """A stored stream of ``key``, else of a question that means the same; and the lookup."""
        stored = await self._parts.cache.stage.fresh_answer(key, call.max_age)
        if stored is not None:
            return replay(stored.chunks(), stored.upstream, call.api.stream_type, call.model), None
        if self._semantic is None:
            return None, None
        looked = await self._semantic.lookup(call)
        answer = looked.answer
        if answer is None:
            return None, looked
        reply = replay(
            answer.chunks(),
            answer.upstream,
            call.api.stream_type,
            call.model,
            similarity=looked.similarity,
        )
        return reply, looked

    def _keeper(
        self, call: Call, key: bytes, keep: Keep, looked: Looked | None
    ) -> Callable[[str, list[bytes]], Awaitable[None]] | None:
        """What keeps the stream once it ended; its question is remembered once it is kept."""
        if call.cache == "no-store":
            return None
        semantic = self._semantic

        async def store(upstream: str, chunks: list[bytes]) -> None:
            kept = await keep(call, key, upstream, chunks)
            if kept and looked is not None and semantic is not None:
                semantic.remember(looked, key, self._parts.cache.ttl.seconds)

        return store

    def _falling_back(self, call: Call) -> tuple[Opener, Keep]:
        """How a call with fallbacks opens, and keeps its stream only if its own model served it."""
        sender = self._parts.send.sender
        served: list[str] = []  # the model the opened exchange went as

        async def opener() -> Exchange:
            exchange = await sender.open_stream(call)
            served.append(exchange.model)
            return exchange

        async def keep(call: Call, key: bytes, upstream: str, chunks: list[bytes]) -> bool:
            if served == [call.model]:  # a fallback's stream is no answer of the key's model
                return await self._store(call, key, upstream, chunks)
            return False

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

    async def _store(self, call: Call, key: bytes, upstream: str, chunks: list[bytes]) -> bool:
        """Keep a streamed body that is complete and clean, as its chunks (replayed as a stream)."""
        if not call.api.stream_complete(chunks):  # truncated, or it carried an error event
            self._parts.metrics.counter(STREAMS_NOT_STORED).inc()
            return False
        answer = StoredAnswer(200, chunks, upstream, self._wall())
        cache = self._parts.cache
        await cache.stage.store(key, answer, cache.ttl.seconds, wait=False)
        return True
