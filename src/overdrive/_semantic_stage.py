"""The semantic tier in a call's path: after the exact tiers miss, before coalescing.

A call whose API sets a last user text apart (chat, Responses, Messages) is
looked up by meaning in its scope (see ``cache/semantic``); the first
candidate the guard passed whose answer is still fresh in the exact tiers is
served, marked ``semantic`` with its similarity. On a miss the caller goes
on to coalesce and send, and the answer it stores is remembered for its
question in the background. ``Cache-Control: no-cache`` and ``no-store``
skip the tier, as they skip the exact ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ._calls import Call
from .cache import StoredAnswer, semantic_scope
from .monitor.names import SEMANTIC_DURATION, SEMANTIC_LOOKUPS

if TYPE_CHECKING:
    from ._calls import Result
    from ._clock import Clock
    from .cache import CacheStage
    from .cache.semantic import Probe, SemanticTier
    from .monitor import Metrics

__all__ = ["Looked", "SemanticStage"]


@dataclass(slots=True, frozen=True)
class Looked:
    """A lookup's outcome: the ``answer`` served (None on a miss) and the probe to remember."""

    answer: StoredAnswer | None
    similarity: float
    probe: Probe | None


_NOT_LOOKED = Looked(None, 0.0, None)


class SemanticStage:
    """Looks calls up in the semantic tier and remembers the answers fetched for them."""

    __slots__ = ("_clock", "_metrics", "_namespace", "_stage", "tier")

    def __init__(
        self,
        tier: SemanticTier,
        stage: CacheStage[Result],
        *,
        namespace: str,
        metrics: Metrics,
        clock: Clock,
    ) -> None:
        self.tier = tier
        self._stage = stage
        self._namespace = namespace
        self._metrics = metrics
        self._clock = clock

    async def lookup(self, call: Call) -> Looked:
        """The answer to a cached question meaning what ``call``'s does, if the guard agrees."""
        if call.cache != "default":
            return _NOT_LOOKED
        scoped = semantic_scope(call, self._namespace)
        probe = None if scoped is None else self.tier.probe(*scoped)
        if probe is None:
            return _NOT_LOOKED
        started = self._clock.now()
        looked = await self._answer(call, probe)
        outcome = "miss" if looked.answer is None else "hit"
        self._metrics.counter(SEMANTIC_LOOKUPS, op=call.op, outcome=outcome).inc()
        self._metrics.histogram(SEMANTIC_DURATION, op=call.op).observe(self._clock.now() - started)
        return looked

    async def _answer(self, call: Call, probe: Probe) -> Looked:
        for candidate in await self.tier.lookup(probe):
            answer = await self._stage.fresh_answer(candidate.key, call.max_age)
            if answer is not None:
                self.tier.served()
                return Looked(answer, candidate.similarity, probe)
            self.tier.forget(candidate.ident)  # its answer expired or was evicted
        return Looked(None, 0.0, probe)

    def remember(self, looked: Looked, key: bytes, ttl: float) -> None:
        """The answer stored under ``key`` answers the looked-up question from now on."""
        if looked.probe is not None:
            self.tier.remember(looked.probe, key, ttl)

    def __repr__(self) -> str:
        return f"SemanticStage({self.tier!r})"
