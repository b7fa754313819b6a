"""The tools' part of an analysis: a breakdown per tool, and the rules that name one.

A tool's time is its attempts' queue wait (its rate limit and concurrency
slot) and run, from ``overdrive_tool_queue_seconds`` and
``overdrive_tool_duration_seconds`` (see :class:`._stages.Stages`). The rules
read them as the model rules read the upstreams': queued at the rpm it was
given (``tool_rate_limit``), queued below it for a slot (``tool_concurrency``,
the one a knob fixes), running (``tool_latency``), failing
(``tool_errors``). Their ``explains`` is a share of the same wall as the
models', so one ranking names the bottleneck across both.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from ..monitor.names import TOOL_CALLS, TOOL_DURATION, TOOL_ERRORS, TOOL_QUEUE_WAIT, TOOL_RETRIES
from ._findings import MIN_RATIO, MIN_SHARE, SATURATED, Finding, per_minute, severity
from ._stages import Stages

if TYPE_CHECKING:
    from ._analyser import Sample

__all__ = ["TOOL_RULES", "tool_breakdown"]


def tool_breakdown(sample: Sample, stages: Stages) -> dict[str, dict[str, float]]:
    """Per tool: calls, its queue and running shares of the wall, run p50/p95, errors, reuse."""
    return {name: _tool_row(sample, stages, name) for name in stages.tool_queue}


def _tool_row(sample: Sample, stages: Stages, name: str) -> dict[str, float]:
    calls = sample.total(TOOL_CALLS, tool=name)
    run = sample.dist(TOOL_DURATION, tool=name)
    return {
        "calls": calls,
        "attempts": run.count,
        "queue_share": stages.share(stages.tool_queue[name]),
        "running_share": stages.share(stages.tool_running[name]),
        "queue_p95_s": sample.dist(TOOL_QUEUE_WAIT, tool=name).p95,
        "p50_s": run.p50,
        "p95_s": run.p95,
        "errors": sample.total(TOOL_ERRORS, tool=name),
        "error_ratio": _error_ratio(sample, name),
        "retries": sample.total(TOOL_RETRIES, tool=name),
        "cached": _outcome_ratio(sample, name, "cached", calls),
        "coalesced": _outcome_ratio(sample, name, "coalesced", calls),
    }


def _error_ratio(sample: Sample, name: str) -> float:
    """Failed attempts per attempt run."""
    attempts = sample.dist(TOOL_DURATION, tool=name).count
    return sample.total(TOOL_ERRORS, tool=name) / attempts if attempts else 0.0


def _outcome_ratio(sample: Sample, name: str, outcome: str, calls: float) -> float:
    return sample.total(TOOL_CALLS, tool=name, outcome=outcome) / calls if calls else 0.0


# -- rules ---------------------------------------------------------------------


def tool_queueing(sample: Sample, stages: Stages) -> Iterator[Finding]:
    """Time a tool's attempts waited: behind the rpm it was given, or for a concurrency slot."""
    for name, seconds in stages.tool_queue.items():
        share = stages.share(seconds)
        if share < MIN_SHARE:
            continue
        sent = per_minute(sample, sample.dist(TOOL_QUEUE_WAIT, tool=name).count)
        rpm = sample.tunables.get(f"tool.{name}.rpm")
        if rpm and sent >= SATURATED * rpm:
            yield _rate_limit(name, share, sent, rpm)
        else:
            yield _concurrency(sample, name, share, sent)


def _rate_limit(name: str, share: float, sent: float, rpm: float) -> Finding:
    # No knob: the rpm tunable's ceiling is the rpm given (the provider's limit),
    # so the optimizer could only lower it; raising it is the operator's call.
    return Finding(
        "tool_rate_limit",
        severity(share),
        share,
        f"{share:.0%} of time queued behind tool {name}'s rpm limit "
        f"({sent:.0f} of {rpm:.0f} calls/min sent)",
        "raise the tool's rpm (if its provider allows) or cache its answers",
        {"tool": name, "queue_share": round(share, 4), "sent_per_min": round(sent, 1), "rpm": rpm},
    )


def _concurrency(sample: Sample, name: str, share: float, sent: float) -> Finding:
    knob = f"tool.{name}.concurrency"
    limit = sample.tunables.get(knob)
    slots = f" {limit:.0f}" if limit else ""
    return Finding(
        "tool_concurrency",
        severity(share),
        share,
        f"{share:.0%} of time queued for one of tool {name}'s{slots} concurrency slots "
        f"({sent:.0f} calls/min sent, below any rate limit)",
        "raise the tool's concurrency (max_concurrency= lets the optimizer)",
        {
            "tool": name,
            "queue_share": round(share, 4),
            "sent_per_min": round(sent, 1),
            "concurrency": limit or 0.0,
        },
        knob if limit else None,
        # Twice the slots: the policy takes one safe step and clamps to max_concurrency.
        limit * 2 if limit else None,
    )


def tool_latency(sample: Sample, stages: Stages) -> Iterator[Finding]:
    """A tool running is where the time goes: nothing to tune, only to avoid or speed up."""
    for name, seconds in stages.tool_running.items():
        share = stages.share(seconds)
        if share < MIN_SHARE:
            continue
        run = sample.dist(TOOL_DURATION, tool=name)
        yield Finding(
            "tool_latency",
            severity(share),
            share,
            f"{share:.0%} of time is tool {name} running (p50 {run.p50:.2f}s, p95 {run.p95:.2f}s)",
            "cache its answers, call it less, or make it faster",
            {"tool": name, "running_share": round(share, 4), "p50_s": round(run.p50, 4)},
        )


def tool_errors(sample: Sample, stages: Stages) -> Iterator[Finding]:
    """A tool whose attempts fail often: their time, and their retries', bought nothing."""
    for name in stages.tool_queue:
        ratio = _error_ratio(sample, name)
        if ratio < MIN_RATIO:
            continue
        # The failed attempts' part of the tool's time, taking attempts as alike.
        spent = stages.share(stages.tool_queue[name] + stages.tool_running[name])
        yield _errors(sample, name, ratio, ratio * spent)


def _errors(sample: Sample, name: str, ratio: float, share: float) -> Finding:
    retries = sample.total(TOOL_RETRIES, tool=name)
    errors = {e: sample.total(TOOL_ERRORS, tool=name, error=e) for e in _error_types(sample, name)}
    common = max(errors, key=lambda e: errors[e]) if errors else "unknown"
    return Finding(
        "tool_errors",
        severity(share),
        share,
        f"{ratio:.0%} of tool {name}'s attempts failed (mostly {common})"
        + (f", {retries:.0f} retried" if retries else ""),
        _error_advice(common, retries),
        {"tool": name, "error_ratio": round(ratio, 4), "error": common, "retries": retries},
    )


def _error_types(sample: Sample, name: str) -> list[str]:
    found = sample.label_values(TOOL_ERRORS, "error")
    return [e for e in found if sample.total(TOOL_ERRORS, tool=name, error=e)]


def _error_advice(common: str, retries: float) -> str:
    if common == "TimeoutError":
        return "raise its timeout if it is only slow, or check the service behind it"
    if not retries:
        return "check the service behind it, or retry= its transient errors"
    return "check the service behind it: its retries cost time and calls"


TOOL_RULES: tuple[Callable[[Sample, Stages], Iterator[Finding]], ...] = (
    tool_queueing,
    tool_errors,
    tool_latency,
)
