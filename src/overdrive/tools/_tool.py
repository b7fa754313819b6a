"""``@tool``: pace, bound, time out, retry, cache and measure a tool function.

>>> import asyncio
>>> from overdrive.tools import tool
>>> @tool("double", retry=(ConnectionError,))
... async def double(x: int) -> int:
...     return 2 * x
>>> asyncio.run(double(21))
42

An async function stays async. A sync function stays sync: with no option
but the metrics it runs inline; otherwise each call runs on the engine's
event loop (a loop thread of its own when none runs elsewhere), the
function in a worker thread, and the caller's thread waits. So a sync tool
must not be called from inside the engine's own loop (``EngineLoopError``
says so): call it there through ``asyncio.to_thread``. A timeout stops the
wait for a sync function, not the thread already running it.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import inspect
import random
from collections.abc import Callable, Coroutine, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any, ParamSpec, TypeVar, cast

from .._clock import Clock, SystemClock
from .._errors import RequestError
from .._home import HomeLoop
from .._json import dumps_canonical
from ..cache import CacheStage, MemoryCache, TieredCache
from ..config import ToolConfig
from ..flow import RetryBudget
from ..monitor import Counter, Histogram, Metrics
from ..monitor.names import TOOL_CALLS, TOOL_DURATION
from ._options import ToolOptions
from ._runner import ToolRunner

__all__ = ["ToolParts", "runner_of", "tool"]

P = ParamSpec("P")
R = TypeVar("R")
Submit = Callable[[Coroutine[Any, Any, Any]], "Any"]
_OWN_CACHE_BYTES = 64 * 1024 * 1024


@dataclass(slots=True)
class ToolParts:
    """What a tool borrows from its engine; a bare ``ToolParts()`` makes its own.

    ``submit`` runs a sync caller's work on the engine's loop; with one (on
    an engine) a ``stage`` of None means its cache is off, and a tool asking
    for a cache is refused; without one a cached tool gets a memory cache.
    """

    clock: Clock = field(default_factory=SystemClock)
    metrics: Metrics | None = None
    stage: CacheStage[Any] | None = None
    namespace: str = ""
    entries: Sequence[ToolConfig] = ()
    rng: random.Random = field(default_factory=random.Random)
    submit: Submit | None = None
    budget: tuple[float, float] = (0.2, 1.0)  # [retry] budget_ratio, budget_min_per_second


def tool(
    name: str | None = None, *, parts: ToolParts | None = None, **options: Any
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorate a tool function; ``options`` are :meth:`ToolOptions.of`'s.

    ``rpm``/``rps`` pace it (calls wait their turn, at most ``queue_timeout``;
    each tool has its queue of its own, so ``priority`` orders nothing yet),
    ``concurrency`` bounds it (an int or ``"auto"``),
    ``timeout`` bounds each attempt, ``retry`` names the exceptions retried
    (and ``TimeoutError`` with a timeout) up to ``attempts`` in all, and
    ``cache`` (a TTL) caches answers and coalesces identical calls in flight.
    The ``[[tools]]`` entry of its name gives what ``options`` leave out.
    """
    parts = parts or ToolParts()
    ToolOptions.of(None, **options)  # a bad option fails here, not at the first call

    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        label = name or fn.__name__
        entry = next((e for e in parts.entries if e.name == label), None)
        settled = ToolOptions.of(entry, **options)
        runner = _runner(label, settled, parts)
        keys = _Keys(parts.namespace, label, fn) if settled.cache is not None else None
        wrapper: Any = (
            _async_wrapper(fn, runner, keys)
            if inspect.iscoroutinefunction(fn)
            else _sync_wrapper(fn, runner, keys, parts)
        )
        functools.update_wrapper(wrapper, fn)
        wrapper.tool = runner
        return cast("Callable[P, R]", wrapper)

    return decorate


def runner_of(fn: Callable[..., Any]) -> ToolRunner:
    """The runner behind a ``@tool`` function: its limits, options and metrics, typed.

    >>> @tool("triple")
    ... async def triple(x: int) -> int:
    ...     return 3 * x
    >>> runner_of(triple).name
    'triple'
    """
    runner = getattr(fn, "tool", None)
    if not isinstance(runner, ToolRunner):
        raise TypeError(f"{fn!r} is not a @tool function")
    return runner


def _runner(name: str, options: ToolOptions, parts: ToolParts) -> ToolRunner:
    stage = parts.stage
    if options.cache is not None and stage is None:
        if parts.submit is not None:
            raise RequestError("cache", "the engine's cache is disabled ([cache] enabled = false)")
        stage = CacheStage(TieredCache(MemoryCache(_OWN_CACHE_BYTES, clock=parts.clock)))
    if parts.metrics is None:
        parts.metrics = Metrics(clock=parts.clock)
    ratio, floor = parts.budget
    budget = RetryBudget(ratio, floor, clock=parts.clock)
    return ToolRunner(
        name,
        options,
        clock=parts.clock,
        metrics=parts.metrics,
        stage=stage,
        budget=budget,
        rng=parts.rng,
    )


class _Keys:
    """Cache keys of one tool: its namespace, name and arguments (``self`` left out)."""

    __slots__ = ("_prefix", "_skip_self")

    def __init__(self, namespace: str, name: str, fn: Callable[..., Any]) -> None:
        self._prefix = [namespace, "tool", name]
        params = list(inspect.signature(fn).parameters)
        self._skip_self = bool(params) and params[0] in ("self", "cls") and "." in fn.__qualname__

    def of(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Hashable:
        shown = args[1:] if self._skip_self else args
        try:
            material = dumps_canonical([*self._prefix, list(shown), kwargs])
        except TypeError as exc:
            raise RequestError("cache", f"tool arguments cannot form a cache key ({exc})") from None
        return hashlib.blake2b(material, digest_size=16).digest()


def _async_wrapper(
    fn: Callable[..., Any], runner: ToolRunner, keys: _Keys | None
) -> Callable[..., Any]:
    if runner.options.plain:
        return _plain_async(fn, runner)

    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        key = None if keys is None else keys.of(args, kwargs)
        return await runner.call(lambda: fn(*args, **kwargs), key)

    return wrapper


def _sync_wrapper(
    fn: Callable[..., Any], runner: ToolRunner, keys: _Keys | None, parts: ToolParts
) -> Callable[..., Any]:
    if runner.options.plain:
        return _plain_sync(fn, runner)
    submit = parts.submit or HomeLoop().submit  # without an engine: a loop thread of its own

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        key = None if keys is None else keys.of(args, kwargs)
        attempt = functools.partial(asyncio.to_thread, fn, *args, **kwargs)
        return submit(runner.call(attempt, key)).result()

    return wrapper


# The plain wrappers repeat their few lines on purpose: each shared call
# would cost every call of a tool that asked for nothing but its metrics.


def _plain_meters(runner: ToolRunner) -> tuple[Callable[[], float], Counter, Counter, Histogram]:
    """The clock and the series a plain wrapper reports to, looked up once."""
    metrics = runner.metrics
    ok = metrics.counter(TOOL_CALLS, tool=runner.name, outcome="ok")
    error = metrics.counter(TOOL_CALLS, tool=runner.name, outcome="error")
    return runner.clock.now, ok, error, metrics.histogram(TOOL_DURATION, tool=runner.name)


def _plain_async(fn: Callable[..., Any], runner: ToolRunner) -> Callable[..., Any]:
    now, ok, error, duration = _plain_meters(runner)

    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = now()
        try:
            value = await fn(*args, **kwargs)
        except BaseException:
            error.inc()
            raise
        finally:
            duration.observe(now() - started)
        ok.inc()
        return value

    return wrapper


def _plain_sync(fn: Callable[..., Any], runner: ToolRunner) -> Callable[..., Any]:
    now, ok, error, duration = _plain_meters(runner)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = now()
        try:
            value = fn(*args, **kwargs)
        except BaseException:
            error.inc()
            raise
        finally:
            duration.observe(now() - started)
        ok.inc()
        return value

    return wrapper
