"""Redis, once: connecting, naming a server safely, and a circuit breaker.

Every part that shares state through Redis (the L2 cache tier, coalescing
leases, the shared rate limiter) uses these, so they connect, redact and back
off alike. redis-py is the optional extra ``overdrive[redis]``: this module
imports it, and nothing imports this module until a Redis part is built.

>>> safe_url("redis://app:s3cret@cache.internal:6379/0?password=s3cret")
'redis://cache.internal:6379/0'
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar, Literal, TypeVar

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as Disconnected
from redis.exceptions import RedisError

from ._clock import Clock
from ._errors import CacheError, ConfigError

__all__ = [
    "FAILURES",
    "SCHEMES",
    "Breaker",
    "Disconnected",
    "close_idle",
    "connect",
    "describe",
    "forget_loop",
    "namespace_prefix",
    "safe_url",
]

T = TypeVar("T")

# Failures worth backing off from: the server, the network or our own deadline.
FAILURES: tuple[type[Exception], ...] = (RedisError, OSError, TimeoutError)

SCHEMES = ("redis://", "rediss://", "unix://")

_MAX_CONNECTIONS = 64

# Shown instead of an address whose userinfo cannot be told from its query.
_WITHHELD = "<redacted>"

State = Literal["closed", "open", "half-open"]


def connect(url: str, timeout: float, *, field: str = "url") -> Redis:
    """A client on a bounded pool whose every wait gives up after ``timeout``.

    The pool blocks (up to ``timeout``) for a free connection instead of
    opening unboundedly many under a burst. redis-py's own retries are off:
    one failure should trip the breaker, not be multiplied by a retry loop
    while the caller waits. Nothing is dialled yet; a URL that cannot be
    parsed is a :class:`~overdrive.ConfigError` on ``field``, naming the URL
    without its secrets.
    """
    if not url.startswith(SCHEMES):
        raise ConfigError(
            field, f"expected a redis://, rediss:// or unix:// URL, got {safe_url(url)!r}"
        )
    try:
        pool = BlockingConnectionPool.from_url(
            url,
            max_connections=_MAX_CONNECTIONS,
            timeout=timeout,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
        )
    except ValueError as exc:  # redis-py's word for a port or option it cannot parse
        raise ConfigError(field, f"{exc} in {safe_url(url)!r}") from None
    client: Redis = Redis.from_pool(pool)  # the client owns the pool and closes it
    return client


def describe(client: Redis) -> str:
    """How to name the server of a client someone else made (it has no URL to redact)."""
    kwargs = client.connection_pool.connection_kwargs
    if "path" in kwargs:
        return f"unix://{kwargs['path']}"
    return f"redis://{kwargs.get('host', '?')}:{kwargs.get('port', '?')}"


def safe_url(url: str) -> str:
    """``url`` without user, password, query or fragment: fit for repr, logs and errors.

    It parses nothing that could fail, since a malformed URL is just what an
    error message must show. A host never holds an ``@``, so everything
    before the last one is userinfo, even when a password holds a raw ``/``.
    When an ``@`` comes after a ``?`` or ``#``, there is no telling whether
    that mark starts the query or sits inside a password, so the address is
    withheld rather than risk showing half a password.

    >>> safe_url("rediss://:p@ss/word@10.0.0.7:6380/2")
    'rediss://10.0.0.7:6380/2'
    >>> safe_url("redis://:pa?ss@host:6379/0")
    'redis://<redacted>'
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    marks = [at for at in (rest.find("?"), rest.find("#")) if at >= 0]
    cut = min(marks, default=len(rest))
    address, tail = rest[:cut], rest[cut:]
    if "@" in tail:
        address = _WITHHELD
    return f"{scheme}{sep}{address.rpartition('@')[2]}"


def namespace_prefix(namespace: str) -> bytes:
    """The key prefix of a tenant namespace: ``od:{namespace}:``."""
    if ":" in namespace:
        # ':' would let one namespace's keys spell another's (``a:tag`` vs ``a``).
        raise ConfigError("namespace", f"must not contain ':', got {namespace!r}")
    return f"od:{namespace}:".encode()


class Breaker:
    """Keeps callers off a failing Redis for ``backoff`` seconds, and counts what that cost.

    Closed, calls go to Redis. A failure (an error, or no answer within
    ``timeout``) opens it: for ``backoff`` seconds :meth:`skip` says so (and
    counts it) without touching the network. Then it is half-open: the next
    calls try Redis again; one failing opens it anew, one succeeding closes
    it. An *outage* lasts from the failure that opened a closed breaker to
    the success that closes it; ``on_outage`` and ``on_recovery`` hear of its
    start and end, e.g. to log once per outage instead of once per call.

    >>> from overdrive.testing import FakeClock
    >>> clock = FakeClock()
    >>> breaker = Breaker("redis", timeout=0.25, backoff=1.0, clock=clock)
    >>> breaker.trip(ConnectionError("refused"))
    >>> breaker.state, breaker.skip()
    ('open', True)
    >>> clock.advance(1.0)
    >>> breaker.state, breaker.skip()
    ('half-open', False)
    """

    __slots__ = (
        "_clock",
        "_down_until",
        "_on_outage",
        "_on_recovery",
        "backoff",
        "errors",
        "failing",
        "name",
        "outages",
        "skipped_while_down",
        "timeout",
    )

    # What :meth:`run` counts as Redis failing, and lets through after tripping.
    failures: ClassVar[tuple[type[Exception], ...]] = FAILURES

    def __init__(
        self,
        name: str,
        *,
        timeout: float,
        backoff: float,
        clock: Clock,
        on_outage: Callable[[BaseException], None] | None = None,
        on_recovery: Callable[[], None] | None = None,
    ) -> None:
        self.name = name
        self.timeout = timeout
        self.backoff = backoff
        self.errors = 0
        self.skipped_while_down = 0
        self.outages = 0
        self.failing = False  # from a failure until the next success
        self._clock = clock
        self._down_until = float("-inf")
        self._on_outage = on_outage
        self._on_recovery = on_recovery

    @property
    def down(self) -> bool:
        """True within ``backoff`` seconds of the last failure: calls are skipped."""
        return self._clock.now() < self._down_until

    @property
    def state(self) -> State:
        if self.down:
            return "open"
        return "half-open" if self.failing else "closed"

    def skip(self) -> bool:
        """True (and counted) if the breaker is open: do not even try."""
        if self.down:
            self.skipped_while_down += 1
            return True
        return False

    def trip(self, exc: BaseException) -> None:
        """Count a failure and open the breaker for ``backoff`` seconds."""
        self.errors += 1
        self._down_until = self._clock.now() + self.backoff
        if not self.failing:
            self.failing = True
            self.outages += 1
            if self._on_outage is not None:
                self._on_outage(exc)

    def succeeded(self) -> None:
        """A call went through: close the breaker, ending any outage."""
        if self.failing:
            self.failing = False
            if self._on_recovery is not None:
                self._on_recovery()

    async def run(self, awaitable: Awaitable[T]) -> T:
        """``awaitable`` within ``timeout``; a failure trips the breaker and propagates."""
        try:
            async with asyncio.timeout(self.timeout):
                result = await awaitable
        except self.failures as exc:
            self.trip(exc)
            raise
        self.succeeded()
        return result

    async def call(self, awaitable: Awaitable[T]) -> T:
        """As :meth:`run`, with any failure raised as :class:`~overdrive.CacheError`."""
        try:
            return await self.run(awaitable)
        except self.failures as exc:
            raise CacheError(self.name, f"{type(exc).__name__}: {exc}") from exc

    def __repr__(self) -> str:
        return (
            f"Breaker({self.name!r}, state={self.state!r}, errors={self.errors}, "
            f"skipped_while_down={self.skipped_while_down}, outages={self.outages})"
        )


async def close_idle(client: Redis) -> None:
    """Close ``client``'s pooled connections now, on the loop they belong to, which is ending."""
    await client.connection_pool.disconnect()


def forget_loop(client: Redis) -> None:
    """Drop ``client``'s pooled connections: the event loop they were made on is gone.

    They cannot be closed from another loop; new ones are dialled on the
    loop of the next command. A client whose loop still runs must not be
    reset (its callers would lose their connections mid-command).
    """
    pool: Any = client.connection_pool  # redis-py leaves reset() untyped
    pool.reset()
