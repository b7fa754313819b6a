"""The engine's event loop: where its loop-bound state lives, and how calls reach it.

An engine's futures, queues, pooled connections and background tasks belong
to one event loop, its *home*: the first loop that calls it. A call from that
loop costs one identity compare (``get_running_loop() is home.loop``). A call
from any other loop takes the slow path here:

* the home loop is gone (closed, or stopped and not running): the calling loop
  becomes home, and the engine drops what the old one held (see
  :meth:`HomeLoop.on_rebind`); nothing waits on a loop that will never run;
* the home loop is alive in another thread: the call runs there
  (``run_coroutine_threadsafe``) and the caller awaits it on its own loop;
  a stream's chunks cross one at a time.

Sync callers (the sync door) have no loop of their own: :meth:`HomeLoop.submit`
runs their work on the home loop when one is alive in another thread, else on
a loop thread the engine owns, started on first use and stopped by
``od.close()`` / ``aclose()`` or at interpreter exit.

When a home loop shuts down the way ``asyncio.run`` (and ``asyncio.Runner``)
does, a watcher (an async generator the loop closes in
``shutdown_asyncgens``) runs the engine's loop-end hooks on it while it still
runs: idle pooled connections are closed there, cleanly, so no socket
outlives its loop.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import threading
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from ._errors import EngineLoopError

__all__ = ["EngineLoopError", "HomeGone", "HomeLoop"]

T = TypeVar("T")

# How long interpreter exit waits for the owned loop to close the engine.
_EXIT_TIMEOUT_S = 5.0


class HomeLoop:
    """The loop an engine's state is bound to, moved when it dies, reached from elsewhere.

    >>> home = HomeLoop()
    >>> async def where() -> bool:
    ...     await home.arrive()
    ...     return home.loop is asyncio.get_running_loop()
    >>> asyncio.run(where()), asyncio.run(where())  # a second loop: home moves to it
    (True, True)
    """

    __slots__ = (
        "__weakref__",
        "_arrive_hooks",
        "_end_hooks",
        "_lock",
        "_moving",
        "_owned",
        "_rebind_hooks",
        "_watchers",
        "closer",
        "loop",
    )

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()
        self._rebind_hooks: list[Callable[[], Awaitable[None]]] = []
        self._end_hooks: list[Callable[[], Awaitable[None]]] = []
        self._arrive_hooks: list[Callable[[], None]] = []
        # One watcher per loop it watches: the loop holds it weakly, so do we, strongly.
        self._watchers: dict[asyncio.AbstractEventLoop, AsyncIterator[None]] = {}
        self._owned: _LoopThread | None = None
        # Set on the new loop while home moves to it (the rebind hooks run).
        self._moving: asyncio.Future[None] | None = None
        # Closes the engine on its own loop thread before interpreter exit stops it.
        self.closer: Callable[[], Coroutine[Any, Any, None]] | None = None

    def on_rebind(self, hook: Callable[[], Awaitable[None]]) -> None:
        """Await ``hook`` on the new loop when home moves to it off a dead loop."""
        self._rebind_hooks.append(hook)

    def on_arrive(self, hook: Callable[[], None]) -> None:
        """Call ``hook`` on each loop home settles on, the first one too (to start tasks there)."""
        self._arrive_hooks.append(hook)

    def on_loop_end(self, hook: Callable[[], Awaitable[None]]) -> None:
        """Await ``hook`` on the home loop as it shuts down (``asyncio.run`` ending)."""
        self._end_hooks.append(hook)

    # -- async callers ---------------------------------------------------------

    async def arrive(self) -> bool:
        """Make the running loop home if home is gone: True to run here, False to forward.

        Called only off the fast path (the running loop is not ``self.loop``).
        While home moves, calls on the new loop wait for the move to finish
        and calls on other loops are forwarded to it.
        """
        loop = asyncio.get_running_loop()
        with self._lock:
            old, moving = self.loop, self._moving
            if old is loop:
                return True
            if moving is not None or (old is not None and _alive(old)):
                wait = moving if moving is not None and moving.get_loop() is loop else None
                if wait is None:
                    return False
            else:
                wait, moving = None, loop.create_future()
                self._moving = moving
        if wait is not None:
            await asyncio.shield(wait)
            return True
        assert moving is not None
        try:
            if old is not None:
                for hook in self._rebind_hooks:
                    await hook()
            await self._watch(loop)
        finally:
            with self._lock:
                self.loop, self._moving = loop, None
            moving.set_result(None)
        for arrived in self._arrive_hooks:
            arrived()
        return True

    def _target(self) -> asyncio.AbstractEventLoop | None:
        """Where a call from elsewhere goes: home, or the loop home is moving to."""
        moving = self._moving
        return self.loop if moving is None else moving.get_loop()

    async def elsewhere(self, work: Coroutine[Any, Any, T]) -> T:
        """Run ``work`` on the (live) home loop in another thread; await it here."""
        home = self._target()
        try:
            assert home is not None
            future = asyncio.run_coroutine_threadsafe(work, home)
        except RuntimeError:  # home closed meanwhile: the caller comes back through arrive()
            work.close()
            raise HomeGone from None
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # our caller was cancelled: the wrapped future took the home task down too
            raise HomeGone from None  # the home loop shut down and cancelled it

    async def forward(self, again: Callable[[], Coroutine[Any, Any, T]]) -> T:
        """``again()`` on the home loop in another thread; here if that loop went away."""
        try:
            return await self.elsewhere(again())
        except HomeGone:
            return await again()

    # -- sync callers ----------------------------------------------------------

    def submit(self, work: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Run ``work`` on the home loop if it runs in another thread, else on the engine's own.

        From inside the home loop's own thread this would deadlock: it raises
        :class:`EngineLoopError` at once instead.
        """
        home = self._target()
        if home is not None and home.is_running():
            if _running_here() is home:
                work.close()
                raise EngineLoopError(
                    "a sync overdrive client was called from inside the event loop the engine "
                    "runs on, which would block it forever; use the async client "
                    "(od.http_client()) there, or call the sync one from a thread "
                    "(asyncio.to_thread)"
                )
            try:
                return asyncio.run_coroutine_threadsafe(work, home)
            except RuntimeError:
                pass  # closed meanwhile: run on our own loop
        return asyncio.run_coroutine_threadsafe(work, self._own_loop())

    def _own_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._owned is None or not self._owned.alive:
                self._owned = _LoopThread(weakref.ref(self))
            return self._owned.loop

    @property
    def owned(self) -> asyncio.AbstractEventLoop | None:
        """The loop thread the engine started for sync callers, while it runs."""
        owned = self._owned
        return owned.loop if owned is not None and owned.alive else None

    def stop_owned(self) -> None:
        """Stop the engine's own loop thread, if it runs (after the engine was closed on it)."""
        with self._lock:
            owned, self._owned = self._owned, None
        if owned is not None:
            owned.stop()

    # -- the watcher -----------------------------------------------------------

    async def _watch(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start a watcher the loop will close at its shutdown (see the module's docstring)."""
        if loop in self._watchers:
            return
        for gone in [seen for seen in self._watchers if seen.is_closed()]:
            del self._watchers[gone]
        watcher = self._watchers[loop] = self._watcher(loop)
        await anext(watcher)  # runs to its first yield: now the loop knows it

    async def _watcher(self, loop: asyncio.AbstractEventLoop) -> AsyncIterator[None]:
        try:
            yield
        finally:
            if self.loop is loop:
                for hook in self._end_hooks:
                    # A hook that fails must not keep the loop from closing.
                    with contextlib.suppress(Exception):
                        await hook()

    def __repr__(self) -> str:
        state = "unbound" if self.loop is None else "closed" if self.loop.is_closed() else "bound"
        owned = ", owning a loop thread" if self.owned is not None else ""
        return f"HomeLoop({state}{owned})"


class HomeGone(Exception):
    """The home loop went away while a call was on its way there: call again (home moves)."""


def _alive(loop: asyncio.AbstractEventLoop) -> bool:
    return not loop.is_closed() and loop.is_running()


def _running_here() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


class _LoopThread:
    """A daemon thread running one event loop for the engine's sync callers."""

    __slots__ = ("_thread", "loop")

    def __init__(self, home: weakref.ref[HomeLoop]) -> None:
        self.loop = asyncio.new_event_loop()
        started = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(started,), name="overdrive-loop", daemon=True
        )
        self._thread.start()
        started.wait()
        atexit.register(_stop_at_exit, home)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive() and not self.loop.is_closed()

    def _run(self, started: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(started.set)
        try:
            self.loop.run_forever()
        finally:
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.close()

    def stop(self) -> None:
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        if threading.current_thread() is not self._thread:
            self._thread.join()


def _stop_at_exit(home: weakref.ref[HomeLoop]) -> None:
    found = home()
    owned = found.owned if found is not None else None
    if found is None or owned is None:
        return
    if found.closer is not None:
        closing = asyncio.run_coroutine_threadsafe(found.closer(), owned)
        try:
            closing.result(_EXIT_TIMEOUT_S)
        except Exception:  # exiting anyway: what could not close in time is the OS's now
            closing.cancel()
    found.stop_owned()
