"""What an upstream's ``x-ratelimit-*`` headers say, and how the limiter takes it in.

OpenAI-style endpoints report, on every answer, their limit, what remains of
it and when it resets, separately for requests and tokens::

    x-ratelimit-limit-requests: 600       x-ratelimit-remaining-requests: 0
    x-ratelimit-reset-requests: 1.5s      x-ratelimit-reset-tokens: 6m0s

Two things are learnt from them. When nothing remains, the provider's bucket
is empty whatever our own bookkeeping believes (another client may share the
key), so nothing is sent until it has room for one more call like this one:
``60 * cost / limit`` seconds, never past the reported reset (which is the
time until the bucket is *full* again, far longer than needed). And when the
provider's limit is lower than the configured one, or none was configured,
the provider's figure is the truth.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from ._limiter import Limiter, LimitSpec

__all__ = ["RateLimitHeaders", "apply_feedback", "parse_reset"]

_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
# Without the limit there is no way to tell how soon one call fits again.
_UNKNOWN_LIMIT_PAUSE = 1.0


@dataclass(frozen=True, slots=True)
class RateLimitHeaders:
    """One dimension's report: ``limit`` per minute, ``remaining``, ``reset`` in seconds."""

    limit: int | None
    remaining: int | None
    reset: float | None

    @classmethod
    def read(cls, headers: Mapping[str, str], dimension: str) -> RateLimitHeaders:
        """The report for ``dimension`` ("requests" or "tokens"); missing fields are None."""
        return cls(
            _int(headers.get(f"x-ratelimit-limit-{dimension}")),
            _int(headers.get(f"x-ratelimit-remaining-{dimension}")),
            parse_reset(headers.get(f"x-ratelimit-reset-{dimension}")),
        )

    def pause(self, cost: int) -> float:
        """Seconds until a call of ``cost`` units fits, if the report says nothing remains."""
        if self.remaining != 0 or not self.reset:
            return 0.0
        if not self.limit:
            return min(self.reset, _UNKNOWN_LIMIT_PAUSE)
        return min(self.reset, 60.0 * max(cost, 1) / self.limit)


def parse_reset(value: str | None) -> float | None:
    """Seconds from ``"1.5s"``, ``"6m0s"``, ``"20ms"``, ``"1h2m3s"`` or a bare number.

    >>> parse_reset("6m0s"), parse_reset("20ms"), parse_reset("2")
    (360.0, 0.02, 2.0)
    """
    if value is None:
        return None
    text = value.strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    parts = _PART.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        return None
    return sum(float(number) * _UNIT[unit] for number, unit in parts)


async def apply_feedback(limiter: Limiter, headers: Mapping[str, str], tokens_cost: int) -> bool:
    """Pause the limiter while the provider's bucket is empty; adopt lower reported limits.

    ``tokens_cost`` is the token cost of the call that got these headers, the
    best guess of what the next one needs. Returns True when anything changed.
    """
    requests = RateLimitHeaders.read(headers, "requests")
    tokens = RateLimitHeaders.read(headers, "tokens")
    changed = False
    pause = max(requests.pause(1), tokens.pause(tokens_cost))
    if pause > 0:
        await limiter.hold(pause)
        changed = True
    learnt = _learn(limiter.spec, requests.limit, tokens.limit)
    if learnt is not None:
        await limiter.set_spec(learnt)
        changed = True
    return changed


def _learn(spec: LimitSpec, rpm: int | None, tpm: int | None) -> LimitSpec | None:
    """A spec with the provider's lower (or only known) limits, or None if nothing is new."""
    new_rpm = _lower(spec.rpm, rpm)
    new_tpm = _lower(spec.tpm, tpm)
    if new_rpm == spec.rpm and new_tpm == spec.tpm:
        return None
    return LimitSpec(new_rpm, new_tpm, spec.burst)


def _lower(configured: int | None, reported: int | None) -> int | None:
    if reported is None or reported <= 0:
        return configured
    return reported if configured is None else min(configured, reported)


def _int(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(value.strip())
    except ValueError:
        return None
