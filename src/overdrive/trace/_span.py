"""One traced call's record: its stage edges, kept as plain numbers until the call ends.

The engine and the dispatcher already read the clock at every stage edge; a
sampled call keeps those readings here (a tuple per stage) and the tracer
turns them into child spans with explicit timestamps once, when the call
ends. Nothing here imports OpenTelemetry: an unsampled call never makes one.
"""

from __future__ import annotations

import logging
from contextvars import ContextVar, Token
from typing import Protocol

from .._calls import Call, Result
from .._clock import Clock

__all__ = ["TRACE_HEADERS", "CallSpan", "Fresh", "Reply", "Stage", "trace_attempt"]

_log = logging.getLogger("overdrive.trace")

# The W3C Trace Context headers a door passes on to the tracer.
TRACE_HEADERS = frozenset({"traceparent", "tracestate"})

# (name, start, end, attributes): monotonic seconds of the engine's clock.
Stage = tuple[str, float, float, dict[str, str | int | float]]


class Fresh(Protocol):
    """A cache lookup's find: served as is when ``fresh``, else stale (refreshed once)."""

    @property
    def fresh(self) -> bool: ...


class Reply(Protocol):
    """What a streamed reply tells a span once its first byte is in."""

    status: int
    source: str
    upstream: str
    model: str
    queued_s: float


class CallSpan:
    """The record of one sampled call; ``end()`` hands it to its tracer to export.

    Hooks after the span ended (a stale answer's refresh, a race's loser
    finishing late) are dropped: the span is exported once, whole.
    """

    __slots__ = (
        "_mark",
        "_reset",
        "attempts",
        "cache",
        "call",
        "clock",
        "done",
        "error",
        "reply",
        "result",
        "similarity",
        "stages",
        "started",
    )

    def __init__(self, call: Call, clock: Clock, started: float) -> None:
        self.call = call
        self.clock = clock
        self.started = self._mark = started
        self.stages: list[Stage] = []
        self.attempts = 0
        # "bypass" until a lookup says otherwise: the call was not looked up.
        self.cache = "bypass"
        self.result: Result | None = None
        self.reply: Reply | None = None
        self.error: BaseException | None = None
        self.similarity: float | None = None
        self.done = False
        self._reset: Token[CallSpan | None] = _CURRENT.set(self)

    def _stage(self, name: str, **attributes: str | int | float) -> None:
        """The stage from the last edge to now; now is the next stage's start."""
        now = self.clock.now()
        self.stages.append((name, self._mark, now, attributes))
        self._mark = now

    def looked(self, found: Fresh | None) -> None:
        """The exact cache answered (fresh or stale) or missed."""
        self.cache = "miss" if found is None else ("hit" if found.fresh else "stale")
        self._stage("cache.lookup", **{"overdrive.cache": self.cache})

    def semantic(self, hit: bool, similarity: float) -> None:
        """The semantic tier (after an exact miss) answered or not."""
        if hit:
            self.cache, self.similarity = "semantic", similarity
        self._stage("semantic.lookup", **{"overdrive.semantic.hit": int(hit)})

    def computed(self, result: Result, joined: bool) -> None:
        """The answer of a call the cache did not give: its own, or one it joined."""
        self.result = result
        if joined:
            self.cache = "coalesced"
            self._stage("coalesce.wait")

    def opened(self, reply: Reply) -> None:
        """A streamed call's first byte is in (its span ends here)."""
        self.reply = reply
        # The stream stage looked the cache up out of sight: its reply's source tells.
        self.cache = _STREAM_SOURCES.get(reply.source, "miss")

    def attempt(
        self, upstream: str, queued_s: float, started: float, ended: float, outcome: int | str
    ) -> None:
        """One upstream attempt: its wait for admission, then the exchange (a status or error)."""
        self.attempts += 1
        where: dict[str, str | int | float] = {"overdrive.upstream": upstream}
        self.stages.append(("queue.wait", started - queued_s, started, where))
        sent = {**where, "overdrive.attempt": self.attempts}
        key = "http.response.status_code" if isinstance(outcome, int) else "error.type"
        sent[key] = outcome
        self.stages.append(("upstream.attempt", started, ended, sent))

    def fail(self, exc: BaseException) -> None:
        self.error = exc

    def end(self) -> None:
        """The call is over: stop taking hooks and export the span."""
        if self.done:
            return
        self.done = True
        _CURRENT.reset(self._reset)
        try:
            self._finish(self.clock.now())
        except Exception:  # a span is worth less than the call it describes
            _log.exception("trace: the span of %r could not be exported", self)

    def _finish(self, now: float) -> None:
        """Export the record (the tracer's subclass does)."""

    def __repr__(self) -> str:
        call = self.call
        return (
            f"CallSpan({call.op} {call.model}, cache={self.cache}, stages={len(self.stages)}, "
            f"attempts={self.attempts}, done={self.done})"
        )


_STREAM_SOURCES = {"cache": "hit", "semantic": "semantic", "coalesced": "coalesced"}
_CURRENT: ContextVar[CallSpan | None] = ContextVar("overdrive_call_span", default=None)


def trace_attempt(
    upstream: str, queued_s: float, started: float, ended: float, outcome: int | str
) -> None:
    """Tell the span of the call being sent (if sampled) how one attempt went.

    The dispatcher calls it only while tracing is on; ``outcome`` is the
    answer's status or the name of the transport error.

    >>> trace_attempt("primary", 0.0, 1.0, 1.5, 200)  # no span here: nothing happens
    """
    span = _CURRENT.get()
    if span is not None and not span.done:
        span.attempt(upstream, queued_s, started, ended, outcome)
