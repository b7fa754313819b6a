"""Flow control: pacing (GCRA), concurrency, the admission queue, micro-batching and retries."""

from __future__ import annotations

from .._errors import BatchResultCountError
from ._admission import AdmissionQueue, settled_within
from ._batch import BatchedFunction, Batcher, batched
from ._budget import RetryBudget
from ._concurrency import AdaptiveLimit, ConcurrencyLimit, FixedLimit, Outcome, Permit
from ._embedding_batches import EmbeddingBatches
from ._feedback import apply_feedback
from ._hedge import HedgeDelay
from ._limiter import Limiter, LimitSpec
from ._ratelimit import GCRA, LocalLimiter
from ._redis_limiter import RedisLimiter, limiter_for
from ._retry import RETRYABLE_STATUSES, Backoff, retry_after

__all__ = [
    "GCRA",
    "RETRYABLE_STATUSES",
    "AdaptiveLimit",
    "AdmissionQueue",
    "Backoff",
    "BatchResultCountError",
    "BatchedFunction",
    "Batcher",
    "ConcurrencyLimit",
    "EmbeddingBatches",
    "FixedLimit",
    "HedgeDelay",
    "LimitSpec",
    "Limiter",
    "LocalLimiter",
    "Outcome",
    "Permit",
    "RedisLimiter",
    "RetryBudget",
    "apply_feedback",
    "batched",
    "limiter_for",
    "retry_after",
    "settled_within",
]
