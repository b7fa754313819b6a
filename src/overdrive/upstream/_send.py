"""Send one complete call upstream and settle it: its answer checked, its tokens booked.

The dispatcher does the pacing, retries and failover; this is the last step
of the pipeline's send: read the final answer, check it is a JSON object,
count the tokens it reports (its API's adapter reads them), and give the
limiter back what the call's estimate over-booked (or book what it
under-booked).
"""

from __future__ import annotations

from typing import Any

from .._calls import Call, Result
from .._clock import Clock
from .._errors import RateLimitedError, UpstreamProtocolError, UpstreamStatusError
from .._json import JSONDecodeError, loads
from ..monitor import OpMeterBook
from ._dispatch import Dispatcher, Exchange

__all__ = ["Sender", "parse_object"]


class Sender:
    """Sends a complete call through the dispatcher and settles its usage.

    ``send`` is what the engine runs for a call not answered from the cache,
    and what the embedding batcher runs for a whole batch; ``payload`` turns
    the result into the JSON a library caller gets, or the error it raises.
    """

    __slots__ = ("_clock", "_dispatcher", "_meters", "_rate_limited_attempts")

    def __init__(
        self,
        dispatcher: Dispatcher,
        clock: Clock,
        meters: OpMeterBook,
        rate_limited_attempts: int,
    ) -> None:
        self._dispatcher = dispatcher
        self._clock = clock
        self._meters = meters
        # 429s the dispatcher waits out before it hands one back (see RetryConfig).
        self._rate_limited_attempts = rate_limited_attempts

    async def send(self, call: Call) -> Result:
        """One upstream exchange, its answer checked and its tokens booked."""
        started = self._clock.now()
        exchange = await self._dispatcher.send(call)
        try:
            response = exchange.response
            queued = exchange.lease.queued_s
            result = Result(
                response.status_code, response.content, exchange.upstream.name, queued_s=queued
            )
            refund = self._settle(call, exchange, result) if result.ok else 0
            if refund:
                await exchange.lease.limiter.adjust(refund)
        finally:
            exchange.release()  # the body is read whole: nothing is left to close
        meters = self._meters.of(call.op)
        meters.upstream_duration(result.upstream).observe(self._clock.now() - started)
        return result

    def _settle(self, call: Call, exchange: Exchange, result: Result) -> int:
        """Check the answer's shape and count the tokens it reports.

        Returns the tokens to book on the limiter beyond the call's estimate
        (negative: a refund), when the upstream charges by usage; else 0.
        """
        usage = call.api.usage(parse_object(result.body, result.upstream))
        if usage is None:
            return 0
        prompt, completion = usage
        exchange.lease.output_tokens = max(completion, 1)
        meters = self._meters.of(call.op)
        meters.prompt_tokens.inc(prompt)
        meters.completion_tokens.inc(completion)
        if exchange.upstream.config.tokens_charged != "usage":
            return 0
        return prompt + completion - call.tokens

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
