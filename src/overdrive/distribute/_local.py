"""The local backend: tasks as coroutines in this process, all on one engine."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from .._errors import RequestError
from ._base import Backend

if TYPE_CHECKING:
    from ..config import Config
    from ._base import Build, Engine

__all__ = ["LocalBackend"]

_BUILD_HINT = "without engine=, pass the engine class to build from the config: build=Overdrive"


class LocalBackend(Backend):
    """Runs every task on this process's event loop, sharing one engine.

    Sharing the engine is the point: concurrent agent tasks hit one cache,
    coalesce identical calls and queue behind one set of rate limits. The run
    bounds how many tasks are in flight; this backend only awaits them.

    >>> run = distribute(agent, questions, engine=od)  # doctest: +SKIP

    Without an engine the backend builds one from ``config`` and closes it
    when the backend is closed.
    """

    __slots__ = ("_engine", "_owned")

    name: ClassVar[str] = "local"

    def __init__(self) -> None:
        self._engine: Engine | None = None
        self._owned = False

    def check(self, engine: Engine | None, config: Config | None) -> None:
        if engine is None and config is None and self._engine is None:
            raise RequestError(
                "engine",
                "the local backend runs tasks on an engine: call od.distribute(...), "
                "or pass engine= or config=",
            )

    async def start(
        self, engine: Engine | None, config: Config | None, concurrency: int, build: Build | None
    ) -> None:
        if engine is not None and not self._owned:
            self._engine = engine
        elif self._engine is None and config is not None:
            if build is None:
                raise RequestError("build", _BUILD_HINT)
            self._engine = build(config)
            self._owned = True
        self.check(self._engine, None)

    async def attempt(self, packed: Any, item: Any) -> Any:
        return await packed(self._engine, item)

    async def aclose(self) -> None:
        engine, self._engine = self._engine, None
        if engine is not None and self._owned:
            self._owned = False
            await engine.aclose()

    def __repr__(self) -> str:
        return f"LocalBackend(engine={self._engine!r}, owned={self._owned})"
