"""Shared resources: an async resource pool, CPU workers, and the ResourceManager that owns them.

::

    async with ResourcePool(connect, close=disconnect, max_size=10) as pool:
        async with pool.acquire() as conn:
            ...
"""

from __future__ import annotations

from ._build import build_resources
from ._manager import ResourceManager
from ._pool import ResourcePool

__all__ = ["ResourceManager", "ResourcePool", "build_resources"]
