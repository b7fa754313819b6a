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

Anthropic reports the same things in its own words, with resets as RFC 3339
times and input and output tokens limited apart::

    anthropic-ratelimit-requests-limit: 50     anthropic-ratelimit-requests-remaining: 0
    anthropic-ratelimit-requests-reset: 2025-01-01T00:00:01Z
    anthropic-ratelimit-{tokens,input-tokens,output-tokens}-{limit,remaining,reset}

They are read only when no ``x-ratelimit-*`` figure is there, so the OpenAI
path costs what it did. Any dimension with nothing left pauses the limiter
for one call's worth of it, as above. The limiter holds one token budget for
input and output together, so the limit learnt from Anthropic is the input
and output limits added up (or ``tokens`` alone, its most restrictive one,
when only that is reported): the pauses keep each dimension within its own.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from ._limiter import Limiter, LimitSpec

__all__ = ["RateLimitHeaders", "apply_feedback", "parse_reset", "parse_reset_time"]

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

    @classmethod
    def read_anthropic(
        cls, headers: Mapping[str, str], dimension: str, now: float
    ) -> RateLimitHeaders:
        """Anthropic's report for ``dimension`` ("requests", "tokens", "input-tokens", ...).

        ``now`` is the wall-clock time (Unix seconds) its reset time is measured from.
        """
        prefix = f"anthropic-ratelimit-{dimension}-"
        return cls(
            _int(headers.get(prefix + "limit")),
            _int(headers.get(prefix + "remaining")),
            parse_reset_time(headers.get(prefix + "reset"), now),
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


def parse_reset_time(value: str | None, now: float) -> float | None:
    """Seconds from ``now`` (Unix time) to an RFC 3339 time; 0 once it has passed.

    >>> parse_reset_time("2025-01-01T00:00:30Z", now=1735689600.0)
    30.0
    >>> parse_reset_time("in a while", now=0.0) is None
    True
    """
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)  # Anthropic's are UTC ("Z"); so is a bare one
    return max(0.0, moment.timestamp() - now)


async def apply_feedback(
    limiter: Limiter,
    headers: Mapping[str, str],
    tokens_cost: int,
    *,
    wall: Callable[[], float] = time.time,
) -> bool:
    """Pause the limiter while the provider's bucket is empty; adopt lower reported limits.

    ``tokens_cost`` is the token cost of the call that got these headers, the
    best guess of what the next one needs. ``wall`` reads the wall clock that
    Anthropic's reset times are measured on. Returns True when anything changed.
    """
    requests = RateLimitHeaders.read(headers, "requests")
    tokens = RateLimitHeaders.read(headers, "tokens")
    if (
        requests.remaining is None
        and tokens.remaining is None
        and not (requests.limit or tokens.limit)
    ):
        return await _anthropic_feedback(limiter, headers, tokens_cost, wall())
    pause = max(requests.pause(1), tokens.pause(tokens_cost))
    return await _adopt(limiter, pause, requests.limit, tokens.limit)


async def _anthropic_feedback(
    limiter: Limiter, headers: Mapping[str, str], tokens_cost: int, now: float
) -> bool:
    requests = RateLimitHeaders.read_anthropic(headers, "requests", now)
    tokens = [
        RateLimitHeaders.read_anthropic(headers, dimension, now)
        for dimension in _ANTHROPIC_TOKEN_DIMENSIONS
    ]
    pause = max(requests.pause(1), *(report.pause(tokens_cost) for report in tokens))
    return await _adopt(limiter, pause, requests.limit, _anthropic_tpm(*tokens))


# "tokens" is the most restrictive token limit in force; the other two are apart.
_ANTHROPIC_TOKEN_DIMENSIONS = ("tokens", "input-tokens", "output-tokens")


def _anthropic_tpm(
    tokens: RateLimitHeaders, input_tokens: RateLimitHeaders, output_tokens: RateLimitHeaders
) -> int | None:
    """The one tokens-per-minute figure the limiter can hold for Anthropic's limits."""
    if input_tokens.limit and output_tokens.limit:
        return input_tokens.limit + output_tokens.limit
    return tokens.limit


async def _adopt(limiter: Limiter, pause: float, rpm: int | None, tpm: int | None) -> bool:
    """Hold the limiter ``pause`` seconds and take the provider's lower limits; True if changed."""
    changed = False
    if pause > 0:
        await limiter.hold(pause)
        changed = True
    learnt = _learn(limiter.spec, rpm, tpm)
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
