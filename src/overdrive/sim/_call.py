"""One simulated call in flight: counted while it runs, its waits cut short by a hang-up."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from overdrive._asgi import ClientGone, Receive
from overdrive._clock import Clock
from overdrive.sim._capacity import Accelerator
from overdrive.sim._requests import ApiError
from overdrive.sim._stats import SimStats

__all__ = ["SimCall"]


class SimCall:
    """One upstream call in flight: counted in ``in_flight``; its simulated waits end
    early when the client hangs up or the app closes (``closing`` gives the
    future that is done then).
    """

    __slots__ = ("_accelerator", "_clock", "_closing", "_gone", "_receive", "_stats")

    def __init__(
        self,
        receive: Receive,
        stats: SimStats,
        clock: Clock,
        accelerator: Accelerator | None,
        closing: Callable[[], asyncio.Future[None]],
    ) -> None:
        self._receive = receive
        self._stats = stats
        self._clock = clock
        self._accelerator = accelerator
        self._closing = closing
        self._gone: asyncio.Task[None] | None = None

    def __enter__(self) -> SimCall:
        self._stats.enter()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._gone is not None:
            self._gone.cancel()
        self._stats.leave()

    async def pause(self, seconds: float, *, shared: bool = False) -> None:
        """Wait ``seconds`` of the app's clock; ``shared`` work on the accelerator, if
        there is one, takes longer while it is over capacity.

        Raises :class:`ClientGone` if the client leaves, and a 503
        :class:`ApiError` if the app closes meanwhile.
        """
        if seconds <= 0.0:
            return
        if self._gone is None:
            # Started lazily: zero-latency requests never pay for a watcher task.
            self._gone = asyncio.ensure_future(self._wait_disconnect())
        closing = self._closing()
        accelerator = self._accelerator
        wait = (
            accelerator.work(seconds)
            if shared and accelerator is not None
            else self._clock.sleep(seconds)
        )
        sleeper = asyncio.ensure_future(wait)
        try:
            await asyncio.wait((sleeper, self._gone, closing), return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()
        if self._gone.done():
            raise ClientGone
        if closing.done():
            raise ApiError(503, "The server is shutting down.", kind="server_error")

    async def _wait_disconnect(self) -> None:
        while (await self._receive())["type"] != "http.disconnect":
            pass

    def __repr__(self) -> str:
        watching = self._gone is not None and not self._gone.done()
        return f"SimCall(watching_disconnect={watching})"
