"""Flow control: pacing, coalescing, micro-batching and retries."""

from __future__ import annotations

from ._batch import BatchedFunction, Batcher, BatchStats, batched
from ._coalesce import Coalescer
from ._concurrency import AdaptiveLimit, ConcurrencyLimit, FixedLimit, Outcome, Permit
from ._embedding_batches import EmbeddingBatches
from ._ratelimit import GCRA, RateLimiter
from ._retry import RETRYABLE_STATUSES, Backoff, retry_after
from ._threadflight import ThreadFlight

__all__ = [
    "GCRA",
    "RETRYABLE_STATUSES",
    "AdaptiveLimit",
    "Backoff",
    "BatchStats",
    "BatchedFunction",
    "Batcher",
    "Coalescer",
    "ConcurrencyLimit",
    "EmbeddingBatches",
    "FixedLimit",
    "Outcome",
    "Permit",
    "RateLimiter",
    "ThreadFlight",
    "batched",
    "retry_after",
]
