"""Pacing shared through Redis: N processes hold one limit exactly.

The same GCRA as :class:`~overdrive.flow.LocalLimiter`, with its state in
Redis and every decision made by one Lua script, so the processes sharing a
limiter never race each other. Layout (``ns`` is the namespace)::

    {ns}:limit:{name}:req    hash: tat (seconds, Redis's clock), interval (s per unit)
    {ns}:limit:{name}:tok    the same for tokens
    {ns}:limit:{name}:hold   the moment the upstream's hold ends

The braces around ``name`` are a cluster hash tag: one limiter's keys sit in
one slot, which a multi-key script needs, and each limiter in a slot of its
own, so the limiters of a Redis Cluster (``redis+cluster://`` URLs) spread
over its nodes. Time is Redis's own (``TIME``), so
processes on hosts with skewed clocks still share one timeline. Each key
expires a second after it stops mattering (its TAT plus the burst), so an
idle limiter leaves nothing behind.

The spec (rpm, tpm, burst) travels with every call rather than living in
Redis, so each process enforces its own configured spec: processes sharing a
``name`` should be configured alike. A TAT remembers the interval it was
booked at; booked at another rate (a spec changed, here or in a process
configured differently), its units carry over at the caller's rate, as
:meth:`LocalLimiter.set_spec <overdrive.flow.LocalLimiter.set_spec>` does.

If Redis fails, the limiter paces with a :class:`~overdrive.flow.LocalLimiter`
of the same spec for ``backoff`` seconds, then tries Redis again. During an
outage each process holds the limit on its own (N processes may send up to N
times the rate); refusing every call instead would stop the service whenever
Redis does. One warning is logged per outage, and outages are counted.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from .._clock import Clock, SystemClock
from .._errors import ConfigError
from ._limiter import Limiter, LimitSpec
from ._ratelimit import LocalLimiter

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.asyncio.cluster import RedisCluster
    from redis.commands.core import AsyncScript

__all__ = ["RedisLimiter"]

_log = logging.getLogger(__name__)

# The head of every script. Time is Redis's (scripts are replicated by their
# effects, the default since Redis 5, so reading TIME is allowed). The scripts
# reason in seconds ahead of now: small numbers keep the sums exact, so a cost
# that exactly fills an empty bucket fits instead of missing by a rounding.
# A TAT is stored as epoch seconds, whose last bit is ~2.4e-7 s: waits up to
# a microsecond (TIME's resolution) are rounding, not waits. Numbers travel
# as strings: Redis truncates a Lua number reply to an integer, and %.17g
# round-trips a double exactly.
_PRELUDE = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local EPSILON = 1e-6

-- Seconds booked ahead of now (negative: idle since) at `interval` s per unit.
-- Units booked at another interval carry over at this one. No key: none booked.
local function booked(key, interval)
    local stored = redis.call('HMGET', key, 'tat', 'interval')
    local tat, was = tonumber(stored[1]), tonumber(stored[2])
    if not tat then
        return 0
    end
    if was and was ~= interval then
        return math.max(tat - now, 0) / was * interval
    end
    return tat - now
end

-- Books a dimension `ahead` seconds from now; the key lingers `linger` s more.
local function book(key, ahead, interval, linger)
    local tat, per_unit = string.format('%.17g', now + ahead), string.format('%.17g', interval)
    redis.call('HSET', key, 'tat', tat, 'interval', per_unit)
    redis.call('PEXPIRE', key, math.ceil((ahead + linger) * 1000))
end
"""

# KEYS: req, tok, hold. ARGV: rpm, tpm (0: unlimited), burst, requests, tokens.
# Books both dimensions or neither; returns the wait in seconds ('0': booked).
_ACQUIRE = (
    _PRELUDE
    + """
local burst = tonumber(ARGV[3])
local held_until = tonumber(redis.call('GET', KEYS[3]))
local wait = held_until and held_until - now or -math.huge
local plan = {}
for i = 1, 2 do
    local rate, cost = tonumber(ARGV[i]), tonumber(ARGV[i + 3])
    if rate > 0 and cost > 0 then
        local interval = 60 / rate
        local tau = math.max(burst, interval)
        local ahead = math.max(booked(KEYS[i], interval), 0) + cost * interval
        -- A cost larger than the burst goes once the bucket is full.
        local needs = ahead - math.max(tau, cost * interval)
        if needs > EPSILON then
            wait = math.max(wait, needs)
        end
        plan[i] = {ahead, interval, tau}
    end
end
if wait > 0 then
    return string.format('%.17g', wait)
end
for i, step in pairs(plan) do
    book(KEYS[i], step[1], step[2], step[3] + 1)
end
return '0'
"""
)

# KEYS: tok. ARGV: tpm, burst, tokens (negative: give back).
_ADJUST = (
    _PRELUDE
    + """
local interval = 60 / tonumber(ARGV[1])
local ahead = math.max(booked(KEYS[1], interval) + tonumber(ARGV[3]) * interval, 0)
book(KEYS[1], ahead, interval, math.max(tonumber(ARGV[2]), interval) + 1)
return '0'
"""
)

# KEYS: req, tok. ARGV: rpm, tpm, burst. Re-paces what is booked at the new
# rates now, not at the next call, so the time in between drains at the new
# rate too. Running it twice changes nothing: every process may run it.
_RESPEC = (
    _PRELUDE
    + """
for i = 1, 2 do
    local rate = tonumber(ARGV[i])
    if rate > 0 and redis.call('EXISTS', KEYS[i]) == 1 then
        local interval = 60 / rate
        local ahead = math.max(booked(KEYS[i], interval), 0)
        book(KEYS[i], ahead, interval, math.max(tonumber(ARGV[3]), interval) + 1)
    end
end
return '0'
"""
)

# KEYS: hold. ARGV: seconds. Only ever pushes the end of the hold later.
_HOLD = (
    _PRELUDE
    + """
local held_until = tonumber(redis.call('GET', KEYS[1])) or now
local held = math.max(held_until - now, tonumber(ARGV[1]))
if held > 0 then
    local ttl_ms = math.ceil((held + 1) * 1000)
    redis.call('SET', KEYS[1], string.format('%.17g', now + held), 'PX', ttl_ms)
end
return '0'
"""
)


class RedisLimiter:
    """A :class:`~overdrive.flow.Limiter` whose limit is shared by every process using ``name``.

    Give either ``url`` (the limiter opens a bounded connection pool and closes
    it in :meth:`aclose`) or ``client`` (yours, a ``Redis`` or a ``RedisCluster``:
    left open). Every Redis call is
    bounded by ``timeout``; a failure switches to local pacing for ``backoff``
    seconds (see the module docstring).

    >>> import asyncio
    >>> async def demo(url):
    ...     spec = LimitSpec(rpm=600, tpm=None, burst=0.5)
    ...     limiter = RedisLimiter(spec, name="openai/gpt-4o", url=url)
    ...     waits = [await limiter.try_acquire(1, 0) for _ in range(7)]
    ...     await limiter.aclose()
    ...     return [round(wait, 1) for wait in waits]
    >>> asyncio.run(demo("redis://127.0.0.1:6379/0"))  # doctest: +SKIP
    [0.0, 0.0, 0.0, 0.0, 0.0, 0.1, 0.1]
    """

    __slots__ = (
        "_acquire",
        "_adjust",
        "_breaker",
        "_client",
        "_hold",
        "_keys",
        "_local",
        "_owns_client",
        "_respec",
        "_stale",
        "_url",
        "name",
        "spec",
    )

    def __init__(
        self,
        spec: LimitSpec,
        *,
        name: str,
        url: str | None = None,
        client: Redis | RedisCluster | None = None,
        namespace: str = "overdrive",
        timeout: float = 0.25,
        backoff: float = 1.0,
        clock: Clock | None = None,
    ) -> None:
        try:
            from .. import _redis  # imports redis-py: only once a limiter is built
        except ImportError as exc:
            raise ImportError(
                f"RedisLimiter needs redis-py: pip install 'overdrive[redis]' ({exc})"
            ) from None
        _check_name(name)
        if "{" in namespace or "}" in namespace:  # it would come before the name's hash tag
            raise ConfigError("namespace", f"expected no braces, got {namespace!r}")
        self.spec = spec
        self.name = name
        clock = clock or SystemClock()
        self._client, self._url = _client_for(url, client, timeout)
        self._stale = _redis.Disconnected
        self._breaker = _redis.Breaker(
            f"rate limiter {name!r}",
            timeout=timeout,
            backoff=backoff,
            clock=clock,
            on_outage=self._on_outage,
            on_recovery=self._on_recovery,
            client=self._client,
        )
        self._owns_client = client is None
        scripts = (_ACQUIRE, _ADJUST, _HOLD, _RESPEC)
        self._acquire, self._adjust, self._hold, self._respec = map(
            self._client.register_script, scripts
        )
        prefix = f"{namespace}:limit:{{{name}}}"
        self._keys = (f"{prefix}:req", f"{prefix}:tok", f"{prefix}:hold")
        self._local = LocalLimiter(spec, clock)

    @property
    def down(self) -> bool:
        """True from a failed Redis call until the next one that succeeds."""
        return self._breaker.failing

    @property
    def timeout(self) -> float:
        return self._breaker.timeout

    @property
    def backoff(self) -> float:
        return self._breaker.backoff

    @property
    def errors(self) -> int:
        """Redis calls that failed."""
        return self._breaker.errors

    @property
    def outages(self) -> int:
        """Times Redis went down: from a failure to the next success counts once."""
        return self._breaker.outages

    @property
    def local_calls(self) -> int:
        """Calls paced in this process alone: each failed call, and each skipped one."""
        return self._breaker.errors + self._breaker.skipped_while_down

    async def try_acquire(self, requests: int, tokens: int) -> float:
        rpm, tpm, burst = _rates(self.spec)
        args = (rpm, tpm, burst, requests, tokens)
        wait = await self._run(self._acquire, self._keys, args)
        if wait is None:
            return self._local.try_now(requests, tokens)
        return wait

    async def adjust(self, tokens: int) -> None:
        _, tpm, burst = _rates(self.spec)
        if not tpm or not tokens:
            return
        if await self._run(self._adjust, self._keys[1:2], (tpm, burst, tokens)) is None:
            await self._local.adjust(tokens)

    async def hold(self, seconds: float) -> None:
        # Kept locally as well, so the upstream's "stop" outlives a Redis outage.
        await self._local.hold(seconds)
        await self._run(self._hold, self._keys[2:], (seconds,))

    async def set_spec(self, spec: LimitSpec) -> None:
        await self._local.set_spec(spec)
        self.spec = spec
        await self._run(self._respec, self._keys[:2], _rates(spec))

    async def close_idle(self) -> None:
        from .._redis import close_idle  # redis-py is loaded by now

        await close_idle(self._client)

    def forget_loop(self) -> None:
        from .._redis import forget_loop  # redis-py is loaded by now

        self._local.forget_loop()
        self._breaker.forget_loop()
        forget_loop(self._client)

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()

    async def _run(
        self, script: AsyncScript, keys: Sequence[str], args: Sequence[float]
    ) -> float | None:
        """The script's reply as seconds, or ``None`` if Redis is (or just went) down."""
        if self._breaker.skip():
            return None
        try:
            # The deadline covers both tries of _call: a caller waits `timeout` at most
            # (once the client has met a cluster).
            reply = await self._breaker.run(self._call(script, keys, args))
        except self._breaker.failures:
            return None
        return float(reply)

    async def _call(
        self, script: AsyncScript, keys: Sequence[str], args: Sequence[float]
    ) -> bytes | str:
        try:
            reply: bytes | str = await script(keys=keys, args=args)
        except self._stale:
            # A pooled connection the server dropped (a restart, an idle timeout)
            # fails once; a fresh one deserves a try before Redis is called down.
            reply = await script(keys=keys, args=args)
        return reply

    def _on_outage(self, exc: BaseException) -> None:
        # The breaker calls this once per outage, not once per failed call.
        _log.warning(
            "rate limiter %r: Redis at %s failed (%s: %s); pacing in this process "
            "alone, retrying Redis every %gs",
            self.name,
            self._url,
            type(exc).__name__,
            exc,
            self.backoff,
        )

    def _on_recovery(self) -> None:
        _log.info("rate limiter %r: Redis at %s is back; limit shared again", self.name, self._url)

    def __repr__(self) -> str:
        return (
            f"RedisLimiter({self.name!r}, {self.spec!r}, url={self._url!r}, down={self.down}, "
            f"outages={self.outages}, errors={self.errors}, local_calls={self.local_calls})"
        )


def _rates(spec: LimitSpec) -> tuple[int, int, float]:
    """The script's view of a spec: 0 marks a dimension without a limit."""
    return spec.rpm or 0, spec.tpm or 0, spec.burst


def _check_name(name: str) -> None:
    # Braces would move the hash tag; the name must be the whole of it.
    if not name or "{" in name or "}" in name:
        raise ConfigError("name", f"expected a non-empty name without braces, got {name!r}")


def _client_for(
    url: str | None, client: Redis | RedisCluster | None, timeout: float
) -> tuple[Redis | RedisCluster, str]:
    """The client to use, and how to name its server in logs and repr."""
    if (url is None) == (client is None):
        raise ConfigError("url", "give exactly one of url= and client=")
    from .._redis import connect, describe, safe_url  # redis-py is loaded by now

    if client is not None:
        return client, describe(client)
    assert url is not None
    return connect(url, timeout), safe_url(url)


def limiter_for(
    spec: LimitSpec, clock: Clock, *, name: str, redis_url: str | None, namespace: str
) -> Limiter:
    """One limit in memory, or held in Redis under ``name`` when a Redis is configured.

    Every process configured alike names the limit alike, so they all draw
    from one budget (an empty ``namespace`` is the default ``overdrive``).
    """
    if redis_url is None:
        return LocalLimiter(spec, clock)
    return RedisLimiter(
        spec, name=name, url=redis_url, namespace=namespace or "overdrive", clock=clock
    )
