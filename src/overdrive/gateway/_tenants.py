"""Virtual API keys: who is calling, what they may use, and how fast.

Each ``[[gateway.keys]]`` entry is a tenant. A request names its key in
``Authorization: Bearer <key>`` (the openai SDK) or ``x-api-key: <key>`` (the
anthropic SDK, Claude Code); the key is hashed (SHA-256) and looked up, so
the gateway never holds a plain-text key. A tenant's rpm/tpm is a limiter of
its own, in Redis when the config has a ``redis_url`` (so every replica shares
one limit), and its cached answers live in a namespace of their own.

>>> hash_key("sk-team-a")[:16]
'8879f6a4ae35c420'
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

from .._errors import KeyLimitError, ModelNotAllowedError
from .._json import JSONDecodeError, loads
from ..flow import LimitSpec, limiter_for

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

    from .._calls import Call, Result
    from .._clock import Clock
    from ..config import Config, GatewayKey
    from ..flow import Limiter

__all__ = ["Tenant", "Tenants", "hash_key"]

_BEARER = "bearer "
# Where Anthropic's clients put their key.
_API_KEY = "x-api-key"


def hash_key(secret: str) -> str:
    """The SHA-256 of an API key in hex: what ``key_sha256`` in the config holds."""
    return hashlib.sha256(secret.encode()).hexdigest()


class Tenant:
    """One API key's name, allowed models, cache namespace and rate limit."""

    __slots__ = ("_clock", "_limiter", "_max_wait", "_models", "max_priority", "name", "namespace")

    def __init__(self, key: GatewayKey, limiter: Limiter | None, clock: Clock) -> None:
        self.name = key.name
        self.namespace = key.cache_namespace or key.name
        self.max_priority = key.max_priority
        self._models = frozenset(key.models)
        self._limiter = limiter
        self._max_wait = key.max_wait
        self._clock = clock

    def visible(self, models: list[str]) -> list[str]:
        """The ones of ``models`` this key may use (all, without a ``models`` list)."""
        allowed = self._models
        return [m for m in models if m in allowed] if allowed else models

    async def admit(self, call: Call) -> float:
        """Book the call against the key's limits; the seconds it waited, or raise.

        Raises :class:`ModelNotAllowedError` for a model the key may not use,
        and :class:`KeyLimitError` when the key has no room within ``max_wait``.
        """
        if self._models and call.model not in self._models:
            raise ModelNotAllowedError(self.name, call.model)
        limiter = self._limiter
        if limiter is None:
            return 0.0
        started = self._clock.now()
        tokens = call.tokens if limiter.spec.tpm else 0
        while (wait := await limiter.try_acquire(1, tokens)) > 0.0:
            waited = self._clock.now() - started
            if waited + wait > self._max_wait:
                raise KeyLimitError(self.name, wait)
            await self._clock.sleep(wait)
        return self._clock.now() - started

    async def settle(self, call: Call, result: Result) -> None:
        """Book what the call really used: its reported usage, nothing if it was not sent.

        The call's API reads the usage (a Messages answer counts its cached
        input tokens too).
        """
        limiter = self._limiter
        if limiter is None or not limiter.spec.tpm:
            return
        used = _usage(call, result.body) if result.source == "upstream" else 0
        if used is not None and used != call.tokens:
            await limiter.adjust(used - call.tokens)

    async def aclose(self) -> None:
        if self._limiter is not None:
            await self._limiter.aclose()

    def __repr__(self) -> str:
        return f"Tenant({self.name!r}, namespace={self.namespace!r}, limiter={self._limiter!r})"


class Tenants:
    """The keys of a gateway; with none configured, every caller is let in anonymously."""

    __slots__ = ("_by_digest",)

    def __init__(self, config: Config, clock: Clock) -> None:
        self._by_digest = {
            key.digest(): Tenant(key, _limiter(key, config, clock), clock)
            for key in config.gateway.keys
        }

    @property
    def required(self) -> bool:
        """Whether a request must carry a valid key."""
        return bool(self._by_digest)

    def find(self, headers: Mapping[str, str]) -> Tenant | None:
        """The tenant whose key ``Authorization: Bearer`` (else ``x-api-key``) carries, or None.

        Either header names a key the same way: the anthropic SDK sends
        ``x-api-key``, or ``Authorization`` when given an auth token instead.
        """
        value = headers.get("authorization", "")
        if value[: len(_BEARER)].lower() == _BEARER:
            found = self._by_digest.get(hash_key(value[len(_BEARER) :].strip()))
            if found is not None:
                return found
        key = headers.get(_API_KEY)
        return self._by_digest.get(hash_key(key.strip())) if key else None

    def __iter__(self) -> Iterator[Tenant]:
        return iter(self._by_digest.values())

    async def aclose(self) -> None:
        for tenant in self._by_digest.values():
            await tenant.aclose()

    def __repr__(self) -> str:
        return f"Tenants({sorted(t.name for t in self._by_digest.values())})"


def _limiter(key: GatewayKey, config: Config, clock: Clock) -> Limiter | None:
    spec = LimitSpec(key.rpm, key.tpm, key.burst)
    if not spec.limited:
        return None
    # One name for the key in every replica: they all draw from one budget.
    return limiter_for(
        spec, clock, name=f"key:{key.name}", redis_url=config.redis_url, namespace=config.namespace
    )


def _usage(call: Call, body: bytes) -> int | None:
    """All the tokens an answer reports using, as the call's API reads them; None if none."""
    try:
        payload = loads(body)
    except JSONDecodeError:
        return None
    counts = call.api.usage(payload) if isinstance(payload, dict) else None
    used = 0 if counts is None else counts[0] + counts[1]
    return used or None  # nothing counted: no figure to settle with, the estimate stands
