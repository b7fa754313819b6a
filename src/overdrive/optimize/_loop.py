"""The optimizer loop: one change at a time, measured, kept or rolled back.

Every ``window`` seconds the loop reads the analysis of the last window. If a
change is in flight it is judged first: kept when throughput (model requests
and tool calls finished per second) rose by at least ``min_gain`` without p95
latency growing past ``max_p95_ratio``, otherwise set back, and that tunable
may not move that way again for ``cooldown`` seconds (the next try takes a
smaller step). Then the most explaining finding that names a tunable becomes
the next change, one safe step toward its suggestion (:mod:`._policies`),
never past the tunable's bounds, which come from the configuration.

Every decision is a :class:`Decision` with the figures before and after, kept
in :attr:`Optimizer.decisions`, logged at INFO on ``overdrive.optimize`` and
counted in ``overdrive_optimizer_decisions_total{outcome}``; each tunable's
value is the gauge ``overdrive_tunable_value{tunable}``. With
``advisory=True`` the loop only records what it would do (outcome
``"advised"``) and changes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

from .._clock import Clock, SystemClock
from .._errors import ConfigError
from .._validate import check_duration
from ..monitor.names import OPTIMIZER_DECISIONS, REQUEST_DURATION, TOOL_CALLS, TUNABLE_VALUE
from ._analyser import Analysis, analyse
from ._policies import Proposal, propose

if TYPE_CHECKING:
    from ..monitor import Metrics
    from ._tunables import Tunables

__all__ = ["Decision", "Optimizer", "Outcome"]

Outcome = Literal["pending", "kept", "rolled_back", "advised"]
Figures = dict[str, float]

log = logging.getLogger("overdrive.optimize")

# After a rollback the next step that way is this root of the last factor (2 → 1.41 → 1.19).
_SHRINK = 0.5
_MIN_FACTOR = 1.05


@dataclass(slots=True)
class Decision:
    """One change tried (or advised): what, why, the figures around it, and how it ended."""

    at: float
    tunable: str
    old: float
    new: float
    reason: str
    finding: str
    before: Figures
    after: Figures | None = None
    outcome: Outcome = "pending"

    @property
    def applied(self) -> bool:
        return self.outcome != "advised"

    def to_dict(self) -> dict[str, Any]:
        return {
            "at": round(self.at, 3),
            "tunable": self.tunable,
            "old": self.old,
            "new": self.new,
            "reason": self.reason,
            "finding": self.finding,
            "before": dict(self.before),
            "after": None if self.after is None else dict(self.after),
            "outcome": self.outcome,
        }

    def __str__(self) -> str:
        after = "" if self.after is None else f" after {_show(self.after)}"
        return (
            f"{self.outcome}: {self.tunable} {self.old:g} -> {self.new:g} ({self.finding}: "
            f"{self.reason}); before {_show(self.before)}{after}"
        )


class _Engine(Protocol):
    """What the optimizer reads of an engine (``Overdrive`` has all of it)."""

    tunables: Tunables
    metrics: Metrics

    def stats(self) -> dict[str, Any]: ...


class Optimizer:
    """Tunes an engine's knobs from its own measurements, one reversible change at a time.

    >>> optimizer = Optimizer(od, window=10.0)  # doctest: +SKIP
    >>> optimizer.start()                       # every 10 s on od's clock  # doctest: +SKIP
    >>> [str(d) for d in optimizer.decisions]   # doctest: +SKIP
    ['kept: upstream.a.concurrency 1 -> 3 (concurrency: ...); before ... after ...']

    Without an engine, pass ``tunables``, ``metrics`` and ``analyse_fn``
    (``seconds -> Analysis``) instead; ``await step()`` runs one cycle.
    """

    def __init__(
        self,
        engine: _Engine | None = None,
        *,
        tunables: Tunables | None = None,
        metrics: Metrics | None = None,
        analyse_fn: Callable[[float], Analysis] | None = None,
        clock: Clock | None = None,
        window: float = 10.0,
        cooldown: float | None = None,
        advisory: bool = False,
        min_gain: float = 0.03,
        max_p95_ratio: float = 1.5,
    ) -> None:
        check_duration("optimizer.window", window, positive=True)
        if engine is not None:
            tunables, metrics = engine.tunables, engine.metrics
            analyse_fn = analyse_fn or _engine_analysis(engine)
        if tunables is None or metrics is None or analyse_fn is None:
            raise ConfigError("optimizer", "needs an engine, or tunables, metrics and analyse_fn")
        self.tunables, self.metrics, self._analyse = tunables, metrics, analyse_fn
        self._clock: Clock = clock or SystemClock()
        self.window = window
        self.cooldown = 3 * window if cooldown is None else cooldown
        self.advisory = advisory
        self.min_gain, self.max_p95_ratio = min_gain, max_p95_ratio
        self.decisions: list[Decision] = []
        self._pending: Decision | None = None
        self._cooling: dict[tuple[str, int], float] = {}
        self._factors: dict[tuple[str, int], float] = {}
        self._mark = (self._clock.now(), _completed(metrics))
        self._task: asyncio.Task[None] | None = None
        self._gauges()

    # -- one cycle -------------------------------------------------------------

    async def step(self) -> Decision | None:
        """Judge the change in flight, then make (or advise) the next one; returns that."""
        figures = self._figures()
        if self._pending is not None:
            rolled_back = not await self._judge(self._pending, figures)
            self._pending = None
            if rolled_back:  # the next change needs a baseline measured without this one
                return None
        proposal = propose(
            # Two windows: metric windows move in slots, so one may have only just begun.
            self._analyse(2 * self.window),
            self.tunables,
            cooling=self._is_cooling,
            factor=lambda name, way: self._factors.get((name, way), 2.0),
        )
        return None if proposal is None else await self._act(proposal, figures)

    async def _act(self, proposal: Proposal, before: Figures) -> Decision:
        finding = proposal.finding
        decision = Decision(
            self._clock.now(),
            proposal.tunable,
            proposal.old,
            proposal.new,
            finding.summary,
            finding.name,
            before,
        )
        if self.advisory:
            decision.outcome = "advised"
            self._cool(proposal.tunable, proposal.direction)  # advise once per cool-down
            self._record(decision)
        else:
            await self.tunables.set(proposal.tunable, proposal.new, reason=finding.summary)
            self._pending = decision
            self.decisions.append(decision)
            self._gauges()
            log.info("optimizer trying %s", decision)
        return decision

    async def _judge(self, decision: Decision, after: Figures) -> bool:
        """Keep ``decision`` if it paid off, else set the tunable back; True if kept."""
        decision.after = after
        if self._improved(decision.before, after):
            decision.outcome = "kept"
        else:
            decision.outcome = "rolled_back"
            await self.tunables.set(decision.tunable, decision.old, reason="rollback")
            way = 1 if decision.new > decision.old else -1
            self._cool(decision.tunable, way)
            factor = self._factors.get((decision.tunable, way), 2.0) ** _SHRINK
            self._factors[(decision.tunable, way)] = max(_MIN_FACTOR, factor)
            self._gauges()
        self.decisions.remove(decision)  # re-added as finished, for the log and counter
        self._record(decision)
        return decision.outcome == "kept"

    def _improved(self, before: Figures, after: Figures) -> bool:
        gained = after["throughput"] >= before["throughput"] * (1 + self.min_gain)
        slower = before["p95_s"] > 0 and after["p95_s"] > before["p95_s"] * self.max_p95_ratio
        return gained and after["throughput"] > 0 and not slower

    # -- figures, cool-downs, records ------------------------------------------

    def _figures(self) -> Figures:
        """Requests and tool calls done per second since the last cycle, and the window's p95."""
        now, done = self._clock.now(), _completed(self.metrics)
        since, before = self._mark
        self._mark = (now, done)
        elapsed = now - since
        try:
            p95 = self.metrics.window(REQUEST_DURATION, 2 * self.window).percentile(95)
        except ConfigError:  # a registry without windows: no latency guard
            p95 = 0.0
        return {
            "throughput": round((done - before) / elapsed, 3) if elapsed > 0 else 0.0,
            "p95_s": round(p95, 4),
        }

    def _is_cooling(self, name: str, way: int) -> bool:
        return self._cooling.get((name, way), -math.inf) > self._clock.now()

    def _cool(self, name: str, way: int) -> None:
        self._cooling[(name, way)] = self._clock.now() + self.cooldown

    def _record(self, decision: Decision) -> None:
        self.decisions.append(decision)
        self.metrics.counter(OPTIMIZER_DECISIONS, outcome=decision.outcome).inc()
        log.info("optimizer %s", decision)

    def _gauges(self) -> None:
        for name, knob in self.tunables.items():
            self.metrics.gauge(TUNABLE_VALUE, tunable=name).set(knob.value)

    @property
    def pending(self) -> Decision | None:
        """The change in flight, waiting for its window to be judged."""
        return self._pending

    # -- running ---------------------------------------------------------------

    def start(self) -> None:
        """Run :meth:`step` every ``window`` seconds in the background until :meth:`aclose`."""
        if self._task is None or self._task.done():
            self._mark = (self._clock.now(), _completed(self.metrics))
            self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        while True:
            await self._clock.sleep(self.window)
            try:
                await self.step()
            except Exception:  # one bad cycle must not stop the loop
                log.exception("optimizer step failed")

    async def aclose(self) -> None:
        """Stop the loop; a change in flight stays as it is (its outcome stays pending)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def __aenter__(self) -> Optimizer:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        mode = "advisory" if self.advisory else "active"
        running = "running" if self._task is not None else "stopped"
        return (
            f"Optimizer({mode}, {running}, window={self.window:g}s, "
            f"decisions={len(self.decisions)}, pending={self._pending is not None})"
        )


def _engine_analysis(engine: _Engine) -> Callable[[float], Analysis]:
    def analysis(seconds: float) -> Analysis:
        return analyse(engine.metrics, engine.stats(), seconds=seconds)

    return analysis


def _completed(metrics: Metrics) -> float:
    """Work finished so far: model requests (their duration's observations) and tool calls.

    Tool calls count too, or a change to a tool's knob in an agent that calls
    tools more than models would always look like no gain.
    """
    requests = 0.0
    for family in metrics.collect():
        if family.name == REQUEST_DURATION:
            requests = float(sum(getattr(series, "count", 0) for _, series in family.series))
    return requests + metrics.value(TOOL_CALLS)


def _show(figures: Figures) -> str:
    return ", ".join(f"{key} {value:g}" for key, value in figures.items())
