"""``measure``: time a block or a function into a seconds histogram."""

from __future__ import annotations

import functools
import inspect
import time
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, cast

from .._clock import SystemClock

if TYPE_CHECKING:
    from ._metrics import Metrics
    from ._series import Histogram

__all__ = ["Measure", "measured_names"]

P = ParamSpec("P")
# name -> (histogram name, error counter name); names are few and fixed in code.
_NAMES: dict[str, tuple[str, str]] = {}
R = TypeVar("R")


def measured_names(name: str) -> tuple[str, str]:
    """The histogram and error-counter names ``measure(name)`` reports to.

    A missing ``_seconds`` unit is appended, so every duration is named by unit.

    >>> measured_names("tool_call")
    ('tool_call_seconds', 'tool_call_errors_total')
    >>> measured_names("tool_call_seconds")
    ('tool_call_seconds', 'tool_call_errors_total')
    """
    base = name.removesuffix("_seconds")
    return f"{base}_seconds", f"{base}_errors_total"


class Measure:
    """Times a block (``with`` / ``async with``) or every call of a function (decorator).

    Durations (read from the registry's clock) go to the histogram
    ``<name>_seconds``, failures included; an exception also counts in
    ``<name>_errors_total`` with an ``error`` label naming its type.
    Cancellation is timed but not counted as an error.

    >>> from overdrive.monitor import Metrics
    >>> metrics = Metrics()
    >>> with metrics.measure("parse", op="json"):
    ...     pass
    >>> metrics.histogram("parse_seconds", op="json").count
    1
    >>> @metrics.measure("lookup")
    ... def lookup(key: str) -> str:
    ...     return key.upper()
    >>> lookup("a"), metrics.histogram("lookup_seconds").count
    ('A', 1)

    A ``with`` block uses the object it was given: write ``with m.measure(...)``
    each time rather than sharing one across concurrent tasks. A decorated
    function times each call on its own.
    """

    __slots__ = ("_errors", "_histogram", "_labels", "_metrics", "_now", "_started", "elapsed")

    def __init__(self, metrics: Metrics, name: str, labels: dict[str, str]) -> None:
        names = _NAMES.get(name)
        if names is None:
            names = _NAMES[name] = measured_names(name)
        self._errors = names[1]
        self._histogram: Histogram = metrics.histogram(names[0], **labels)
        self._metrics = metrics
        self._labels = labels
        clock = metrics.clock
        # The system clock is read directly: its method call would add ~40 ns twice.
        self._now = time.monotonic if isinstance(clock, SystemClock) else clock.now
        self._started = 0.0
        self.elapsed = 0.0  # seconds of the last finished ``with`` block

    def __enter__(self) -> Measure:
        self._started = self._now()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.elapsed = self._now() - self._started
        self._record(self.elapsed, kind)

    async def __aenter__(self) -> Measure:
        return self.__enter__()

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.__exit__(kind, error, traceback)

    def _record(self, seconds: float, kind: type[BaseException] | None) -> None:
        self._histogram.observe(seconds)
        if kind is not None and issubclass(kind, Exception):
            labels = {**self._labels, "error": kind.__name__}
            self._metrics.counter(self._errors, **labels).inc()

    def __call__(self, function: Callable[P, R]) -> Callable[P, R]:
        """Decorate ``function`` (sync or async) so every call is timed."""
        if inspect.iscoroutinefunction(function):
            return cast(Callable[P, R], self._wrap_async(function))
        return self._wrap_sync(function)

    def _wrap_sync(self, function: Callable[P, R]) -> Callable[P, R]:
        now, record = self._now, self._record

        @functools.wraps(function)
        def timed(*args: P.args, **kwargs: P.kwargs) -> R:
            started = now()
            try:
                result = function(*args, **kwargs)
            except BaseException as exc:
                record(now() - started, type(exc))
                raise
            record(now() - started, None)
            return result

        return timed

    def _wrap_async(self, function: Callable[P, Any]) -> Callable[P, Any]:
        now, record = self._now, self._record

        @functools.wraps(function)
        async def timed(*args: P.args, **kwargs: P.kwargs) -> Any:
            started = now()
            try:
                result = await function(*args, **kwargs)
            except BaseException as exc:
                record(now() - started, type(exc))
                raise
            record(now() - started, None)
            return result

        return timed

    def __repr__(self) -> str:
        return f"Measure({self._histogram!r}, errors={self._errors})"
