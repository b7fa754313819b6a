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
from collections.abc import Callable, Hashable
from typing import Any, ParamSpec, TypeVar, cast

from .._errors import RequestError
from .._json import dumps_canonical
from ..monitor import Counter, Histogram
from ..monitor.names import TOOL_CALLS, TOOL_DURATION
from ._box import Toolbox
from ._options import ToolOptions
from ._runner import ToolRunner

__all__ = ["runner_of", "tool", "tool_key"]

P = ParamSpec("P")
R = TypeVar("R")


def tool(
    name: str | None = None, *, box: Toolbox | None = None, **options: Any
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorate a tool function; ``options`` are :meth:`ToolOptions.of`'s.

    ``rpm``/``rps`` pace it (calls wait their turn, at most ``queue_timeout``,
    higher ``priority`` first), ``concurrency`` bounds it (an int or
    ``"auto"``; ``max_concurrency`` is how far the optimizer may raise it),
    ``timeout`` bounds each attempt, ``retry`` names the exceptions retried
    (and ``TimeoutError`` with a timeout) up to ``attempts`` in all, and
    ``cache`` (a TTL) caches answers and coalesces identical calls in flight.
    The ``[[tools]]`` entry of its name gives what ``options`` leave out;
    functions decorated under one name share its limits (see ``_box.py``).
    ``box`` is where the tool's runner lives: an engine's (``od.tool``), or
    one of its own.
    """
    box = box or Toolbox()
    ToolOptions.of(None, **options)  # a bad option fails here, not at the first call

    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        label = name or fn.__name__
        settled = ToolOptions.of(box.entry(label), **options)
        runner = box.runner(label, settled)
        keys = _Keys(box.namespace, label, fn) if settled.cache is not None else None
        wrapper: Any = (
            _async_wrapper(fn, runner, keys, box, settled.priority)
            if inspect.iscoroutinefunction(fn)
            else _sync_wrapper(fn, runner, keys, box, settled.priority)
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


class _Keys:
    """Cache keys of one tool: its namespace, name and arguments (``self`` left out)."""

    __slots__ = ("_name", "_namespace", "_skip_self")

    def __init__(self, namespace: str, name: str, fn: Callable[..., Any]) -> None:
        self._namespace, self._name = namespace, name
        params = list(inspect.signature(fn).parameters)
        self._skip_self = bool(params) and params[0] in ("self", "cls") and "." in fn.__qualname__

    def of(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Hashable:
        shown = args[1:] if self._skip_self else args
        return tool_key(self._namespace, self._name, list(shown), kwargs)


def tool_key(namespace: str, name: str, args: list[Any], kwargs: dict[str, Any]) -> bytes:
    """The cache and coalescing key of one call of tool ``name`` in ``namespace``."""
    try:
        material = dumps_canonical([namespace, "tool", name, args, kwargs])
    except TypeError as exc:
        raise RequestError("cache", f"tool arguments cannot form a cache key ({exc})") from None
    return hashlib.blake2b(material, digest_size=16).digest()


def _async_wrapper(
    fn: Callable[..., Any], runner: ToolRunner, keys: _Keys | None, box: Toolbox, priority: int
) -> Callable[..., Any]:
    if runner.options.plain:
        return _plain_async(fn, runner)
    home = box.home

    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        key = None if keys is None else keys.of(args, kwargs)
        # One compare on the fast path; a loop other than the tools' home: see below.
        if asyncio.get_running_loop() is home.loop or await home.arrive():
            return await runner.call(lambda: fn(*args, **kwargs), key, priority)
        caller = asyncio.get_running_loop()
        attempt = functools.partial(_on_loop, caller, fn, args, kwargs)
        return await home.forward(lambda: runner.call(attempt, key, priority))

    return wrapper


async def _on_loop(
    loop: asyncio.AbstractEventLoop,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Any:
    """``fn`` run on the caller's ``loop`` while the limits wait on the home loop.

    A tool's coroutine may hold the caller's loop-bound things (a session, a
    lock), so it runs there; cancelling this (a timeout) cancels it there.
    """
    return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(fn(*args, **kwargs), loop))


def _sync_wrapper(
    fn: Callable[..., Any], runner: ToolRunner, keys: _Keys | None, box: Toolbox, priority: int
) -> Callable[..., Any]:
    if runner.options.plain:
        return _plain_sync(fn, runner)
    submit = box.home.submit  # the engine's loop, or a loop thread of the box's own

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        key = None if keys is None else keys.of(args, kwargs)
        attempt = functools.partial(asyncio.to_thread, fn, *args, **kwargs)
        return submit(runner.call(attempt, key, priority)).result()

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
