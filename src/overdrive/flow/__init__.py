"""Flow control: pacing, coalescing and retries."""

from __future__ import annotations

from ._coalesce import Coalescer
from ._ratelimit import GCRA, RateLimiter
from ._retry import RETRYABLE_STATUSES, Backoff, retry_after
from ._threadflight import ThreadFlight

__all__ = [
    "GCRA",
    "RETRYABLE_STATUSES",
    "Backoff",
    "Coalescer",
    "RateLimiter",
    "ThreadFlight",
    "retry_after",
]
