"""The rate-limiter interface every limit store implements (local memory, Redis).

A limiter answers one question, atomically for all its dimensions: *may a
call of this cost go now?* If it may, the cost is booked and the answer is
``0.0``; if not, nothing is booked and the answer is how many seconds until it
would fit. The admission queue in front of it decides who asks and when, so a
limiter never sleeps and never keeps waiters of its own.

Costs are whole units: one request, and the prompt tokens plus ``max_tokens``
the call may use. After the response, :meth:`Limiter.adjust` gives back (or
adds) the difference between what was booked and what the usage reports.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

__all__ = ["LimitSpec", "Limiter"]


class LimitSpec:
    """The limits one limiter enforces: per-minute rates and the burst, in seconds of rate.

    >>> LimitSpec(rpm=600, tpm=None, burst=0.5)
    LimitSpec(rpm=600, tpm=None, burst=0.5)
    """

    __slots__ = ("burst", "rpm", "tpm")

    def __init__(self, rpm: int | None, tpm: int | None, burst: float) -> None:
        self.rpm = rpm
        self.tpm = tpm
        self.burst = burst

    @property
    def limited(self) -> bool:
        return self.rpm is not None or self.tpm is not None

    def __repr__(self) -> str:
        return f"LimitSpec(rpm={self.rpm}, tpm={self.tpm}, burst={self.burst:g})"


@runtime_checkable
class Limiter(Protocol):
    """Requests and tokens per minute of one (upstream, model) pair."""

    spec: LimitSpec

    async def try_acquire(self, requests: int, tokens: int) -> float:
        """Book the cost and return ``0.0`` if it fits now; else book nothing, return the wait."""
        ...

    async def adjust(self, tokens: int) -> None:
        """Add ``tokens`` to what is booked (negative: give them back)."""
        ...

    async def hold(self, seconds: float) -> None:
        """Let nothing through for ``seconds`` (the upstream said so: 429, reset headers)."""
        ...

    async def set_spec(self, spec: LimitSpec) -> None:
        """Change the limits at run time; what is already booked stays booked."""
        ...

    async def close_idle(self) -> None:
        """Close its connections (if any) now: the event loop they belong to is ending."""
        ...

    def forget_loop(self) -> None:
        """The event loop its connections (if any) were made on is gone: drop them."""
        ...

    async def aclose(self) -> None: ...
