"""Tunables: every knob the engine can turn at run time, with its bounds and safe step.

A tunable is a named number (a concurrency limit, a rate, a batch size or
wait, a TTL) with a getter, a setter, bounds it may never leave and the size
of one safe step. The optimizer moves them; people can too::

    od.tunables["upstream.primary.concurrency"].value        # read
    await od.tunables.set("batching.embeddings.max_wait_ms", 8)  # write, checked

Setting a value outside the bounds raises :class:`~overdrive.ConfigError`
naming the tunable and its bounds; nothing changes. Every change is recorded
(old value, new value, who asked) so a decision can be explained and undone.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass

from .._clock import Clock, SystemClock
from .._errors import ConfigError

__all__ = ["Change", "Tunable", "Tunables"]

Setter = Callable[[float], None] | Callable[[float], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Change:
    """One change of one tunable: when, from what, to what, and why."""

    at: float
    name: str
    old: float
    new: float
    reason: str


@dataclass(slots=True)
class Tunable:
    """A knob: ``read()`` gives its value, bounds are inclusive, ``step`` is one safe move."""

    name: str
    read: Callable[[], float]
    write: Setter
    low: float
    high: float
    step: float
    integer: bool = False
    description: str = ""
    unit: str = ""

    @property
    def value(self) -> float:
        return self.read()

    def check(self, value: float) -> float:
        """``value`` as this tunable stores it; ConfigError if it is not allowed."""
        if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
            raise ConfigError(self.name, f"must be a number, got {value!r}")
        if self.integer and value != int(value):
            raise ConfigError(self.name, f"must be a whole number, got {value!r}")
        if not self.low <= value <= self.high:
            raise ConfigError(
                self.name, f"must be within [{self.low:g}, {self.high:g}]{self.unit}, got {value:g}"
            )
        return int(value) if self.integer else float(value)

    def clamp(self, value: float) -> float:
        """The nearest allowed value to ``value``."""
        bounded = min(self.high, max(self.low, value))
        return round(bounded) if self.integer else bounded

    def describe(self) -> dict[str, object]:
        return {
            "value": self.value,
            "low": self.low,
            "high": self.high,
            "step": self.step,
            "integer": self.integer,
            "unit": self.unit,
            "description": self.description,
        }


class Tunables(Mapping[str, Tunable]):
    """The registry: a read-only mapping of name to :class:`Tunable`, plus checked ``set``.

    >>> import asyncio
    >>> state = {"size": 8.0}
    >>> knobs = Tunables()
    >>> knobs.add(Tunable("size", lambda: state["size"], lambda v: state.update(size=v),
    ...                   low=1, high=64, step=4, integer=True))
    >>> asyncio.run(knobs.set("size", 16))
    Change(at=..., name='size', old=8.0, new=16, reason='manual')
    """

    __slots__ = ("_clock", "_history", "_knobs")

    def __init__(self, clock: Clock | None = None) -> None:
        self._clock: Clock = clock or SystemClock()
        self._knobs: dict[str, Tunable] = {}
        self._history: list[Change] = []

    def add(self, tunable: Tunable) -> None:
        if tunable.name in self._knobs:
            raise ConfigError(tunable.name, "a tunable with this name is already registered")
        if not tunable.low <= tunable.high or tunable.step <= 0:
            raise ConfigError(
                tunable.name,
                f"needs low <= high and step > 0, got [{tunable.low}, {tunable.high}], "
                f"step {tunable.step}",
            )
        self._knobs[tunable.name] = tunable

    async def set(self, name: str, value: float, *, reason: str = "manual") -> Change:
        """Check ``value`` against the bounds, apply it and record the change."""
        tunable = self[name]
        new = tunable.check(value)
        old = tunable.value
        outcome = tunable.write(new)
        if inspect.isawaitable(outcome):
            await outcome
        change = Change(self._clock.now(), name, old, new, reason)
        self._history.append(change)
        return change

    def history(self, name: str | None = None) -> list[Change]:
        """Every change made through :meth:`set`, oldest first (of ``name`` only, if given)."""
        return [c for c in self._history if name is None or c.name == name]

    def snapshot(self) -> dict[str, dict[str, object]]:
        """Plain data: each tunable's value, bounds, step and meaning."""
        return {name: knob.describe() for name, knob in sorted(self._knobs.items())}

    def __getitem__(self, name: str) -> Tunable:
        try:
            return self._knobs[name]
        except KeyError:
            known = ", ".join(sorted(self._knobs)) or "none"
            raise ConfigError(name, f"no such tunable (known: {known})") from None

    def __contains__(self, name: object) -> bool:
        return name in self._knobs

    def __iter__(self) -> Iterator[str]:
        return iter(self._knobs)

    def __len__(self) -> int:
        return len(self._knobs)

    def __repr__(self) -> str:
        values = ", ".join(f"{n}={k.value:g}" for n, k in sorted(self._knobs.items()))
        return f"Tunables({values})"
