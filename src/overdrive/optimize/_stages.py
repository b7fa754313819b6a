"""Where the time goes: model requests split by stage, and tool calls beside them.

:class:`Stages` splits the model requests' wall time between the admission
queue (per upstream) and the upstream (per op); the rest is batching,
coalescing and overhead. Tool calls add their own seconds: each attempt's
wait for the tool's rate limit and concurrency slot (``tool_queue``) and its
run (``tool_running``), per tool. The wall is the sum of both, so every
share (and so every finding's ``explains``) is of the whole.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..monitor.names import (
    CACHE_HITS,
    QUEUE_WAIT,
    REQUEST_DURATION,
    REQUESTS,
    TOOL_CALLS,
    TOOL_DURATION,
    TOOL_QUEUE_WAIT,
    UPSTREAM_DURATION,
    UPSTREAM_REQUESTS,
)

if TYPE_CHECKING:
    from ._analyser import Sample

__all__ = ["Stages", "tool_names"]

_TOOL_SERIES = (TOOL_CALLS, TOOL_QUEUE_WAIT, TOOL_DURATION)


@dataclass(frozen=True, slots=True)
class Stages:
    """Request-seconds queued (per upstream) and upstream (per op); tool-seconds per tool.

    An upstream call serves every request batched or coalesced onto it, so its
    seconds count once per request that waited on it (``fan_out``). A tool's
    seconds are its attempts' own, summed: a call joined to one in flight
    spent no attempt of its own.
    """

    wall: float
    queue: dict[str, float]
    queue_by_op: dict[str, float]
    upstream: dict[str, float]
    tool_queue: dict[str, float] = field(default_factory=dict)
    tool_running: dict[str, float] = field(default_factory=dict)

    @classmethod
    def of(cls, sample: Sample) -> Stages:
        queue: dict[str, float] = {}
        queue_by_op: dict[str, float] = {}
        upstream: dict[str, float] = {}
        for op in sample.label_values(REQUESTS, "op") or sample.label_values(
            UPSTREAM_REQUESTS, "op"
        ):
            fan_out = _fan_out(sample, op)
            waited = 0.0
            for name in sample.label_values(UPSTREAM_REQUESTS, "upstream"):
                share = sample.dist(QUEUE_WAIT, upstream=name, op=op).sum * fan_out
                queue[name] = queue.get(name, 0.0) + share
                waited += share
            queue_by_op[op] = waited
            upstream[op] = sample.dist(UPSTREAM_DURATION, op=op).sum * fan_out
        tools = tool_names(sample)
        tool_queue = {t: sample.dist(TOOL_QUEUE_WAIT, tool=t).sum for t in tools}
        tool_running = {t: sample.dist(TOOL_DURATION, tool=t).sum for t in tools}
        models = max(
            sample.dist(REQUEST_DURATION).sum, sum(queue.values()) + sum(upstream.values())
        )
        wall = models + sum(tool_queue.values()) + sum(tool_running.values())
        return cls(wall, queue, queue_by_op, upstream, tool_queue, tool_running)

    @property
    def model_wall(self) -> float:
        """The model requests' part of the wall (all of it when no tool ran)."""
        return self.wall - sum(self.tool_queue.values()) - sum(self.tool_running.values())

    def share(self, seconds: float) -> float:
        return seconds / self.wall if self.wall > 0 else 0.0

    def shares(self) -> dict[str, float]:
        """Queue, upstream and the rest (and tool queue and running, if any), summing to 1.

        The tool keys appear only when a tool was called, so a run without
        tools reads exactly as before tools were measured.
        """
        if self.wall <= 0:
            return {"queue": 0.0, "upstream": 0.0, "other": 0.0}
        queue = self.share(sum(self.queue.values()))
        upstream = self.share(sum(self.upstream.values()))
        shares = {
            "queue": queue,
            "upstream": upstream,
            "other": max(0.0, self.share(self.model_wall) - queue - upstream),
        }
        if self.tool_queue:
            shares["tool_queue"] = self.share(sum(self.tool_queue.values()))
            shares["tool_running"] = self.share(sum(self.tool_running.values()))
        return shares


def tool_names(sample: Sample) -> list[str]:
    """Every tool the sample has a series of, sorted."""
    return sorted({name for series in _TOOL_SERIES for name in sample.label_values(series, "tool")})


def _fan_out(sample: Sample, op: str) -> float:
    """Requests that waited on an upstream call of ``op``, per such call (at least 1)."""
    calls = sample.dist(UPSTREAM_DURATION, op=op).count
    waited = sample.total(REQUESTS, op=op) - sample.total(CACHE_HITS, op=op)
    return max(1.0, waited / calls) if calls else 1.0
