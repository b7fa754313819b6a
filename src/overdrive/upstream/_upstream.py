"""One configured OpenAI-compatible endpoint: its pooled HTTP client, pacing and slots."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import httpx

from .._calls import Call
from .._clock import Clock
from .._json import dumps
from ..config import UpstreamConfig
from ..flow import RateLimiter

__all__ = ["Lease", "Upstream"]

# What "auto" concurrency means until the adaptive limit lands: generous,
# since pacing (not this cap) is what keeps a rate-limited upstream happy.
AUTO_CONCURRENCY = 64


class Lease:
    """A held concurrency slot; ``release`` is idempotent."""

    __slots__ = ("_upstream", "queued_s")

    def __init__(self, upstream: Upstream, queued_s: float) -> None:
        self._upstream: Upstream | None = upstream
        self.queued_s = queued_s

    def release(self) -> None:
        if self._upstream is not None:
            self._upstream.give_back()
            self._upstream = None


class Upstream:
    """Sends calls to one endpoint once its rate limit and concurrency admit them."""

    __slots__ = ("_http", "_slots", "config", "in_flight", "limiter")

    def __init__(
        self,
        config: UpstreamConfig,
        clock: Clock,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.config = config
        self.limiter = RateLimiter(config.rpm, config.tpm, config.burst, clock)
        size = AUTO_CONCURRENCY if config.concurrency == "auto" else config.concurrency
        self._slots = asyncio.Semaphore(size)
        self.in_flight = 0
        key = config.api_key()
        self._http = httpx.AsyncClient(
            base_url=config.base_url,
            headers={"authorization": f"Bearer {key}"} if key else None,
            timeout=httpx.Timeout(config.timeout, connect=min(config.timeout, 10.0)),
            limits=httpx.Limits(max_connections=size, max_keepalive_connections=size),
            transport=transport,
        )

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def models(self) -> Sequence[str]:
        return self.config.models

    async def admit(self, call: Call) -> Lease:
        """Wait for the rate limit, then for a free slot."""
        queued = await self.limiter.acquire(call.tokens)
        await self._slots.acquire()
        self.in_flight += 1
        return Lease(self, queued)

    def give_back(self) -> None:
        self.in_flight -= 1
        self._slots.release()

    async def exchange(self, call: Call, *, stream: bool) -> httpx.Response:
        """POST the call; with ``stream`` the body is left unread for the caller."""
        request = self._http.build_request(
            "POST",
            call.path,
            content=dumps(call.body),
            headers={"content-type": "application/json"},
        )
        return await self._http.send(request, stream=stream)

    async def aclose(self) -> None:
        await self._http.aclose()

    def __repr__(self) -> str:
        return f"Upstream({self.name!r}, in_flight={self.in_flight}, limiter={self.limiter!r})"
