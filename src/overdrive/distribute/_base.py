"""The backend interface: where one attempt of one task runs.

The run (:func:`~overdrive.distribute.distribute`) owns everything common:
pulling items, bounding concurrency, retries with backoff, ordering, metrics.
A backend only starts workers and runs single attempts on them, so a new one
is a few lines. An in-process backend that runs every task on one engine::

    class Inline(Backend):
        name = "inline"

        async def start(self, engine, config, concurrency, build):
            self.engine = engine

        async def attempt(self, packed, item):
            return await packed(self.engine, item)

``pack`` (ship the function once), ``error`` (unwrap a transport's wrapper),
``crashed`` (the worker died, not the task) and ``aclose`` have defaults.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypeAlias, TypeVar

if TYPE_CHECKING:
    from ..config import Config
    from ..monitor import Metrics

__all__ = ["Backend", "Build", "Engine", "TaskFn"]

T = TypeVar("T")
R = TypeVar("R")


class Engine(Protocol):
    """What a run needs of an engine (:class:`~overdrive.Overdrive` is one).

    This package sits below the engine (``od.distribute`` hands it the engine
    and its class), so it knows an engine only by this protocol.
    """

    @property
    def config(self) -> Config: ...

    @property
    def metrics(self) -> Metrics: ...

    async def aclose(self) -> None: ...


#: How a worker builds its own engine from the run's config: the engine's class.
Build: TypeAlias = Callable[["Config"], Engine]

#: An agent task: ``async def task(od, item) -> result``, run on an engine.
TaskFn: TypeAlias = Callable[[Any, T], Awaitable[R]]


class Backend(ABC):
    """Runs attempts of tasks somewhere: in this process, or on a cluster.

    One backend instance may serve several runs in turn: ``start`` is called
    before each run and must be cheap once started. A backend passed to
    ``distribute(backend=...)`` stays the caller's to ``aclose()``; one named
    by a string (``"local"``, ``"ray"``) is built and closed by the run.
    """

    __slots__ = ()

    name: ClassVar[str] = "backend"

    def check(self, engine: Engine | None, config: Config | None) -> None:
        """Raise :class:`~overdrive.RequestError` now if a run could not start."""
        return None  # anything goes, unless a backend says otherwise

    @abstractmethod
    async def start(
        self, engine: Engine | None, config: Config | None, concurrency: int, build: Build | None
    ) -> None:
        """Connect and start workers for up to ``concurrency`` attempts at once.

        A worker without ``engine`` builds its own with ``build(config)``.
        """

    def pack(self, fn: TaskFn[Any, Any]) -> Any:
        """What :meth:`attempt` receives as the task: a cluster ships ``fn`` once here."""
        return fn

    @abstractmethod
    async def attempt(self, packed: Any, item: Any) -> Any:
        """Run one attempt and return its value, or raise; cancelling it stops it."""

    def error(self, exc: Exception) -> BaseException:
        """The error to report for a failed attempt (a transport may wrap the task's)."""
        return exc

    def crashed(self, exc: Exception) -> bool:
        """Whether the attempt failed because its worker died, not because the task raised."""
        return False

    async def aclose(self) -> None:
        """Stop what :meth:`start` started; idempotent."""
        return None  # nothing started that outlives a run
