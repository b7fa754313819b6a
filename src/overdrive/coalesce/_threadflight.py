"""Single-flight for threads: concurrent sync callers of one key compute once."""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

__all__ = ["ThreadFlight"]

T = TypeVar("T")


class _Flight(Generic[T]):
    __slots__ = ("done", "error", "value")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.value: T | None = None
        self.error: BaseException | None = None


class ThreadFlight(Generic[T]):
    """The first thread with a key runs ``work``; threads arriving meanwhile wait and share it.

    >>> flight: ThreadFlight[int] = ThreadFlight()
    >>> flight.run("k", lambda: 7)
    (7, False)
    """

    __slots__ = ("_flights", "_lock")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._flights: dict[Hashable, _Flight[T]] = {}

    def run(self, key: Hashable, work: Callable[[], T]) -> tuple[T, bool]:
        """Return ``(result, joined)``; an error raised by the leader reaches every waiter."""
        with self._lock:
            flight = self._flights.get(key)
            leading = flight is None
            if flight is None:
                flight = self._flights[key] = _Flight()
        if not leading:
            flight.done.wait()
            if flight.error is not None:
                raise flight.error
            return flight.value, True  # type: ignore[return-value]
        try:
            flight.value = work()
        except BaseException as exc:
            flight.error = exc
            raise
        finally:
            with self._lock:
                del self._flights[key]
            flight.done.set()
        return flight.value, False

    def __repr__(self) -> str:
        return f"ThreadFlight(in_flight={len(self._flights)})"
