"""Build the semantic tier a ``[cache.semantic]`` section describes."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from ..._errors import ConfigError
from ._embed import BatchedEncoder, Embedder, EngineEmbedder, local_encoder
from ._guard import CHECKS, DEFAULT_THRESHOLD, Guard
from ._shared import SharedLog
from ._tier import SemanticTier

if TYPE_CHECKING:
    from ..._clock import Clock
    from ...config import Config

__all__ = ["build_semantic"]

EmbedCall = Callable[..., Awaitable[Mapping[str, Any]]]


def build_semantic(
    config: Config, embed: EmbedCall, clock: Clock, wall: Callable[[], float]
) -> SemanticTier:
    """The tier, its embedder and guard; sharing through the cache's Redis when one is set.

    ``embed`` is the engine's ``embed``, used when ``embedder = "upstream"``.
    """
    settings = config.cache.semantic
    embedder = _embedder(config, embed)
    threshold = DEFAULT_THRESHOLD if settings.threshold is None else settings.threshold
    checks = None if settings.checks is None else _known(settings.checks)
    redis_url = config.cache.redis_url or config.redis_url
    shared = None
    if settings.shared and redis_url:
        shared = SharedLog(
            redis_url,
            namespace=config.namespace,
            model=embedder.name,
            max_entries=settings.max_entries,
            clock=clock,
        )
    return SemanticTier(
        embedder,
        Guard(threshold, checks=checks),
        candidates=settings.candidates,
        max_chars=settings.max_chars,
        memory=settings.memory,
        max_entries=settings.max_entries,
        index=settings.index,
        shared=shared,
        wall=wall,
    )


def _known(checks: list[str]) -> tuple[str, ...]:
    unknown = [name for name in checks if name not in CHECKS]
    if unknown:
        problem = f"unknown check {unknown[0]!r}; known: {', '.join(CHECKS)}"
        raise ConfigError("cache.semantic.checks", problem)
    return tuple(checks)


def _embedder(config: Config, embed: EmbedCall) -> Embedder:
    settings = config.cache.semantic
    if settings.embedder == "upstream":
        return EngineEmbedder(embed, settings.model, max_pending=settings.max_pending)
    return BatchedEncoder(
        local_encoder(settings.model),
        name=f"local:{settings.model}",
        max_batch=settings.max_batch,
        max_pending=settings.max_pending,
        warm=True,
    )
