"""A tool's options: what code gave, over its ``[[tools]]`` entry, checked once.

>>> from overdrive.config import ToolConfig
>>> options = ToolOptions.of(ToolConfig(name="search", rpm=60, attempts=5), rps=2.0)
>>> options.rpm, options.attempts
(120, 5)
"""

from __future__ import annotations

import builtins
import importlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from .._errors import ConfigError
from .._units import parse_duration
from .._validate import check_duration, check_float, check_int
from ..config import ToolConfig

__all__ = ["DEFAULT_ATTEMPTS", "Concurrency", "RetrySpec", "ToolOptions"]

DEFAULT_ATTEMPTS = 3
# An adaptive tool limit's ceiling when none is given: the upstreams' default.
_AUTO_CEILING = 256
Concurrency = int | Literal["auto"]
Retryable = tuple[type[BaseException], ...]
RetrySpec = type[BaseException] | str | Sequence[type[BaseException] | str]


@dataclass(slots=True, frozen=True)
class ToolOptions:
    """The settled options of one tool; ``plain`` when it has nothing to pace, bound or cache."""

    rpm: int | None = None
    concurrency: Concurrency | None = None
    timeout: float | None = None
    retry: Retryable = ()
    attempts: int = DEFAULT_ATTEMPTS
    cache: float | None = None
    priority: int = 0
    queue_timeout: float | None = None
    max_concurrency: int | None = None
    shared: bool = True

    @property
    def plain(self) -> bool:
        """Nothing between the caller and the function but the metrics."""
        return (
            self.rpm is None
            and self.concurrency is None
            and self.timeout is None
            and self.cache is None
            and not self.retry
        )

    @classmethod
    def of(
        cls,
        entry: ToolConfig | None = None,
        *,
        rpm: int | None = None,
        rps: float | None = None,
        concurrency: Concurrency | None = None,
        timeout: float | str | None = None,
        retry: RetrySpec | None = None,
        attempts: int | None = None,
        cache: float | str | None = None,
        priority: int | None = None,
        queue_timeout: float | str | None = None,
        max_concurrency: int | None = None,
        shared: bool | None = None,
    ) -> ToolOptions:
        """Code's options over ``entry``'s; a bad one raises :class:`ConfigError` naming it."""
        if rpm is not None and rps is not None:
            raise ConfigError("rps", "give rpm or rps, not both")
        if entry is not None:
            if rpm is None and rps is None:  # rpm and rps are one setting
                rpm, rps = entry.rpm, entry.rps
            concurrency = entry.concurrency if concurrency is None else concurrency
            timeout = entry.timeout if timeout is None else timeout
            retry = entry.retry if retry is None else retry
            attempts = entry.attempts if attempts is None else attempts
            cache = entry.cache if cache is None else cache
            priority = entry.priority if priority is None else priority
            queue_timeout = entry.queue_timeout if queue_timeout is None else queue_timeout
            max_concurrency = entry.max_concurrency if max_concurrency is None else max_concurrency
            shared = entry.shared_limits if shared is None else shared
        settled = _concurrency(concurrency)
        return cls(
            rpm=_rpm(rpm, rps),
            concurrency=settled,
            timeout=_seconds("timeout", timeout),
            retry=_retryable(() if retry is None else retry),
            attempts=check_int("attempts", DEFAULT_ATTEMPTS if attempts is None else attempts, 1),
            cache=_seconds("cache", cache),
            priority=check_int("priority", 0 if priority is None else priority, None),
            queue_timeout=_seconds("queue_timeout", queue_timeout, positive=False),
            max_concurrency=_ceiling(settled, max_concurrency),
            shared=True if shared is None else shared,
        )

    @property
    def concurrency_bounds(self) -> tuple[int, int] | None:
        """Where the optimizer (and an adaptive limit) may move the concurrency; None if unbounded.

        >>> ToolOptions.of(concurrency=4).concurrency_bounds
        (1, 4)
        >>> ToolOptions.of(concurrency="auto").concurrency_bounds
        (1, 256)
        """
        if self.concurrency is None:
            return None
        if self.max_concurrency is not None:
            return 1, self.max_concurrency
        return 1, _AUTO_CEILING if self.concurrency == "auto" else self.concurrency


def _rpm(rpm: int | None, rps: float | None) -> int | None:
    """Requests per minute; ``rps`` is held to the nearest whole rpm (at least one)."""
    if rps is not None:
        per_second = check_float("rps", rps, 0.0, open_low=True, finite=True)
        return max(1, round(per_second * 60))
    return None if rpm is None else check_int("rpm", rpm, 1)


def _concurrency(value: Concurrency | None) -> Concurrency | None:
    if value is None or value == "auto":
        return value
    return check_int("concurrency", value, 1)


def _ceiling(concurrency: Concurrency | None, ceiling: int | None) -> int | None:
    if ceiling is None:
        return None
    if concurrency is None:
        raise ConfigError("max_concurrency", "needs a concurrency to bound")
    ceiling = check_int("max_concurrency", ceiling, 1)
    if isinstance(concurrency, int) and ceiling < concurrency:
        raise ConfigError(
            "max_concurrency", f"{ceiling} is below the concurrency {concurrency} it bounds"
        )
    return ceiling


def _seconds(field: str, value: float | str | None, *, positive: bool = True) -> float | None:
    if value is None:
        return None
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        raise ConfigError(field, str(exc)) from None
    return check_duration(field, seconds, positive=positive)


def _retryable(value: RetrySpec) -> Retryable:
    items = (value,) if isinstance(value, type | str) else tuple(value)
    return tuple(_exception(item) for item in items)


def _exception(item: object) -> type[BaseException]:
    """An exception type as given, or named: a builtin, or ``module.Name``."""
    found = _named(item) if isinstance(item, str) else item
    if not (isinstance(found, type) and issubclass(found, BaseException)):
        raise ConfigError("retry", f"expected exception types, got {item!r}")
    return found


def _named(name: str) -> object:
    module, _, attribute = name.rpartition(".")
    try:
        return getattr(importlib.import_module(module) if module else builtins, attribute)
    except (ImportError, AttributeError, ValueError):
        raise ConfigError("retry", f"no exception named {name!r}") from None
