"""The series every call of one op reports to, looked up once per op, not once per call.

>>> from overdrive.monitor import Metrics
>>> meters = OpMeterBook(Metrics())
>>> meters.of("chat").requests.inc()
>>> meters.of("chat") is meters.of("chat")
True
"""

from __future__ import annotations

from ._metrics import Metrics
from ._series import Histogram
from .names import (
    CACHE_HITS,
    CACHE_MISSES,
    CACHED_TOKENS,
    COALESCED,
    QUEUE_WAIT,
    REQUEST_DURATION,
    REQUESTS,
    TOKENS,
    UPSTREAM_DURATION,
)

__all__ = ["OpMeterBook", "OpMeters"]


class OpMeters:
    """The metric series of one op, so the hot path skips the label lookups."""

    __slots__ = (
        "_metrics",
        "_op",
        "_upstream_series",
        "cached_tokens",
        "coalesced",
        "completion_tokens",
        "duration",
        "hits",
        "misses",
        "prompt_tokens",
        "requests",
    )

    def __init__(self, metrics: Metrics, op: str) -> None:
        self._metrics = metrics
        self._op = op
        self._upstream_series: dict[tuple[str, str], Histogram] = {}
        self.requests = metrics.counter(REQUESTS, op=op)
        self.duration = metrics.histogram(REQUEST_DURATION, op=op)
        self.hits = metrics.counter(CACHE_HITS, op=op)
        self.misses = metrics.counter(CACHE_MISSES, op=op)
        self.coalesced = metrics.counter(COALESCED, op=op)
        self.prompt_tokens = metrics.counter(TOKENS, op=op, kind="prompt")
        self.completion_tokens = metrics.counter(TOKENS, op=op, kind="completion")
        self.cached_tokens = metrics.counter(CACHED_TOKENS, op=op)

    def upstream_duration(self, upstream: str) -> Histogram:
        """The op's upstream exchange times on ``upstream``: sent to answered."""
        return self._of_upstream(UPSTREAM_DURATION, upstream)

    def queue_wait(self, upstream: str) -> Histogram:
        """The op's admission waits at ``upstream``: its rate limit and a concurrency slot."""
        return self._of_upstream(QUEUE_WAIT, upstream)

    def _of_upstream(self, name: str, upstream: str) -> Histogram:
        found = self._upstream_series.get((name, upstream))
        if found is None:
            found = self._upstream_series[name, upstream] = self._metrics.histogram(
                name, upstream=upstream, op=self._op
            )
        return found

    def __repr__(self) -> str:
        return f"OpMeters(op={self._op!r}, requests={self.requests.value:g})"


class OpMeterBook:
    """Every op's :class:`OpMeters` on one registry, made on an op's first call."""

    __slots__ = ("_by_op", "_metrics")

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        self._by_op: dict[str, OpMeters] = {}

    def of(self, op: str) -> OpMeters:
        """The series every call of ``op`` reports to."""
        meters = self._by_op.get(op)
        if meters is None:
            meters = self._by_op[op] = OpMeters(self._metrics, op)
        return meters

    def __repr__(self) -> str:
        return f"OpMeterBook(ops={sorted(self._by_op)})"
