"""Running agent tasks over many items: bounded, retried, streamed back as they finish."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Generic, Literal, TypeVar, cast

from .._clock import Clock, SystemClock
from .._errors import RequestError
from ..config import Config, load_config
from ..flow import Backoff
from ..monitor import Metrics
from ..monitor.names import DISTRIBUTE_RETRIES, DISTRIBUTE_TASK_DURATION, DISTRIBUTE_TASKS
from ._base import Backend, Build, Engine, TaskFn
from ._local import LocalBackend

__all__ = ["DistributedRun", "TaskResult", "distribute"]

T = TypeVar("T")
R = TypeVar("R")

BackendName = Literal["local", "ray"]
ConfigSource = str | Path | Mapping[str, Any] | Config

# Retries wait at most this long, whatever the base.
_BACKOFF_CAP = 10.0


@dataclass(frozen=True, slots=True)
class TaskResult(Generic[T, R]):
    """How one item's task ended: ``value`` if ``ok``, else the last ``error``.

    ``index`` is the item's position in the input; ``attempts`` counts every
    try, so ``attempts > 1`` means the task was retried.
    """

    index: int
    item: T
    value: R | None = None
    error: BaseException | None = None
    attempts: int = 1

    @property
    def ok(self) -> bool:
        return self.error is None

    def unwrap(self) -> R:
        """The value, or raise the task's error."""
        if self.error is not None:
            raise self.error
        return cast(R, self.value)


class _End:
    """Put on the results queue once no worker is left; carries a failure of the run."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException | None = None) -> None:
        self.error = error


class DistributedRun(Generic[T, R]):
    """A run of one task over many items, yielding :class:`TaskResult` s as they finish.

    Nothing starts until the first ``async for`` step (or :meth:`results`).
    Leaving ``async with`` (or calling :meth:`aclose`) cancels the tasks still
    running; a plain ``break`` out of ``async for`` does not, so use the block
    when you may stop early::

        async with od.distribute(agent, questions, concurrency=32) as run:
            async for result in run:
                if result.ok and good_enough(result.value):
                    break          # the other tasks are cancelled on leaving the block

    Finished results wait in a queue of ``concurrency`` places: a consumer
    that falls behind pauses the workers instead of piling results up.
    """

    __slots__ = (
        "_backend",
        "_backoff",
        "_build",
        "_clock",
        "_concurrency",
        "_config",
        "_counts",
        "_engine",
        "_fail_fast",
        "_fn",
        "_items",
        "_metrics",
        "_next_index",
        "_ordered",
        "_owns_backend",
        "_queue",
        "_retries",
        "_state",
        "_supervisor",
        "_waiting",
    )

    def __init__(
        self,
        fn: TaskFn[T, R],
        items: Iterable[T],
        *,
        backend: Backend,
        owns_backend: bool,
        engine: Engine | None,
        build: Build | None,
        config: Config | None,
        concurrency: int,
        retries: int,
        backoff: float,
        ordered: bool,
        fail_fast: bool,
        clock: Clock,
    ) -> None:
        self._fn = fn
        self._items = items
        self._backend = backend
        self._owns_backend = owns_backend
        self._engine = engine
        self._build = build
        self._config = config
        self._concurrency = concurrency
        self._retries = retries
        self._backoff = Backoff(backoff, max(backoff, _BACKOFF_CAP))
        self._ordered = ordered
        self._fail_fast = fail_fast
        self._clock = clock
        self._metrics = engine.metrics if engine is not None else Metrics()
        self._queue: asyncio.Queue[TaskResult[T, R] | _End] = asyncio.Queue(concurrency)
        self._supervisor: asyncio.Task[None] | None = None
        self._waiting: dict[int, TaskResult[T, R]] = {}  # finished early, when ordered
        self._next_index = 0
        self._counts = {"running": 0, "done": 0, "failed": 0, "retried": 0}
        self._state: Literal["new", "running", "closed"] = "new"

    # -- consuming -------------------------------------------------------------

    def __aiter__(self) -> DistributedRun[T, R]:
        return self

    async def __anext__(self) -> TaskResult[T, R]:
        if self._state == "new":
            await self._start()
        if self._state == "closed" and not self._waiting:
            raise StopAsyncIteration
        try:
            result = await self._next_result()
        except BaseException:  # the run failed, or its consumer was cancelled: stop it
            await self.aclose()
            raise
        if result is None:
            await self.aclose()
            raise StopAsyncIteration
        if self._fail_fast and result.error is not None:
            await self.aclose()
            raise result.error
        return result

    async def results(self) -> list[TaskResult[T, R]]:
        """Wait for every task; their results (those not yet yielded) in input order."""
        finished = [result async for result in self]
        return sorted(finished, key=lambda result: result.index)

    async def values(self) -> list[R]:
        """Wait for every task; their values in input order, or the first error by index."""
        return [result.unwrap() for result in await self.results()]

    async def _next_result(self) -> TaskResult[T, R] | None:
        while True:
            if self._ordered and self._next_index in self._waiting:
                self._next_index += 1
                return self._waiting.pop(self._next_index - 1)
            got = await self._queue.get()
            if isinstance(got, _End):
                return self._ended(got)
            if not self._ordered:
                return got
            self._waiting[got.index] = got

    def _ended(self, end: _End) -> TaskResult[T, R] | None:
        if end.error is not None:
            raise end.error
        # Only holes can remain (never when every item reported); hand out the rest.
        if self._waiting:
            self._next_index = min(self._waiting)
            return self._waiting.pop(self._next_index)
        return None

    # -- running ---------------------------------------------------------------

    async def _start(self) -> None:
        self._state = "running"
        try:
            await self._backend.start(self._engine, self._config, self._concurrency, self._build)
            packed = self._backend.pack(self._fn)
        except BaseException:
            await self.aclose()
            raise
        self._supervisor = asyncio.create_task(self._supervise(packed))

    async def _supervise(self, packed: Any) -> None:
        source = enumerate(self._items)
        try:
            async with asyncio.TaskGroup() as group:
                for _ in range(self._concurrency):
                    group.create_task(self._work(source, packed))
        except Exception as exc:  # the items iterator raised: end the run with it
            await self._queue.put(_End(_first(exc)))
        else:
            await self._queue.put(_End())

    async def _work(self, source: Iterator[tuple[int, T]], packed: Any) -> None:
        # Every worker pulls from the one iterator, so items may be a lazy generator.
        for index, item in source:
            self._counts["running"] += 1
            try:
                result = await self._run_task(index, item, packed)
            finally:
                self._counts["running"] -= 1
            await self._queue.put(result)

    async def _run_task(self, index: int, item: T, packed: Any) -> TaskResult[T, R]:
        started = self._clock.now()
        attempts = 0
        while True:
            attempts += 1
            try:
                value = await self._backend.attempt(packed, item)
            except Exception as exc:
                if attempts > self._retries:
                    error = self._backend.error(exc)
                    return self._finished(
                        TaskResult(index, item, error=error, attempts=attempts), started
                    )
                await self._before_retry(exc, attempts)
            else:
                return self._finished(TaskResult(index, item, value, attempts=attempts), started)

    async def _before_retry(self, exc: Exception, attempts: int) -> None:
        reason = "crash" if self._backend.crashed(exc) else "error"
        self._counts["retried"] += 1
        self._metrics.counter(DISTRIBUTE_RETRIES, backend=self._backend.name, reason=reason).inc()
        await self._clock.sleep(self._backoff.delay(attempts - 1))

    def _finished(self, result: TaskResult[T, R], started: float) -> TaskResult[T, R]:
        name = self._backend.name
        outcome = "ok" if result.ok else "failed"
        self._counts["done" if result.ok else "failed"] += 1
        self._metrics.counter(DISTRIBUTE_TASKS, backend=name, outcome=outcome).inc()
        self._metrics.histogram(DISTRIBUTE_TASK_DURATION, backend=name).observe(
            self._clock.now() - started
        )
        return result

    # -- lifecycle -------------------------------------------------------------

    async def aclose(self) -> None:
        """Cancel the tasks still running and stop a backend the run started; idempotent."""
        if self._state == "closed":
            return
        self._state = "closed"
        supervisor, self._supervisor = self._supervisor, None
        if supervisor is not None and not supervisor.done():
            supervisor.cancel()
            await asyncio.gather(supervisor, return_exceptions=True)
        if self._owns_backend:
            await self._backend.aclose()

    async def __aenter__(self) -> DistributedRun[T, R]:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    @property
    def counts(self) -> dict[str, int]:
        """Tasks ``running`` now, ``done`` (ok) and ``failed`` so far, and attempts ``retried``."""
        return dict(self._counts)

    @property
    def metrics(self) -> Metrics:
        """Where the run reports: the engine's metrics, or its own without an engine."""
        return self._metrics

    def __repr__(self) -> str:
        counts = ", ".join(f"{name}={value}" for name, value in self._counts.items())
        return (
            f"DistributedRun(backend={self._backend.name!r}, state={self._state}, "
            f"concurrency={self._concurrency}, {counts})"
        )


def _first(error: Exception) -> BaseException:
    """The first real error inside (possibly nested) exception groups."""
    while isinstance(error, BaseExceptionGroup) and error.exceptions:
        inner = error.exceptions[0]
        if not isinstance(inner, Exception):
            return inner
        error = inner
    return error


def distribute(
    fn: TaskFn[T, R],
    items: Iterable[T],
    *,
    engine: Engine | None = None,
    build: Build | None = None,
    backend: BackendName | Backend = "local",
    concurrency: int = 16,
    retries: int = 2,
    backoff: float = 0.1,
    ordered: bool = False,
    fail_fast: bool = False,
    config: ConfigSource | None = None,
    clock: Clock | None = None,
) -> DistributedRun[T, R]:
    """Run ``await fn(od, item)`` for every item, ``concurrency`` at a time, here or on Ray.

    ``fn`` is an agent task: it gets an engine and calls ``await od.chat(...)``
    through the pipeline. Results stream back as tasks finish (in input order
    with ``ordered=True``), each a :class:`TaskResult` with the item's index,
    its value or error, and its attempts. A task that raises, or whose worker
    dies, is tried again up to ``retries`` times after a full-jitter backoff
    from ``backoff`` seconds; then its error is reported with its item and the
    others go on, unless ``fail_fast`` makes the run raise it and cancel them.

    >>> async def answer(od, question):                      # doctest: +SKIP
    ...     reply = await od.chat(model="gpt-4o-mini",
    ...                           messages=[{"role": "user", "content": question}])
    ...     return reply["choices"][0]["message"]["content"]
    >>> async for result in od.distribute(answer, questions, concurrency=32):  # doctest: +SKIP
    ...     print(result.index, result.value if result.ok else result.error)
    >>> answers = await od.distribute(answer, questions, backend="ray").values()  # doctest: +SKIP

    ``backend="local"`` runs the tasks on this event loop on ``engine`` (one
    cache, one set of limits). ``backend="ray"`` runs them on Ray actors that
    each build an engine from ``config`` (default: ``engine.config``); give the
    config a ``redis_url`` so they share cache and limits. Pass a
    :class:`RayBackend` for its options (cluster address, workers) or to keep
    its actors across runs. Workers without ``engine`` build their own with
    ``build(config)``: the engine's class, which ``od.distribute`` passes (a
    direct call passes ``build=Overdrive``).
    """
    _check_options(fn, items, concurrency, retries, backoff)
    chosen, owned = _backend(backend)
    resolved = load_config(config) if config is not None else None
    if resolved is None and engine is not None:
        resolved = engine.config
    chosen.check(engine, resolved)
    if build is None and engine is not None:
        build = type(engine)
    return DistributedRun(
        fn,
        items,
        backend=chosen,
        owns_backend=owned,
        engine=engine,
        build=build,
        config=resolved,
        concurrency=concurrency,
        retries=retries,
        backoff=backoff,
        ordered=ordered,
        fail_fast=fail_fast,
        clock=clock or SystemClock(),
    )


def _check_options(
    fn: object, items: object, concurrency: object, retries: object, backoff: object
) -> None:
    if not _is_async_callable(fn):
        raise RequestError("fn", f"expected an async function `async def fn(od, item)`, got {fn!r}")
    if isinstance(items, str | bytes) or not isinstance(items, Iterable):
        raise RequestError("items", f"expected an iterable of items, got {type(items).__name__}")
    _check_int("concurrency", concurrency, minimum=1)
    _check_int("retries", retries, minimum=0)
    if isinstance(backoff, bool) or not isinstance(backoff, int | float) or not backoff >= 0:
        raise RequestError("backoff", f"expected seconds >= 0, got {backoff!r}")


def _is_async_callable(fn: object) -> bool:
    call = getattr(fn, "__call__", None)  # noqa: B004 - an async __call__ counts too
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(call)


def _check_int(field: str, value: object, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise RequestError(field, f"expected an integer >= {minimum}, got {value!r}")


def _backend(backend: BackendName | Backend) -> tuple[Backend, bool]:
    """The backend to use, and whether the run owns (and so closes) it."""
    if isinstance(backend, Backend):
        return backend, False
    if backend == "local":
        return LocalBackend(), True
    if backend == "ray":
        from ._ray import RayBackend

        return RayBackend(), True
    raise RequestError("backend", f"expected 'local', 'ray' or a Backend, got {backend!r}")
