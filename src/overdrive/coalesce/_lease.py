"""Cross-process single flight: one process computes a cold key, the others wait for it.

The protocol, per key (``<ns>`` is the namespace)::

    od:<ns>:lease:<key>   SET NX PX lease_ttl: whoever sets it computes
    od:<ns>:done:<key>    pub/sub channel: the leader publishes once the result is stored

Every command names one key, so on a Redis Cluster each lease lives in its
own key's slot. The notice is a plain PUBLISH, which a cluster forwards to
every node, so the one subscribed connection (on whichever node) hears every
lease's notice. Sharded pub/sub (SPUBLISH) would spare the other nodes that
forwarding, but redis-py's cluster client reads sharded messages by polling
each node in turn, and a waiter here must sleep on its socket; one notice per
computed key is little to forward.

A caller first *subscribes* to the done channel and waits for Redis to confirm
it, and only then tries the lease and reads the result. Any publish after that
point reaches it, so a leader that finishes between a waiter's check and its
wait cannot be missed (no lost wake-up). Waiters sleep on an event, not a
polling loop; if no notice comes within ``lease_ttl`` (the leader died and its
lease expired) they try to take the lease themselves.

One pub/sub connection per :class:`RedisLease` serves all its waiters: each
channel is subscribed while someone waits on it, and every SUBSCRIBE is matched
to its own confirmation (replies arrive in command order).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar, cast

from redis.asyncio.client import PubSub

from .._clock import Clock, SystemClock
from .._errors import CacheError
from .._redis import (
    Breaker,
    close_idle,
    connect,
    forget_loop,
    namespace_prefix,
    safe_url,
)

__all__ = ["RedisLease"]

T = TypeVar("T")

# Releases the lease only if it is still ours (it may have expired and been
# taken over), then wakes the waiters either way.
_FINISH_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    redis.call('DEL', KEYS[1])
end
return redis.call('PUBLISH', ARGV[2], 'done')
"""


class _Unavailable(Exception):
    """Redis failed underneath the lease: the caller computes locally instead."""


class _Watch:
    """One waiter's interest in one channel: set when a notice (or a failure) arrives."""

    __slots__ = ("event", "failed")

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self.failed = False

    async def wait(self) -> None:
        """Until notified; raises ``_Unavailable`` if the pub/sub connection broke."""
        await self.event.wait()
        self.event.clear()
        if self.failed:
            raise _Unavailable("pub/sub connection lost")

    def __repr__(self) -> str:
        return f"_Watch(notified={self.event.is_set()}, failed={self.failed})"


class _Notifier:
    """Shares one pub/sub connection among every waiter of a :class:`RedisLease`."""

    __slots__ = (
        "_breaker",
        "_confirms",
        "_listener",
        "_lock",
        "_make_pubsub",
        "_pubsub",
        "_watches",
    )

    def __init__(self, make_pubsub: Callable[[], PubSub], breaker: Breaker) -> None:
        self._make_pubsub = make_pubsub
        self._breaker = breaker
        self._pubsub: PubSub | None = None
        self._listener: asyncio.Task[None] | None = None
        self._watches: dict[bytes, set[_Watch]] = {}
        # Per channel, one future per SUBSCRIBE sent, resolved by its confirmation.
        self._confirms: dict[bytes, deque[asyncio.Future[None]]] = {}
        self._lock = asyncio.Lock()

    @contextlib.asynccontextmanager
    async def watch(self, channel: bytes) -> AsyncIterator[_Watch]:
        """Subscribed to ``channel`` (confirmed by Redis) for the duration of the block."""
        watch = _Watch()
        try:
            await self._add(channel, watch)
            yield watch
        finally:
            await self._remove(channel, watch)

    async def _add(self, channel: bytes, watch: _Watch) -> None:
        # The lock keeps (UN)SUBSCRIBEs on the wire in the order the bookkeeping
        # changed, so a quick unsubscribe + resubscribe of one channel cannot
        # reach Redis reversed and leave it unsubscribed.
        async with self._lock:
            if channel in self._watches:
                pending = self._confirms.get(channel)
                confirmed = pending[-1] if pending else None  # None: confirmed already
            else:
                confirmed = self._expect_confirmation(channel)
                used = await self._send(lambda pubsub: pubsub.subscribe(channel))
                if used is not self._pubsub:  # the listener failed meanwhile
                    raise _Unavailable("pub/sub connection lost")
                self._watches[channel] = set()
            self._watches[channel].add(watch)
        if confirmed is not None:
            await self._await_confirmation(confirmed)

    def _expect_confirmation(self, channel: bytes) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._confirms.setdefault(channel, deque()).append(future)
        return future

    async def _await_confirmation(self, confirmed: asyncio.Future[None]) -> None:
        try:
            # Shielded: the future is shared by every waiter that joined meanwhile.
            await self._breaker.call(asyncio.shield(confirmed))
        except CacheError as exc:
            raise _Unavailable(str(exc)) from exc

    async def _remove(self, channel: bytes, watch: _Watch) -> None:
        async with self._lock:
            watches = self._watches.get(channel)
            if watches is None or watch not in watches:
                return  # never added, or a failure already cleared everything
            watches.discard(watch)
            if watches:
                return
            del self._watches[channel]
            # Best effort: if this fails the listener sees the broken connection too.
            with contextlib.suppress(_Unavailable):
                await self._send(lambda pubsub: pubsub.unsubscribe(channel))

    async def _send(self, command: Callable[[PubSub], Awaitable[Any]]) -> PubSub:
        """Send ``command`` on the shared connection (made on first use); returns it."""
        if self._pubsub is None:
            self._pubsub = self._make_pubsub()
        pubsub = self._pubsub
        try:
            await self._breaker.call(command(pubsub))
        except CacheError as exc:
            await self._fail(pubsub)
            raise _Unavailable(str(exc)) from exc
        if self._listener is None and pubsub is self._pubsub:
            self._listener = asyncio.create_task(self._listen(pubsub))
        return pubsub

    async def _listen(self, pubsub: PubSub) -> None:
        try:
            while True:
                # Blocks on the socket until Redis pushes something: no polling.
                message = await pubsub.get_message(timeout=None)
                if message is not None:
                    self._dispatch(message)
        except Exception as exc:  # whatever broke the connection, every waiter must hear of it
            self._breaker.trip(exc)
            await self._fail(pubsub)

    def _dispatch(self, message: dict[str, Any]) -> None:
        channel = message["channel"]
        if message["type"] == "subscribe":
            pending = self._confirms.get(channel)
            if pending:
                future = pending.popleft()
                if not pending:
                    del self._confirms[channel]
                if not future.done():
                    future.set_result(None)
        elif message["type"] == "message":
            for watch in self._watches.get(channel, ()):
                watch.event.set()

    async def _fail(self, pubsub: PubSub) -> None:
        """Wake everyone with the failure and drop the connection; the next waiter starts anew."""
        if pubsub is not self._pubsub:
            return  # a newer connection has replaced it already
        listener = self._listener
        self._pubsub, self._listener = None, None
        lost = _Unavailable("pub/sub connection lost")
        for futures in self._confirms.values():
            for future in futures:
                if not future.done():
                    future.set_exception(lost)
                    future.exception()  # mark retrieved: maybe nobody awaits this one
        for watches in self._watches.values():
            for watch in watches:
                watch.failed = True
                watch.event.set()
        self._confirms.clear()
        self._watches.clear()
        await _close(pubsub, listener)

    async def aclose(self) -> None:
        pubsub, listener = self._pubsub, self._listener
        self._pubsub, self._listener = None, None
        if pubsub is not None:
            await _close(pubsub, listener)

    def __repr__(self) -> str:
        waiting = sum(len(watches) for watches in self._watches.values())
        return f"_Notifier(channels={len(self._watches)}, waiting={waiting})"


async def _close(pubsub: PubSub, listener: asyncio.Task[None] | None) -> None:
    if listener is not None and listener is not asyncio.current_task():
        listener.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await listener
    with contextlib.suppress(Exception):  # closing a dead connection may fail; it is gone anyway
        # cast: PubSub.aclose is unannotated in some redis-py releases.
        await cast(Any, pubsub).aclose()


class RedisLease:
    """Runs ``compute`` for a key at most once across processes at a time.

    ``compute`` must store its result where ``read`` finds it (typically: fill
    the shared cache tier) before returning. Exceptions from ``compute`` and
    ``read`` propagate unchanged; if ``compute`` fails, waiters are woken and
    one of them takes over. If Redis is unavailable, ``run`` simply computes
    locally (fail open). Choose ``lease_ttl`` above the slowest compute: a lease
    that expires mid-compute lets a second process start.

    >>> async def demo(lease, tier, key):
    ...     async def compute() -> bytes:
    ...         value = await call_the_model()
    ...         await tier.set(key, make_entry(value))
    ...         return value
    ...     async def read() -> bytes | None:
    ...         entry = await tier.get(key)
    ...         return entry.value if entry else None
    ...     return await lease.run(key, compute, read)  # one process computes, all get it
    """

    __slots__ = (
        "_client",
        "_finish_script",
        "_notifier",
        "_prefix",
        "_url",
        "breaker",
        "fallbacks",
        "leads",
        "lease_ttl",
        "reads",
    )

    def __init__(
        self,
        url: str,
        *,
        namespace: str = "",
        lease_ttl: float = 30.0,
        timeout: float = 0.25,
        backoff: float = 1.0,
        clock: Clock | None = None,
    ) -> None:
        self._prefix = namespace_prefix(namespace)
        self._url = safe_url(url)
        self.lease_ttl = lease_ttl
        self.leads = 0  # runs that held the lease (and computed unless the value appeared)
        self.reads = 0  # runs answered by ``read`` after another process computed
        self.fallbacks = 0  # runs that computed locally because Redis failed
        self._client = connect(url, timeout)
        self._finish_script = self._client.register_script(_FINISH_SCRIPT)
        clock = clock or SystemClock()
        self.breaker = Breaker(
            "redis-lease", timeout=timeout, backoff=backoff, clock=clock, client=self._client
        )
        self._notifier = _Notifier(self._client.pubsub, self.breaker)

    async def run(
        self,
        key: bytes,
        compute: Callable[[], Awaitable[T]],
        read: Callable[[], Awaitable[T | None]],
    ) -> T:
        """The value for ``key``: computed here if we win the lease, else read after the winner."""
        if not self.breaker.skip():
            try:
                async with self._notifier.watch(self._prefix + b"done:" + key) as watch:
                    return await self._coordinate(key, watch, compute, read)
            except _Unavailable:
                pass
        self.fallbacks += 1
        return await compute()

    async def _coordinate(
        self,
        key: bytes,
        watch: _Watch,
        compute: Callable[[], Awaitable[T]],
        read: Callable[[], Awaitable[T | None]],
    ) -> T:
        token = secrets.token_hex(16)
        while True:
            if await self._acquire(key, token):
                self.leads += 1
                return await self._lead(key, token, compute, read)
            value = await read()
            if value is None:
                # No notice within lease_ttl: the leader died and its lease has
                # expired, so go round and try to take it.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.lease_ttl):
                        await watch.wait()
                value = await read()
            if value is not None:
                self.reads += 1
                return value

    async def _lead(
        self,
        key: bytes,
        token: str,
        compute: Callable[[], Awaitable[T]],
        read: Callable[[], Awaitable[T | None]],
    ) -> T:
        try:
            # A previous leader may have finished between our last read and our lease.
            value = await read()
            return value if value is not None else await compute()
        finally:
            await self._finish(key, token)

    async def _acquire(self, key: bytes, token: str) -> bool:
        lease_ms = int(self.lease_ttl * 1000)
        command = self._client.set(self._prefix + b"lease:" + key, token, nx=True, px=lease_ms)
        return bool(await self._redis(command))

    async def _finish(self, key: bytes, token: str) -> None:
        keys = [self._prefix + b"lease:" + key]
        args: list[bytes | str] = [token, self._prefix + b"done:" + key]
        # Our value is in hand: a failure here only costs waiters their lease_ttl wait.
        with contextlib.suppress(_Unavailable):
            await self._redis(self._finish_script(keys=keys, args=args))

    async def _redis(self, command: Awaitable[T]) -> T:
        try:
            return await self.breaker.call(command)
        except CacheError as exc:
            raise _Unavailable(str(exc)) from exc

    async def aclose(self) -> None:
        await self._notifier.aclose()
        await self._client.aclose()

    async def close_idle(self) -> None:
        """The event loop the listener and the connections run on is ending: close them there."""
        await self._notifier.aclose()
        self._notifier = _Notifier(self._client.pubsub, self.breaker)
        await close_idle(self._client)

    def forget_loop(self) -> None:
        """The event loop the connections and the listener ran on is gone: start afresh."""
        self.breaker.forget_loop()
        forget_loop(self._client)
        self._notifier = _Notifier(self._client.pubsub, self.breaker)

    def __repr__(self) -> str:
        return (
            f"RedisLease({self._url!r}, prefix={self._prefix!r}, lease_ttl={self.lease_ttl}, "
            f"leads={self.leads}, reads={self.reads}, fallbacks={self.fallbacks}, "
            f"{self._notifier!r}, {self.breaker!r})"
        )
