"""The live feed: a snapshot as a server-sent event every ``interval`` seconds.

A :class:`LiveFeed` is the streamed body of ``GET /dashboard/live``. Every
door relays it as it relays a streamed model answer (iterate, then
``aclose``), so it is a :class:`~overdrive.coalesce.StreamReply`: the relays
are typed to that class. :class:`LiveClients` bounds how many feeds run at once;
each one reads the whole registry per tick, so a crowd of tabs would cost the
engine more than it serves.

>>> clients = LiveClients(1)
>>> clients.acquire(), clients.acquire()
(True, False)
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from .._json import dumps
from ..coalesce import StreamReply

__all__ = ["MAX_INTERVAL", "MIN_INTERVAL", "LiveClients", "LiveFeed", "sse_frame"]

MIN_INTERVAL = 0.25
MAX_INTERVAL = 60.0
# How long EventSource waits before it reconnects after the feed ends or breaks.
_RETRY_MS = 2000


def sse_frame(event: str, data: Any) -> bytes:
    """One server-sent event: ``event: <event>`` and the JSON of ``data`` on one line."""
    return b"event: %b\ndata: %b\n\n" % (event.encode(), dumps(data))


class LiveClients:
    """At most ``limit`` live feeds at once: a slot is taken per feed and given back at its end."""

    __slots__ = ("active", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.active = 0

    def acquire(self) -> bool:
        if self.active >= self.limit:
            return False
        self.active += 1
        return True

    def release(self) -> None:
        self.active = max(0, self.active - 1)

    def __repr__(self) -> str:
        return f"LiveClients({self.active}/{self.limit})"


class LiveFeed(StreamReply):
    """Snapshots as SSE frames until the client leaves; holds a :class:`LiveClients` slot.

    ``read`` builds one snapshot; ``wait`` waits ``interval`` seconds between
    two (the engine clock's ``sleep``, so a test steps a fake clock instead).
    ``ended`` is asked after each wait: True ends the feed (a gateway draining
    must not wait forever on a stream that never ends by itself).
    """

    __slots__ = ("_clients", "_done", "_ended", "_interval", "_read", "_wait")

    def __init__(
        self,
        read: Callable[[], Any],
        wait: Callable[[float], Awaitable[None]],
        interval: float,
        clients: LiveClients,
        ended: Callable[[], bool] = lambda: False,
    ) -> None:
        # The fields a relay or an access log may read of any streamed reply.
        self.status = 200
        self.headers = {"content-type": "text/event-stream"}
        self.upstream = self.model = ""
        self.source = "dashboard"
        self.similarity = None
        self.queued_s = 0.0
        self._stored: list[bytes] = []
        self._reader = None
        self._read, self._wait, self._interval = read, wait, interval
        self._clients, self._ended = clients, ended
        self._done = False

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._frames()

    async def _frames(self) -> AsyncIterator[bytes]:
        try:
            yield b"retry: %d\n\n" % _RETRY_MS
            while not self._done:
                yield sse_frame("snapshot", self._read())
                await self._wait(self._interval)
                if self._ended():
                    return
        finally:
            self._release()

    async def aclose(self) -> None:
        self._release()

    def _release(self) -> None:
        if not self._done:  # once: the relay's aclose and the generator's end both come here
            self._done = True
            self._clients.release()

    def __repr__(self) -> str:
        state = "closed" if self._done else "live"
        return f"LiveFeed({state}, every {self._interval:g}s, {self._clients!r})"
