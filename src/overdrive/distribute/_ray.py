"""The Ray backend: tasks on Ray async actors, each actor running its own engine.

Ray is imported only when this backend starts, so ``import overdrive`` never
loads it. Each actor builds one engine (the run's ``build``: the driver's
engine class, :class:`~overdrive.Overdrive`) from the run's config and runs
up to ``per_worker`` tasks on it at once. With a top-level
``redis_url`` in that config, the engines of all actors share the L2 cache,
coalescing leases and rate limits through Redis, so the cluster as a whole
keeps an upstream's limits and calls it once per distinct prompt.

An actor whose process dies (``os._exit``, OOM kill, a lost node) is restarted
by Ray; the attempts it had in flight fail with ``RayActorError`` and the run
retries them like any failed attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import importlib.util
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from .._errors import RequestError
from ._base import Backend

if TYPE_CHECKING:
    from ..config import Config
    from ._base import Build, Engine

__all__ = ["RayBackend"]

_INSTALL_HINT = "the ray backend needs Ray: pip install 'overdrive[ray]'"
# How long closing waits for actors to flush their engines before killing them.
_CLOSE_TIMEOUT = 10.0


class _Worker:
    """The body of one Ray actor: an engine, and tasks awaited on it concurrently."""

    def __init__(self, config: Config, build: Build) -> None:
        self._engine = build(config)

    async def run(self, fn: Any, item: Any) -> Any:
        return await fn(self._engine, item)

    async def close(self) -> None:
        await self._engine.aclose()


class _Slot:
    """One actor handle and the attempts this driver has in flight on it."""

    __slots__ = ("actor", "load")

    def __init__(self, actor: Any) -> None:
        self.actor = actor
        self.load = 0


class RayBackend(Backend):
    """Runs tasks on ``workers`` Ray async actors, ``per_worker`` tasks at a time each.

    >>> backend = RayBackend(address="ray://head:10001", workers=8)  # doctest: +SKIP
    >>> async with distribute(agent, items, backend=backend, config=cfg) as run:
    ...     async for result in run: ...                                 # doctest: +SKIP
    >>> await backend.aclose()                                           # doctest: +SKIP

    Ray is joined at ``address`` if given, else the Ray this process already
    initialised, else a new local Ray (``ray.init(**init_options)``); the
    backend never shuts Ray down. ``workers`` defaults to the cluster's CPUs
    (at most the run's concurrency), ``per_worker`` to an even share of the
    concurrency. Actors reserve no CPU and are spread over the nodes
    (``actor_options`` overrides any ``ray.remote`` option). They keep the
    config of the run that started them until :meth:`aclose`. Tasks and items
    are pickled with cloudpickle: closures and lambdas travel by value,
    functions of an importable module by reference (the module must be
    installed on the workers).
    """

    __slots__ = (
        "_actor_options",
        "_address",
        "_init_options",
        "_next",
        "_per_worker",
        "_ray",
        "_slots",
        "_workers",
    )

    name: ClassVar[str] = "ray"

    def __init__(
        self,
        *,
        address: str | None = None,
        workers: int | None = None,
        per_worker: int | None = None,
        actor_options: Mapping[str, Any] | None = None,
        init_options: Mapping[str, Any] | None = None,
    ) -> None:
        if importlib.util.find_spec("ray") is None:
            raise RequestError("backend", _INSTALL_HINT)
        self._address = address
        self._workers = _positive("workers", workers)
        self._per_worker = _positive("per_worker", per_worker)
        self._actor_options = dict(actor_options or {})
        self._init_options = dict(init_options or {})
        self._ray: Any = None
        self._slots: list[_Slot] = []
        self._next = 0

    def check(self, engine: Engine | None, config: Config | None) -> None:
        if config is None and not self._slots:
            raise RequestError(
                "config",
                "ray workers build their own engines from a config: call od.distribute(...), "
                "or pass config=",
            )

    async def start(
        self, engine: Engine | None, config: Config | None, concurrency: int, build: Build | None
    ) -> None:
        if self._slots:
            return
        self.check(engine, config)
        if build is None:
            raise RequestError("build", "ray workers need the engine class to build: build=")
        ray = self._connect()
        workers = self._workers or _cluster_cpus(ray, concurrency)
        per_worker = self._per_worker or math.ceil(concurrency / workers)
        options = {
            # Agent tasks wait on I/O: reserve no CPU (so several runs' actors
            # fit at once) and spread the actors over the nodes instead.
            "num_cpus": 0,
            "scheduling_strategy": "SPREAD",
            # A dead actor comes back (its in-flight attempts fail and are retried
            # by the run, which bounds the total); Ray itself retries nothing.
            "max_restarts": -1,
            "max_task_retries": 0,
            "max_concurrency": per_worker,
            **self._actor_options,
        }
        actor_class = ray.remote(**options)(_Worker)
        self._slots = [_Slot(actor_class.remote(config, build)) for _ in range(workers)]

    def _connect(self) -> Any:
        ray = self._ray = importlib.import_module("ray")
        if self._address is not None or not ray.is_initialized():
            # Blocks the loop once, while Ray starts or connects (seconds at most).
            ray.init(address=self._address, **self._init_options)
        return ray

    def pack(self, fn: Any) -> Any:
        # Into the object store once; each attempt passes only the reference.
        return self._ray.put(fn)

    async def attempt(self, packed: Any, item: Any) -> Any:
        slot = self._least_loaded()
        slot.load += 1
        ref = slot.actor.run.remote(packed, item)
        try:
            return await ref
        except asyncio.CancelledError:
            # Awaiting a reference does not own the remote call: stop it explicitly.
            with contextlib.suppress(Exception):
                self._ray.cancel(ref)
            raise
        finally:
            slot.load -= 1

    def _least_loaded(self) -> _Slot:
        if not self._slots:
            raise RuntimeError("RayBackend.attempt() before start()")
        # Rotate the starting point so ties spread over the actors.
        self._next = (self._next + 1) % len(self._slots)
        ring = self._slots[self._next :] + self._slots[: self._next]
        return min(ring, key=lambda slot: slot.load)

    def error(self, exc: Exception) -> BaseException:
        cause = getattr(exc, "cause", None)
        task_error = self._ray is not None and isinstance(exc, self._ray.exceptions.RayTaskError)
        return cause if task_error and isinstance(cause, BaseException) else exc

    def crashed(self, exc: Exception) -> bool:
        if self._ray is None:
            return False
        errors = self._ray.exceptions
        lost = (errors.RayActorError, errors.WorkerCrashedError, errors.NodeDiedError)
        return isinstance(exc, (*lost, errors.ObjectLostError))

    async def aclose(self) -> None:
        slots, self._slots = self._slots, []
        if not slots:
            return
        closing = [slot.actor.close.remote() for slot in slots]
        # Let engines flush (L2 write-behind) first; a dead actor must not block closing.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.gather(*closing, return_exceptions=True), _CLOSE_TIMEOUT)
        for slot in slots:
            with contextlib.suppress(Exception):
                self._ray.kill(slot.actor)

    @property
    def in_flight(self) -> int:
        """Attempts this driver is awaiting on the actors."""
        return sum(slot.load for slot in self._slots)

    def __repr__(self) -> str:
        loads = [slot.load for slot in self._slots]
        return f"RayBackend(address={self._address!r}, workers={len(loads)}, loads={loads})"


def _positive(field: str, value: int | None) -> int | None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise RequestError(field, f"expected an integer >= 1, got {value!r}")
    return value


def _cluster_cpus(ray: Any, concurrency: int) -> int:
    cpus = int(ray.cluster_resources().get("CPU", 1))
    return max(1, min(concurrency, cpus))
