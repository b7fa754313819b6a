"""A tool's options: what code gave, over its ``[[tools]]`` entry, checked once.

>>> from overdrive.config import ToolConfig
>>> options = ToolOptions.of(ToolConfig(name="search", rpm=60, attempts=5), rps=2.0)
>>> options.rpm, options.attempts
(120, 5)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .._errors import ConfigError
from .._units import parse_duration
from .._validate import check_duration, check_float, check_int
from ..config import ToolConfig

__all__ = ["DEFAULT_ATTEMPTS", "Concurrency", "ToolOptions"]

DEFAULT_ATTEMPTS = 3
Concurrency = int | Literal["auto"]
Retryable = tuple[type[BaseException], ...]


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
        retry: type[BaseException] | Retryable = (),
        attempts: int | None = None,
        cache: float | str | None = None,
        priority: int = 0,
        queue_timeout: float | str | None = None,
    ) -> ToolOptions:
        """Code's options over ``entry``'s; a bad one raises :class:`ConfigError` naming it."""
        if rpm is not None and rps is not None:
            raise ConfigError("rps", "give rpm or rps, not both")
        if entry is not None:
            if rpm is None and rps is None:  # rpm and rps are one setting
                rpm, rps = entry.rpm, entry.rps
            concurrency = entry.concurrency if concurrency is None else concurrency
            timeout = entry.timeout if timeout is None else timeout
            attempts = entry.attempts if attempts is None else attempts
            cache = entry.cache if cache is None else cache
        return cls(
            rpm=_rpm(rpm, rps),
            concurrency=_concurrency(concurrency),
            timeout=_seconds("timeout", timeout),
            retry=_retryable(retry),
            attempts=check_int("attempts", DEFAULT_ATTEMPTS if attempts is None else attempts, 1),
            cache=_seconds("cache", cache),
            priority=check_int("priority", priority, None),
            queue_timeout=_seconds("queue_timeout", queue_timeout, positive=False),
        )


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


def _seconds(field: str, value: float | str | None, *, positive: bool = True) -> float | None:
    if value is None:
        return None
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        raise ConfigError(field, str(exc)) from None
    return check_duration(field, seconds, positive=positive)


def _retryable(value: type[BaseException] | Retryable) -> Retryable:
    kinds = (value,) if isinstance(value, type) else tuple(value)
    for kind in kinds:
        if not (isinstance(kind, type) and issubclass(kind, BaseException)):
            raise ConfigError("retry", f"expected exception types, got {kind!r}")
    return kinds
