"""Distribution of agent tasks: bounded and retried, on this event loop or on Ray.

>>> async for result in distribute(agent, items, engine=od, concurrency=32):  # doctest: +SKIP
...     print(result.index, result.value if result.ok else result.error)

One API for both backends: ``backend="local"`` (tasks share the caller's
engine) or ``backend="ray"`` / :class:`RayBackend` (async actors, one engine
each, sharing cache and limits through Redis when the config has a
``redis_url``). Ray is an optional extra, imported only when used.
"""

from __future__ import annotations

from ._base import Backend, TaskFn
from ._ray import RayBackend
from ._run import DistributedRun, TaskResult, distribute

__all__ = [
    "Backend",
    "DistributedRun",
    "RayBackend",
    "TaskFn",
    "TaskResult",
    "distribute",
]
