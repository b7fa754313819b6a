"""Build the engine's resource manager, the cache's memory booked first."""

from __future__ import annotations

from .._errors import ConfigError
from ..config import Config
from ._manager import ResourceManager

__all__ = ["build_resources"]

# Without ``[resources] memory`` the budget is at least this, and always holds the cache.
_MIN_MEMORY_BUDGET = 1 << 30
_BUFFER_HEADROOM = 64 << 20


def build_resources(config: Config) -> ResourceManager:
    """The engine's resources; the cache's memory is booked first, so it always fits.

    A ``[resources] memory`` budget too small for ``[cache] memory`` is a
    :class:`~overdrive.ConfigError` now, not a failure under load later.
    """
    cache = config.cache
    budget = config.resources.memory
    if budget is None:
        budget = max(_MIN_MEMORY_BUDGET, cache.memory + _BUFFER_HEADROOM)
    manager = ResourceManager(budget)
    if cache.enabled and not manager.try_allocate("cache.memory", cache.memory):
        raise ConfigError(
            "resources.memory",
            f"{budget} bytes cannot hold [cache] memory = {cache.memory} bytes",
        )
    return manager
