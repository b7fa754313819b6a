"""The sync door's half: run a door's work on the engine's loop from a thread that has none.

A sync client (``openai.OpenAI``) calls its transport on its own thread. The
work runs on the engine's loop (``Pipeline.submit``: the loop it is bound to,
or a loop thread of its own) and the thread waits for the answer. A stream is
relayed one chunk at a time, each fetched on that loop: the relay never holds
more than the chunk on its way.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

from ._answer import Answer
from ._unknown import Passage, UnknownPaths, respond

if TYPE_CHECKING:
    from ..coalesce import StreamReply
    from ._pipeline import Pipeline

__all__ = ["SyncRelay", "respond_sync"]

T = TypeVar("T")


def respond_sync(engine: Pipeline, passage: Passage, unknown: UnknownPaths) -> Answer:
    """:func:`~overdrive.doors._unknown.respond`, waited for on the calling thread."""
    return wait(engine, lambda: respond(engine, passage, unknown))


def wait(engine: Pipeline, work: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run ``work()`` on the engine's loop and wait; once more if that loop shut down meanwhile.

    A loop that shuts down cancels what it runs; the second try runs where
    the engine is bound now (its own loop thread, if no other runs).
    """
    try:
        return engine.submit(work()).result()
    except concurrent.futures.CancelledError:
        return engine.submit(work()).result()


class SyncRelay:
    """A streamed reply's chunks for a sync reader, each fetched on the engine's loop."""

    __slots__ = ("_chunks", "_closed", "_engine", "_reply")

    def __init__(self, engine: Pipeline, reply: StreamReply) -> None:
        self._engine = engine
        self._reply = reply
        self._chunks = reply.__aiter__()  # runs only on the engine's loop (in _next)
        self._closed = False

    def __iter__(self) -> Iterator[bytes]:
        while (chunk := self._engine.submit(_next(self._chunks)).result()) is not None:
            yield chunk

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._engine.submit(self._reply.aclose()).result()


async def _next(chunks: AsyncIterator[bytes]) -> bytes | None:
    return await anext(chunks, None)
