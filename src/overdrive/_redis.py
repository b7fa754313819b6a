"""Redis, once: connecting, naming a server safely, key slots, a gate and a circuit breaker.

Every part that shares state through Redis (the L2 cache tier, coalescing
leases, the shared rate limiter, the semantic log) uses these, so they
connect, redact and back off alike. redis-py is the optional extra
``overdrive[redis]``: this module imports it, and nothing imports this module
until a Redis part is built.

A Redis Cluster is named by its scheme: ``redis+cluster://host:port[,host:port...]``
(``rediss+cluster://`` for TLS); any of its nodes will do, the client finds the
rest. Every multi-key command the parts send (a script, a transaction) keeps
its keys in one hash slot through a ``{...}`` hash tag, which a single server
ignores, so one key layout serves both.

>>> safe_url("redis://app:s3cret@cache.internal:6379/0?password=s3cret")
'redis://cache.internal:6379/0'
>>> safe_url("redis+cluster://:s3cret@10.0.0.1:7000,10.0.0.2:7000")
'redis+cluster://10.0.0.1:7000,10.0.0.2:7000'
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, ClassVar, Literal, TypeAlias, TypeVar, cast
from urllib.parse import urlsplit, urlunsplit

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import SSLConnection, parse_url
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as Disconnected
from redis.exceptions import (
    RedisClusterException,
    RedisClusterUnreachableError,
    RedisError,
    SlotNotCoveredError,
)

from ._clock import Clock
from ._errors import CacheError, ConfigError

__all__ = [
    "CLUSTER_SCHEMES",
    "FAILURES",
    "SCHEMES",
    "Breaker",
    "Client",
    "Disconnected",
    "ScanTarget",
    "close_idle",
    "connect",
    "describe",
    "forget_loop",
    "namespace_prefix",
    "safe_url",
    "scan_page",
    "scan_targets",
]

T = TypeVar("T")

# Either kind of client: the parts send the same commands to both.
Client: TypeAlias = Redis | RedisCluster
# Where a SCAN runs: a cluster's node, or None for the one server.
ScanTarget: TypeAlias = ClusterNode | None

# Failures worth backing off from: the server, the network or our own deadline,
# and a cluster none of whose nodes answer, or whose slots are not all served
# (redis-py's cluster exceptions are no RedisError; its others name our bugs).
FAILURES: tuple[type[Exception], ...] = (
    RedisError,
    OSError,
    TimeoutError,
    RedisClusterUnreachableError,
    SlotNotCoveredError,
)

CLUSTER_SCHEMES = ("redis+cluster://", "rediss+cluster://")
SCHEMES = ("redis://", "rediss://", "unix://", *CLUSTER_SCHEMES)

# Connections per server (per node of a cluster), and commands in flight per breaker.
_MAX_CONNECTIONS = 64

# The deadline of a cluster client's first contact (see Breaker).
DISCOVERY_TIMEOUT = 2.0

# Shown instead of an address whose userinfo cannot be told from its query.
_WITHHELD = "<redacted>"

State = Literal["closed", "open", "half-open"]


def connect(url: str, timeout: float, *, field: str = "url") -> Client:
    """A client on bounded connections whose every wait gives up after ``timeout``.

    A single server's pool blocks (up to ``timeout``) for a free connection
    instead of opening unboundedly many under a burst; a cluster client has
    ``_MAX_CONNECTIONS`` per node, and the :class:`Breaker` in front of every
    command keeps fewer than that in flight. redis-py's own retries are off:
    one failure should trip the breaker, not be multiplied by a retry loop
    while the caller waits. Nothing is dialled yet; a URL that cannot be
    parsed is a :class:`~overdrive.ConfigError` on ``field``, naming the URL
    without its secrets.
    """
    if not url.startswith(SCHEMES):
        expected = "a redis://, rediss://, unix://, redis+cluster:// or rediss+cluster:// URL"
        raise ConfigError(field, f"expected {expected}, got {safe_url(url)!r}")
    try:
        if url.startswith(CLUSTER_SCHEMES):
            return _connect_cluster(url, timeout)
        pool = BlockingConnectionPool.from_url(
            url,
            max_connections=_MAX_CONNECTIONS,
            timeout=timeout,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
        )
    # redis-py's words for an option it cannot parse; TypeError: one a cluster does not take.
    except (ValueError, TypeError, RedisClusterException) as exc:
        raise ConfigError(field, f"{exc} in {safe_url(url)!r}") from None
    client: Redis = Redis.from_pool(pool)  # the client owns the pool and closes it
    return client


def _connect_cluster(url: str, timeout: float) -> RedisCluster:
    """A cluster client seeded with every node the URL names (raises ValueError on a bad one)."""
    scheme, _, rest = url.partition("+cluster://")
    parts = urlsplit(f"{scheme}://{rest}")
    userinfo, at, hosts = parts.netloc.rpartition("@")
    addresses = [_address(host) for host in hosts.split(",")]
    # Options (user, password, TLS, query) are read as redis-py reads a one-host URL.
    first = f"{userinfo}{at}{hosts.split(',')[0]}"
    options: dict[str, Any] = dict(
        parse_url(urlunsplit((scheme, first, parts.path, parts.query, "")))
    )
    for name in ("host", "port"):
        options.pop(name, None)
    if options.pop("connection_class", None) is SSLConnection:
        options["ssl"] = True
    return RedisCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in addresses],
        # One more than the gated commands can hold: room for a lease's pub/sub connection.
        max_connections=_MAX_CONNECTIONS + 1,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
        **options,
    )


def _address(host: str) -> tuple[str, int]:
    """``host[:port]`` (``[v6]:port`` too) as a pair; ValueError if it names no host."""
    parts = urlsplit(f"//{host}")
    if not parts.hostname:
        raise ValueError(f"no host in {host!r}")
    return parts.hostname, parts.port or 6379


def _discovery(client: RedisCluster) -> Coroutine[Any, Any, object] | None:
    """What a cluster client must do before its next command: learn the cluster (None: nothing)."""
    return client.initialize() if client.get_default_node() is None else None


def describe(client: Client) -> str:
    """How to name the server of a client someone else made (it has no URL to redact)."""
    if isinstance(client, RedisCluster):
        nodes = client.nodes_manager.startup_nodes or client.nodes_manager.nodes_cache
        return "redis+cluster://" + ",".join(map(_node_address, nodes.values()))
    kwargs = client.connection_pool.connection_kwargs
    if "path" in kwargs:
        return f"unix://{kwargs['path']}"
    return f"redis://{kwargs.get('host', '?')}:{kwargs.get('port', '?')}"


def _node_address(node: ClusterNode) -> str:
    host = f"[{node.host}]" if ":" in node.host else node.host  # IPv6, as a URL spells it
    return f"{host}:{node.port}"


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
    """The key prefix of a tenant namespace: ``od:<namespace>:``."""
    if any(mark in namespace for mark in ":{}"):
        # ':' would let one namespace's keys spell another's (``a:tag`` vs ``a``);
        # a brace would start the cluster hash tag before the key's own.
        raise ConfigError("namespace", f"must not contain ':', '{{' or '}}', got {namespace!r}")
    return f"od:{namespace}:".encode()


async def scan_targets(client: Client) -> list[ScanTarget]:
    """Where SCAN must run to see every key: each primary of a cluster, or the one server."""
    if isinstance(client, RedisCluster):
        await client.initialize()  # the primaries are known once the client has met them
        return list(client.get_primaries())
    return [None]


async def scan_page(
    client: Client, target: ScanTarget, cursor: int, match: bytes, count: int
) -> tuple[int, list[bytes]]:
    """One SCAN page of ``target``'s keys (see :func:`scan_targets`) and the next cursor."""
    if isinstance(client, RedisCluster) and target is not None:
        reply: Any = await client.scan(cursor, match=match, count=count, target_nodes=target)
        # A cluster answers with each node's cursor by name (redis-py's types say otherwise).
        cursors, keys = cast("tuple[dict[str, int], list[bytes]]", reply)
        return int(cursors[target.name]), keys
    next_cursor, page = await client.scan(cursor, match=match, count=count)
    return int(next_cursor), cast("list[bytes]", page)  # decode_responses is off: bytes


class Breaker:
    """Keeps callers off a failing Redis for ``backoff`` seconds, and counts what that cost.

    Closed, calls go to Redis. A failure (an error, or no answer within
    ``timeout``) opens it: for ``backoff`` seconds :meth:`skip` says so (and
    counts it) without touching the network. Then it is half-open: the next
    calls try Redis again; one failing opens it anew, one succeeding closes
    it. An *outage* lasts from the failure that opened a closed breaker to
    the success that closes it; ``on_outage`` and ``on_recovery`` hear of its
    start and end, e.g. to log once per outage instead of once per call.

    Given the ``client`` it guards, a cluster client meets its cluster before
    its first command (and again after its connections were closed): asking
    for the slots and the command table takes ~100 ms, more than a command's
    deadline, so it has one of its own (:data:`DISCOVERY_TIMEOUT`).

    At most ``_MAX_CONNECTIONS`` calls run at once; the others wait their
    turn within their ``timeout``. A single server's pool would make them
    wait the same way, but a cluster client refuses at once when a node's
    connections are all busy, which must not count as Redis failing.

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
        "_cluster",
        "_down_until",
        "_on_outage",
        "_on_recovery",
        "_slots",
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
        client: Client | None = None,
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
        self._slots = asyncio.Semaphore(_MAX_CONNECTIONS)
        self._cluster = client if isinstance(client, RedisCluster) else None

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
            if self._cluster is not None:
                await self._meet(self._cluster, awaitable)
            async with asyncio.timeout(self.timeout):
                result = await self._gated(awaitable)
        except self.failures as exc:
            self.trip(exc)
            raise
        self.succeeded()
        return result

    async def _meet(self, client: RedisCluster, waiting: Awaitable[Any]) -> None:
        """The cluster learnt, if the client does not know it, under a deadline of its own."""
        first = _discovery(client)
        if first is None:
            return
        try:
            async with asyncio.timeout(DISCOVERY_TIMEOUT):
                await self._gated(first)
        except BaseException:
            _never_run(waiting)
            raise

    async def _gated(self, awaitable: Awaitable[T]) -> T:
        try:
            await self._slots.acquire()
        except BaseException:
            _never_run(awaitable)
            raise
        try:
            return await awaitable
        finally:
            self._slots.release()

    async def call(self, awaitable: Awaitable[T]) -> T:
        """As :meth:`run`, with any failure raised as :class:`~overdrive.CacheError`."""
        try:
            return await self.run(awaitable)
        except self.failures as exc:
            raise CacheError(self.name, f"{type(exc).__name__}: {exc}") from exc

    def forget_loop(self) -> None:
        """The event loop the waiting calls ran on is gone: none of them will take a turn."""
        self._slots = asyncio.Semaphore(_MAX_CONNECTIONS)

    def __repr__(self) -> str:
        return (
            f"Breaker({self.name!r}, state={self.state!r}, errors={self.errors}, "
            f"skipped_while_down={self.skipped_while_down}, outages={self.outages})"
        )


def _never_run(awaitable: Awaitable[Any]) -> None:
    if asyncio.iscoroutine(awaitable):
        awaitable.close()  # it never ran: say so, instead of "never awaited"


async def close_idle(client: Client) -> None:
    """Close ``client``'s pooled connections now, on the loop they belong to, which is ending."""
    if isinstance(client, RedisCluster):
        await client.aclose()  # it finds the cluster again on its next command
        return
    await client.connection_pool.disconnect()


def forget_loop(client: Client) -> None:
    """Drop ``client``'s pooled connections: the event loop they were made on is gone.

    They cannot be closed from another loop; new ones are dialled on the
    loop of the next command. A client whose loop still runs must not be
    reset (its callers would lose their connections mid-command).
    """
    if isinstance(client, RedisCluster):
        _forget_nodes(client)
        return
    pool: Any = client.connection_pool  # redis-py leaves reset() untyped
    pool.reset()


def _forget_nodes(client: RedisCluster) -> None:
    # redis-py has no reset for a cluster node's connections (closing them
    # needs their dead loop), so its two lists are emptied here: the next
    # command on a node dials afresh.
    manager = client.nodes_manager
    for node in (*manager.nodes_cache.values(), *manager.startup_nodes.values()):
        node._connections.clear()
        node._free.clear()
