"""Send one complete call upstream and settle it: its answer checked, its tokens booked.

The dispatcher does the pacing, retries and failover; this is the last step
of the pipeline's send: read the final answer, check it is a JSON object,
count the tokens it reports (its API's adapter reads them), and give the
limiter back what the call's estimate over-booked (or book what it
under-booked).

A call resolved from a ``[[models]]`` alias carries ``fallbacks``: once the
dispatcher gave up on its model (retries or their budget spent, no upstream
reachable, a 5xx, 408 or a 429 it stopped waiting out) it is sent once more as
each fallback in turn, each routed and admitted on its own. An answer that is
the caller's fault (another 4xx) is final: another model would refuse it too.

Budgets (``[budget]``, a key's ``budget``) judge a call before any of this and
hear what its answer cost after (:mod:`overdrive.cost`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .._calls import Call, Result
from .._errors import (
    RateLimitedError,
    UpstreamProtocolError,
    UpstreamStatusError,
    UpstreamUnavailableError,
)
from .._json import JSONDecodeError, loads
from ..apis import StreamUsage
from ..cost import Budgets, PriceTable
from ..monitor import Counter, Metrics, OpMeterBook
from ..monitor.names import COST, FALLBACKS
from ..route import retarget
from ._dispatch import Dispatcher, Exchange

__all__ = ["Sender", "StreamSettlement", "falls_back", "parse_object"]

# Besides 5xx, the answers that are the model's failure rather than the caller's.
_FAILED_STATUSES = frozenset({408, 429})
# What the dispatcher raises once a model's attempts are spent (or its answer is unusable).
_SPENT = (UpstreamUnavailableError, UpstreamProtocolError)


def falls_back(status: int) -> bool:
    """Whether a final answer of ``status`` sends a call on to its next model.

    >>> falls_back(503), falls_back(429), falls_back(400)
    (True, True, False)
    """
    return status >= 500 or status in _FAILED_STATUSES


class Sender:
    """Sends a complete call through the dispatcher and settles its usage.

    ``send`` is what the engine runs for a call not answered from the cache,
    and what the embedding batcher runs for a whole batch; ``payload`` turns
    the result into the JSON a library caller gets, or the error it raises.
    """

    __slots__ = (
        "_budgets",
        "_costs",
        "_dispatcher",
        "_meters",
        "_metrics",
        "_prices",
        "_rate_limited_attempts",
    )

    def __init__(
        self,
        dispatcher: Dispatcher,
        meters: OpMeterBook,
        rate_limited_attempts: int,
        metrics: Metrics,
        prices: PriceTable | None = None,
        budgets: Budgets | None = None,
    ) -> None:
        self._dispatcher = dispatcher
        self._meters = meters
        self._metrics = metrics  # counts the fallbacks, and the cost
        self._prices = prices or PriceTable({})
        self._costs: dict[tuple[str, str, str, str], Counter] = {}
        self._budgets = budgets or Budgets.none()
        # 429s the dispatcher waits out before it hands one back (see RetryConfig).
        self._rate_limited_attempts = rate_limited_attempts

    async def send(self, call: Call) -> Result:
        """One upstream exchange, its answer checked and its tokens and cost booked.

        A call with ``fallbacks`` goes on to them while its model fails (see
        the module); one over a spent budget is refused or moved to the
        budget's fallback first (see :mod:`overdrive.cost`).
        """
        budgets = self._budgets
        if budgets.active:
            call = await budgets.admit(call)
        result = await (self._falling_back(call) if call.fallbacks else self._exchange(call))
        if result.cost and budgets.active:
            await budgets.spend(call, result.cost)
        return result

    async def _exchange(self, call: Call) -> Result:
        exchange = await self._dispatcher.send(call)
        try:
            response = exchange.response
            status, body = response.status_code, response.content
            refund, cost = self._settle(call, exchange, body) if 200 <= status < 300 else (0, 0.0)
            if refund:
                await exchange.lease.limiter.adjust(refund)
        finally:
            exchange.release()  # the body is read whole: nothing is left to close
        queued = exchange.lease.queued_s
        return Result(
            status, body, exchange.upstream.name, queued_s=queued, model=call.model, cost=cost
        )

    async def fall_back(self, call: Call) -> Result:
        """``call`` sent on its fallbacks, its own model having failed already (in a batch)."""
        following, *rest = call.fallbacks
        self._count_fallback(call, following)
        return await self.send(retarget(call, following, tuple(rest)))

    async def _falling_back(self, call: Call) -> Result:
        current = retarget(call, call.model)  # its own model alone first
        for following in call.fallbacks:
            try:
                result = await self._exchange(current)
            except _SPENT:
                pass
            else:
                if not falls_back(result.status):
                    return result
            self._count_fallback(current, following)
            current = retarget(current, following)
        return await self._exchange(current)  # the last one's answer or error is the caller's

    async def open_stream(self, call: Call) -> Exchange:
        """A streamed call's exchange, body unread; on its fallbacks while its model fails.

        Before the first byte only: once an exchange with a good status is
        handed back, its stream is the caller's, whatever happens to it.
        (The stream stage judges the call's budgets first.)
        """
        current = retarget(call, call.model)
        dispatcher = self._dispatcher
        for following in call.fallbacks:
            try:
                exchange = await dispatcher.send(current, stream=True)
            except _SPENT:
                pass
            else:
                if not falls_back(exchange.response.status_code):
                    return exchange
                await exchange.aclose()  # its body is an error nobody reads
            self._count_fallback(current, following)
            current = retarget(current, following)
        return await dispatcher.send(current, stream=True)

    def _count_fallback(self, call: Call, following: str) -> None:
        self._metrics.counter(
            FALLBACKS, op=call.op, from_model=call.model, to_model=following
        ).inc()

    def _settle(self, call: Call, exchange: Exchange, body: bytes) -> tuple[int, float]:
        """Check the answer's shape, then book what it reports using (see :meth:`book`)."""
        return self.book(call, exchange, parse_object(body, exchange.upstream.name))

    def book(self, call: Call, exchange: Exchange, payload: Mapping[str, Any]) -> tuple[int, float]:
        """Count the tokens ``payload`` (an answer, or a stream's usage) reports and their cost.

        Returns the tokens to book on the limiter beyond the call's estimate
        (negative: a refund) when the upstream charges by usage, else 0; and
        the answer's USD (0.0 without usage or a price).
        """
        upstream = exchange.upstream
        usage = call.api.usage(payload)
        if usage is None:
            return 0, 0.0
        prompt, completion = usage
        exchange.lease.output_tokens = max(completion, 1)
        meters = self._meters.of(call.op)
        meters.prompt_tokens.inc(prompt)
        meters.completion_tokens.inc(completion)
        cached = call.api.cached_tokens(payload)
        if cached:
            meters.cached_tokens.inc(cached)
        cost = self._book_cost(call, exchange.model or call.model, upstream.name, usage, cached)
        if upstream.config.tokens_charged != "usage":
            return 0, cost
        return prompt + completion - call.tokens, cost

    def stream_settlement(self, call: Call) -> StreamSettlement:
        """What books a streamed call's usage, cost and budget spend once its stream is over."""
        return StreamSettlement(self, call)

    def _book_cost(
        self, call: Call, model: str, upstream: str, usage: tuple[int, int], cached: int
    ) -> float:
        """Count what the answer cost at ``model``'s price; 0.0 for a model with none."""
        dollars = self._prices.cost(model, usage[0], cached, usage[1])
        if dollars is None:
            return 0.0
        labels = (call.op, model, upstream, call.key)
        counter = self._costs.get(labels)
        if counter is None:  # looked up once per op, model, upstream and key
            counter = self._costs[labels] = self._metrics.counter(
                COST, op=call.op, model=model, upstream=upstream, key=call.key
            )
        counter.inc(dollars)
        return dollars

    @property
    def budgets(self) -> Budgets:
        """The budgets every call is judged against (none configured: inactive)."""
        return self._budgets

    def payload(self, result: Result) -> dict[str, Any]:
        """The JSON object of a 2xx answer; an error answer raised as the error it is.

        A 429 here is one the dispatcher stopped waiting out: the call was
        rate limited on every attempt.
        """
        if result.status == 429:
            attempts = self._rate_limited_attempts + 1
            raise RateLimitedError(result.upstream, result.body, attempts)
        if not result.ok:
            raise UpstreamStatusError(result.upstream, result.status, result.body)
        return parse_object(result.body, result.upstream)

    def __repr__(self) -> str:
        return f"Sender({self._dispatcher!r})"


class StreamSettlement:
    """Reads a stream's usage as it goes by; books it as :meth:`Sender.book` does, at the end.

    Only a stream that reached its end is booked: a cut one's counts (if any
    came) are the provider's to bill, and no figure we could read is final.
    """

    __slots__ = ("_call", "_sender", "_usage")

    def __init__(self, sender: Sender, call: Call) -> None:
        self._sender = sender
        self._call = call
        self._usage = StreamUsage()

    def feed(self, chunk: bytes) -> None:
        self._usage.feed(chunk)

    async def finish(self, exchange: Exchange, ended: bool) -> None:
        payload = self._usage.payload() if ended else None
        if payload is None:
            return
        sender, call = self._sender, self._call
        refund, cost = sender.book(call, exchange, payload)
        if refund:
            await exchange.lease.limiter.adjust(refund)
        if cost and sender.budgets.active:
            await sender.budgets.spend(call, cost)

    def __repr__(self) -> str:
        return f"StreamSettlement({self._call.op}, {self._usage!r})"


def parse_object(body: bytes, upstream: str) -> dict[str, Any]:
    """``body`` parsed as a JSON object; an ``UpstreamProtocolError`` naming ``upstream`` if not."""
    try:
        parsed = loads(body)
    except JSONDecodeError:
        raise UpstreamProtocolError(
            upstream, f"answered 2xx with a non-JSON body: {body[:80]!r}"
        ) from None
    if not isinstance(parsed, dict):
        raise UpstreamProtocolError(
            upstream, f"answered 2xx with JSON that is not an object: {body[:80]!r}"
        )
    return parsed
