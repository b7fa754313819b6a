"""Embedding micro-batching: single-text calls that agree on model and options go as one.

Which calls qualify is their API's say (``call.api.batchable``: today an
embeddings call with one string input), and the batched call is made by the
same adapter, so this stage never names an API.

Providers price an embeddings call as a base cost plus a cost per input, so
64 single-text calls sent as one 64-input call finish far sooner and use one
request of the rate limit instead of 64. Each caller still gets an ordinary
one-input response of its own (so caching and the httpx door see nothing new).

When the upstream's admission queue is backed up, a batch sent now would only
wait its turn there, so it keeps collecting instead: the wait is stretched to
the queue's backlog (up to :data:`MAX_STRETCH` seconds). Behind a busy rate
limit this turns many small batches into a few large ones, each saving a
request of the limit for everyone, at no cost in latency; with an idle queue
the configured ``max_wait_ms`` applies unchanged.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from .._calls import Call, Result
from .._errors import UpstreamProtocolError
from .._json import JSONDecodeError, dumps, dumps_canonical, loads
from ..monitor.names import BATCH_SIZE
from ._batch import Batcher

if TYPE_CHECKING:
    from .._clock import Clock
    from ..config import EmbeddingBatchConfig
    from ..monitor import Metrics

__all__ = ["EmbeddingBatches"]

Send = Callable[[Call], Awaitable[Result]]
Backlog = Callable[[str], float]

MAX_STRETCH = 2.0
"""Longest a batch waits for company because of a backed-up queue, in seconds."""
# Re-arming a batcher's timer costs a task; small changes of the backlog are not worth it.
_STRETCH_STEP = 0.25
# Groups kept before idle batchers are dropped: every distinct set of options
# makes a group, and a caller varying `user` or `dimensions` makes thousands.
_PRUNE_FLOOR = 64


class EmbeddingBatches:
    """One :class:`Batcher` per (model, options) group of single-text embedding calls."""

    __slots__ = (
        "_batchers",
        "_clock",
        "_max_batch",
        "_max_wait",
        "_metrics",
        "_prune_at",
        "_send",
        "backlog",
        "enabled",
    )

    def __init__(
        self,
        config: EmbeddingBatchConfig,
        send: Send,
        metrics: Metrics,
        clock: Clock,
        backlog: Backlog | None = None,
    ) -> None:
        self.backlog = backlog
        self.enabled = config.enabled
        self._max_batch = config.max_batch
        self._max_wait = config.max_wait_ms / 1000
        self._send = send
        self._metrics = metrics
        self._clock = clock
        self._batchers: dict[bytes, Batcher[Call, Result]] = {}
        self._prune_at = _PRUNE_FLOOR

    @property
    def groups(self) -> int:
        """Batchers alive now, one per (model, options) group seen recently."""
        return len(self._batchers)

    @property
    def max_batch(self) -> int:
        return self._max_batch

    @max_batch.setter
    def max_batch(self, value: int) -> None:
        for batcher in self._batchers.values():
            batcher.max_batch = value  # checks the value before anything changes
        self._max_batch = value

    @property
    def max_wait(self) -> float:
        """Seconds the first call of a batch waits for company."""
        return self._max_wait

    @max_wait.setter
    def max_wait(self, value: float) -> None:
        for batcher in self._batchers.values():
            batcher.max_wait = value  # the next call stretches it again if the queue is long
        self._max_wait = value

    def takes(self, call: Call) -> bool:
        """True for a call its API says may be batched (one text to embed), when batching is on."""
        return self.enabled and call.api.batchable(call)

    async def submit(self, call: Call) -> Result:
        """Wait for the call's batch to go; return this call's own one-input response."""
        batcher = self._batcher(call)
        if self.backlog is not None:
            self._stretch(batcher, self.backlog(call.model))
        return await batcher.submit(call)

    def _stretch(self, batcher: Batcher[Call, Result], backlog: float) -> None:
        """Let the batch collect for as long as it would queue anyway."""
        wait = max(self._max_wait, min(backlog, MAX_STRETCH))
        current = batcher.max_wait
        if abs(wait - current) > _STRETCH_STEP * max(current, self._max_wait, 1e-3):
            batcher.max_wait = wait

    def forget_loop(self) -> None:
        """The event loop the batches waited and ran on is gone: new groups from here on."""
        self._batchers.clear()

    async def aclose(self) -> None:
        for batcher in self._batchers.values():
            await batcher.aclose()
        self._batchers.clear()

    def _batcher(self, call: Call) -> Batcher[Call, Result]:
        options = {k: v for k, v in call.body.items() if k != "input"}
        # The op too: calls of two batchable APIs never share a batch.
        group = hashlib.blake2b(dumps_canonical([call.op, options]), digest_size=16).digest()
        batcher = self._batchers.get(group)
        if batcher is None:
            if len(self._batchers) >= self._prune_at:
                self._prune()
            batcher = self._batchers[group] = Batcher(
                self._send_batch,
                max_batch=self._max_batch,
                max_wait=self._max_wait,
                clock=self._clock,
                name=f"{call.op}:{call.model}",
            )
        return batcher

    def _prune(self) -> None:
        """Drop the batchers with nothing queued or in flight; amortised over new groups."""
        self._batchers = {
            group: batcher
            for group, batcher in self._batchers.items()
            if batcher.queued or batcher.in_flight
        }
        self._prune_at = max(_PRUNE_FLOOR, 2 * len(self._batchers))

    async def _send_batch(self, calls: list[Call]) -> list[Result]:
        texts = [call.body["input"] for call in calls]
        first = calls[0]
        self._metrics.histogram(BATCH_SIZE, op=first.op).observe(len(calls))
        result = await self._send(first.api.call({**first.body, "input": texts}))
        if not result.ok:
            return [result] * len(calls)
        return [Result(200, body, result.upstream) for body in split_embeddings(result, len(texts))]

    def __repr__(self) -> str:
        return (
            f"EmbeddingBatches(groups={len(self._batchers)}, enabled={self.enabled}, "
            f"max_batch={self._max_batch}, max_wait={self._max_wait * 1e3:g}ms)"
        )


def split_embeddings(result: Result, count: int) -> list[bytes]:
    """Cut an ``count``-input embeddings response into ``count`` one-input responses."""
    payload = _batch_payload(result, count)
    data = sorted(payload.pop("data"), key=lambda item: item["index"])
    usages = _share_usage(payload.pop("usage", None), count)
    return [
        dumps({**payload, "data": [{**item, "index": 0}], "usage": usage})
        for item, usage in zip(data, usages, strict=True)
    ]


def _batch_payload(result: Result, count: int) -> dict[str, Any]:
    try:
        payload = loads(result.body)
    except JSONDecodeError:
        payload = None
    data = payload.get("data") if isinstance(payload, dict) else None
    if (
        not isinstance(data, list)
        or len(data) != count
        or not all(isinstance(d, dict) and isinstance(d.get("index"), int) for d in data)
        or sorted(d["index"] for d in data) != list(range(count))
    ):
        raise UpstreamProtocolError(
            result.upstream, f"embeddings answer does not hold {count} indexed items"
        )
    assert isinstance(payload, dict)
    return payload


def _share_usage(usage: Any, count: int) -> list[dict[str, int]]:
    """Split the batch's token count evenly, the remainder to the first inputs."""
    total = usage.get("prompt_tokens", 0) if isinstance(usage, dict) else 0
    total = total if isinstance(total, int) and total >= 0 else 0
    base, extra = divmod(total, count)
    shares = [base + (1 if i < extra else 0) for i in range(count)]
    return [{"prompt_tokens": n, "total_tokens": n} for n in shares]
