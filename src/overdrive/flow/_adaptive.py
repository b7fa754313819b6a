""":class:`AdaptiveLimit` looks for the knee of the upstream: the concurrency past
which calls get slower instead of more calls getting served. It holds no call
back until it has evidence of that knee, then follows it, gradient style:

* **Open start.** A fresh limit knows nothing against the upstream, so it
  holds nobody back: while it is *open*, a call that finds every slot taken
  raises the limit to let itself in (up to ``max_limit``). A cold burst goes
  out at once, as it would with no limit at all. The limit closes on
  evidence only, never for want of history:

  - a drop (below) backs off from the load the burst reached;
  - a round run with more than ``initial`` calls in flight and slower per
    token than ``tolerance`` times the baseline: latency grew with load. Past
    the highest load seen fine so far, the limit goes back to that load
    (``initial`` at least) and climbs from there as below; at a load once
    fine, it cuts as below.

  The baseline is learnt from rounds that ran with at most ``initial`` calls
  in flight (the level trusted to be below any knee), after the first
  round. A load above that level with no baseline yet is judged only if it
  lasts (new calls take the place of those that end, as in a closed loop):
  one round runs at ``initial`` to measure the baseline. If the high load
  was no slower, the limit opens again at that load; if it was, the knee
  lies between, and the limit climbs from ``initial``. A burst that drains
  is not judged without a baseline: it ends before a cut could help it.
  Setting ``limit`` by hand closes the limit too; ``open_start=False`` starts
  it closed at ``initial``. Closed, it moves as follows.
* **Per-token latency.** Each finished call gives its latency and output
  tokens. Latency is judged per token, so long answers do not look like
  congestion; the fixed part of a call (time to first token) is fitted from
  the calls (least squares of latency on tokens: over the first thousand
  calls, then an EWMA; afresh once a high load proved slow, as those calls
  were slowed unevenly) and counted as the tokens it is worth, so a run of
  short answers does not look like congestion either:
  ``per_token = sum(latency) / sum(tokens + fixed_tokens)``.
* **Rounds.** The limit moves at most once per round: the calls that started
  after the last move (a call that started before it ran under the old
  limit), at least 16 of them and two typical call latencies long, summed.
  One round is a decision made on enough calls that noise does not drive it.
  The very first round only warms up: cold connections would make it slow.
* **Gradient.** ``gradient = clamp(tolerance * baseline / per_token, 0.5, 1)``,
  ``tolerance`` 1.1: 1 while latency is within 10% of the baseline, lower as
  calls queue in the upstream. Below 1 the limit is cut by it at once
  (``limit * gradient``: in proportion to the excess, so a false alarm from
  noise costs little and real congestion clears in a round or two); the
  first cut of a row goes no deeper than 0.8, so one slow round (a stall, a
  noisy neighbour) costs little, and a second one in a row cuts deep. At 1,
  and only if the limit was used, it probes upwards by
  ``smoothing * sqrt(limit)`` per two round trips the round lasted (a round
  at a small limit spans several, waiting for its calls). So it settles just
  past the knee, where latency starts to climb. Until the first cut (for
  latency or a drop) it grows by a quarter a round instead (slow start), so a
  fresh limit reaches a far knee in a few rounds. After a cut for latency it
  grows at least half the way back to where the cut came from each round: a
  cut for a passing spike is undone in a few rounds, while a real knee below
  makes latency cut again on the way.
* **Baseline.** The per-token latency of the upstream below the knee, first
  taken while open (above), or else from the first round after the warm-up.
  It is *not* learnt from the rounds at the limit: the limit sits where
  latency is ``tolerance`` above the baseline, so learning from those rounds
  would ratchet both up.
  Instead, two rounds in (20 after a round at ``initial`` measured it) and
  then every 20, one round runs at 3/4 of the limit and measures it afresh
  (an EWMA, weight 1/2). If that round is much
  faster (by more than ``tolerance``), the limit was well past the knee and
  so was the old baseline: it stays down there and probes again lower. If
  cuts take the limit below 60% of where they started and latency does not
  follow, the upstream is slower for everyone, not crowded by us: the
  current latency becomes the baseline and the cutting stops.
* **Quiet upstreams.** A round whose calls take under 20 ms on average is
  not judged for latency: that fast, the rise comes from this process's own
  event loop, not the upstream, and a cut would only queue calls here.
* **Drops.** A ``"dropped"`` outcome (429, 503, 504, timeout) multiplies the
  limit by ``backoff``, at most once per ``drop_window`` seconds, so one event
  that fails many calls at once costs one step, and a storm of them keeps
  shrinking it; a round that saw a drop does not grow. Once drops stop,
  growth resumes.
"""

from __future__ import annotations

import math

from .._clock import Clock
from .._validate import check_duration, check_float, check_int
from ._permits import ConcurrencyLimit, Outcome, Permit

__all__ = ["AdaptiveLimit"]

# A round (one decision) lasts at least this many typical call latencies and
# this many calls that ran wholly under the current limit: enough for the
# per-token mean to settle, short enough to follow the upstream.
_ROUND_TRIPS = 2.0
_ROUND_CALLS = 16
# Growth per round is counted in rounds of _ROUND_TRIPS, at most this many.
_MAX_TRIPS = 4.0
# Until the first cut (latency, drop, probe), the limit grows by this share a round.
_SLOW_START_GAIN = 0.25
# EWMA weight of one call in the typical latency (the round trip).
_TYPICAL_ALPHA = 0.1
# EWMA weight of one call in the fit of latency against tokens (slow: a fit
# that wanders moves every per-token figure with it); the fit is trusted to
# split latency only when answer lengths vary by this share of their mean,
# and a call's fixed cost is at most this many mean answers.
_SHAPE_ALPHA = 0.001
_SHAPE_MIN_SPREAD = 0.1
_SHAPE_MAX_FIXED = 10.0
# Every so many rounds (the first time sooner), one round runs at a share of the
# limit to measure the baseline afresh; it enters the baseline with this weight.
_PROBE_FIRST = 2
_PROBE_EVERY = 20
_PROBE_SHARE = 0.75
_PROBE_WEIGHT = 0.5
# The deepest cut latency alone makes in one round, and in the first round of a row.
_MIN_GRADIENT = 0.5
_FIRST_CUT = 0.8
# Latency that stays up after cuts down to this share of the limit is not ours.
_REBASE_SHARE = 0.6
# The limit counts as used when this share of it was in flight. While open, a
# load lasts when new calls took the place of this share of those that ended,
# and calls in flight never fell below this share of it.
_USED_SHARE = 0.8
# Calls this fast (on average over a round) are not judged for congestion: at
# a few milliseconds, a rise in latency is this process's own event loop
# getting busier, and cutting concurrency would only queue calls here.
_QUIET_LATENCY_S = 0.02


class AdaptiveLimit(ConcurrencyLimit):
    """A limit that follows per-token latency and drop signals (see the module docstring).

    >>> import asyncio
    >>> from overdrive.testing import FakeClock
    >>> async def main() -> list[int]:
    ...     clock = FakeClock()
    ...     limit = AdaptiveLimit(16, clock=clock)
    ...     held = [await limit.acquire() for _ in range(40)]  # a cold burst: nobody waits
    ...     seen = [limit.limit]
    ...     # 40 in flight and no baseline: a round at 16 measures one; as fast, so
    ...     # open again at 40; then 2x as slow at 40: a first, mild cut.
    ...     for per_token in (0.01, 0.01, 0.02):
    ...         for _ in range(16):  # one round: 16 calls of 40 tokens, back to back
    ...             clock.advance(per_token * 40)
    ...             limit.record(per_token * 40, tokens=40)
    ...         seen.append(limit.limit)
    ...     clock.advance(1.0)
    ...     limit.record(2.0, outcome="dropped")  # a 429: back off
    ...     return seen + [limit.limit]
    >>> asyncio.run(main())
    [40, 16, 40, 32, 28]
    """

    __slots__ = (
        "_baseline",
        "_burst",
        "_ceiling",
        "_cut_from",
        "_drain_from",
        "_estimate",
        "_initial",
        "_last_drop",
        "_latest",
        "_load",
        "_load_before",
        "_low",
        "_open",
        "_probe_from",
        "_regime",
        "_round",
        "_round_dropped",
        "_round_opened",
        "_rounds",
        "_rounds_to_probe",
        "_shape",
        "_slow_start",
        "_typical",
        "_verified",
        "backoff",
        "drop_window",
        "smoothing",
        "tolerance",
    )

    def __init__(
        self,
        initial: int = 16,
        *,
        min_limit: int = 1,
        max_limit: int = 256,
        clock: Clock | None = None,
        smoothing: float = 0.2,
        tolerance: float = 1.1,
        backoff: float = 0.9,
        drop_window: float = 1.0,
        open_start: bool = True,
    ) -> None:
        super().__init__(min_limit=min_limit, max_limit=max_limit, clock=clock)
        check_int("initial", initial, min_limit, max_limit)
        self.smoothing = check_float("smoothing", smoothing, 0.0, 1.0, open_low=True)
        self.tolerance = check_float("tolerance", tolerance, 1.0)
        self.backoff = check_float("backoff", backoff, 0.0, 1.0, open_low=True)
        self.drop_window = check_duration("drop_window", drop_window)
        self._estimate = float(initial)
        self._initial = initial
        # Open: demand lifts the limit; closed at the first evidence of congestion.
        self._open = bool(open_start)
        self._verified = float(initial)  # the highest load seen no slower than the baseline
        self._burst: tuple[_Tally, float] | None = None  # a high load being judged: (mean, load)
        # The most calls in flight during this round and the one before: a call
        # that ends in this round may have started in the one before.
        self._load = self._load_before = 0.0
        # Calls in flight when this round's first call ended, and the fewest since.
        self._drain_from = self._low = 0
        self._shape = _Shape()
        self._baseline: _Tally | None = None
        self._latest: float | None = None
        self._typical = 0.0
        self._last_drop = -math.inf
        self._probe_from: float | None = None
        self._rounds = 0
        self._rounds_to_probe = _PROBE_FIRST
        self._cut_from: tuple[float, float] | None = None  # (estimate, per token)
        self._slow_start = True
        self._ceiling = 0.0  # the limit before the last cut for latency
        self._regime = -math.inf
        self._round = _Tally()
        self._open_round(-math.inf)

    @property
    def limit(self) -> int:
        return int(self._estimate)

    @limit.setter
    def limit(self, value: int) -> None:
        self._check_limit(value)
        self._open, self._burst = False, None  # a limit set by hand is a decision: keep it
        self._probe_from = self._cut_from = None
        self._slow_start = False
        self._ceiling = 0.0
        self._step_to(float(value))

    @property
    def gradient(self) -> float:
        """``clamp(tolerance * baseline / latest, 0.5, 1.0)``; 1 before the first round."""
        baseline = self._baseline_per_token()
        if baseline is None or not self._latest:
            return 1.0
        return min(1.0, max(_MIN_GRADIENT, self.tolerance * baseline / self._latest))

    @property
    def open(self) -> bool:
        """True until the first evidence of congestion: a call finding no free slot adds one."""
        return self._open

    def acquire_now(self) -> Permit | None:
        if self._open and self._estimate < self.max_limit:
            # Waiters (once at max_limit, or queued while closed) go first.
            self._lift(self._in_flight + len(self._waiters) + 1)
        permit = super().acquire_now()
        self._load = max(self._load, float(self._in_flight))
        return permit

    def record(self, latency_s: float, *, tokens: int = 1, outcome: Outcome = "ok") -> None:
        """Take one finished call into account; ``"ignored"`` calls change nothing."""
        if outcome == "dropped":
            self._on_drop()
        elif outcome == "ok":
            self._observe(max(0.0, latency_s), max(tokens, 1))

    def _observe(self, latency: float, tokens: int) -> None:
        now = self._clock.now()
        self._typical += _TYPICAL_ALPHA * (latency - self._typical) if self._typical else latency
        self._shape.add(latency, tokens)
        # A call that started before the last move ran (partly) under the old
        # limit and says nothing about the new one.
        if now - latency < self._regime:
            return
        if not self._round.calls:
            self._drain_from = self._low = self._in_flight
        self._low = min(self._low, self._in_flight - 1)  # this call is about to leave
        self._round.add(latency, tokens)
        long_enough = now - self._round_opened >= _ROUND_TRIPS * self._typical
        if self._round.calls >= _ROUND_CALLS and long_enough:
            self._close_round(now)

    def _close_round(self, now: float) -> None:
        self._rounds += 1
        if self._open:
            self._close_open_round(now)
            return
        if self._burst is not None:
            self._end_burst_probe(now)
            return
        if self._rounds == 1:
            # The first calls pay for cold connections (TLS, pools, caches):
            # they would set the baseline too high. They only time a round trip.
            self._open_round(now)
            return
        self._latest = self._round.per_token(self._shape.fixed_tokens)
        if self._probe_from is not None:
            self._end_probe()
            return
        if self._baseline is None:
            self._baseline = self._round.mean()
        gradient = self.gradient if self._round.mean().latency >= _QUIET_LATENCY_S else 1.0
        self._rounds_to_probe -= 1
        if gradient < 1.0:
            self._cut(gradient, now)
            return
        self._cut_from = None
        if not self._was_used() or self._round_dropped:
            self._open_round(now)
        elif self._rounds_to_probe <= 0:
            self._start_probe()
        else:
            self._grow(now)

    # -- open: no limit until evidence --------------------------------------------------------

    def _lift(self, demand: int) -> None:
        """Make room for ``demand`` calls in flight (up to ``max_limit``), waiters first."""
        if demand > self._estimate:
            # No evidence against more. The calls in flight ran under no limit
            # either, so this is no move: their rounds still count (no regime).
            self._estimate = min(float(self.max_limit), float(demand))
            self._wake()

    def _close_open_round(self, now: float) -> None:
        load = max(self._load, self._load_before)
        mean = self._round.mean()
        if load <= self._initial:
            if self._rounds > 1:  # the first round pays for cold connections
                self._learn_baseline(mean)
        elif mean.latency >= _QUIET_LATENCY_S:
            self._judge_load(mean, load, now)
            return
        self._open_round(now)

    def _judge_load(self, mean: _Tally, load: float, now: float) -> None:
        self._latest = mean.per_token(self._shape.fixed_tokens)
        baseline = self._baseline_per_token()
        if baseline is None:
            if load > self._verified and self._lasts(load):
                self._start_burst_probe(mean, load)
            else:
                self._open_round(now)  # a burst that drains: a cut now would help none of it
        elif self._latest <= self.tolerance * baseline:
            self._verified = max(self._verified, load)
            self._open_round(now)
        else:
            self._close_on_latency(load, now)

    def _close_on_latency(self, load: float, now: float) -> None:
        self._open = False
        if load > self._verified:
            # Slower at a load never seen fine: the knee lies past the highest
            # load that was. Climb from there.
            self._step_to(max(float(self._initial), self._verified))
            return
        # Slower at a load once fine: the knee moved. Cut as a closed limit
        # would, from the load (the limit may have been lifted far above it).
        self._estimate = load
        self._cut(self.gradient, now)

    def _lasts(self, load: float) -> bool:
        # A load lasts if new calls took the place of those that ended in this
        # round (a closed loop) and it never ebbed on the way; a burst drains.
        ended = self._round.calls - 1
        replaced = self._in_flight - self._drain_from + ended
        return replaced >= _USED_SHARE * ended and self._low >= _USED_SHARE * load

    def _start_burst_probe(self, mean: _Tally, load: float) -> None:
        # No baseline to judge the load by: measure one where it is trusted.
        self._open, self._burst = False, (mean, load)
        self._step_to(float(self._initial))

    def _end_burst_probe(self, now: float) -> None:
        assert self._burst is not None
        (high, load), self._burst = self._burst, None
        self._learn_baseline(self._round.mean())
        fixed = self._shape.fixed_tokens
        self._latest = self._round.per_token(fixed)
        self._rounds_to_probe = _PROBE_EVERY  # the baseline was just measured
        if high.per_token(fixed) <= self.tolerance * self._latest:
            # As fast at that load as at ``initial``: no knee below it. Open again.
            self._open, self._verified = True, load
            self._step_to(load)
            return
        # The knee lies between: slow start from ``initial``. The fit of latency
        # on tokens so far mixed calls slowed by the load with calls that were
        # not (the slow ones mostly short: they ended first); start it afresh.
        self._shape = _Shape()
        self._open_round(now)

    def _learn_baseline(self, mean: _Tally) -> None:
        if self._baseline is None:
            self._baseline = mean
        else:
            self._baseline.blend(mean, _PROBE_WEIGHT)

    # -- closed: follow the gradient ----------------------------------------------------------

    def _grow(self, now: float) -> None:
        # The step is per round trip: at small limits a round spans several
        # (it waits for enough calls), and growth must not crawl there.
        trips = (now - self._round_opened) / (_ROUND_TRIPS * self._typical or 1.0)
        step = self.smoothing * math.sqrt(self._estimate) * min(_MAX_TRIPS, max(1.0, trips))
        if self._slow_start:
            # Nothing pushed back yet: grow by a share, to find the knee in a few rounds.
            step = max(step, _SLOW_START_GAIN * self._estimate)
        # Back to where the last cut came from, halving the gap each round: a cut
        # for a passing spike is undone in a few rounds, and were the knee lower,
        # latency cuts again on the way.
        step = max(step, (self._ceiling - self._estimate) / 2)
        self._step_to(self._estimate + step)

    def _cut(self, gradient: float, now: float) -> None:
        latest = self._latest or 0.0
        if self._cut_from is None:
            # One slow round may be a passing stall (a GC pause, a noisy
            # neighbour): the first cut in a row is mild; if the next round
            # is slow too, the cuts go deep.
            gradient = max(gradient, _FIRST_CUT)
            self._cut_from = (self._estimate, latest)
        else:
            since, before = self._cut_from
            if self._estimate <= _REBASE_SHARE * since and latest * self.tolerance > before:
                # Cut hard and latency did not follow: the upstream is slower
                # for everyone, not crowded by us. That is the new baseline.
                self._baseline, self._cut_from = self._round.mean(), None
                self._open_round(now)
                return
        # Congestion must clear fast: cut in proportion to the excess at once.
        self._slow_start = False
        self._ceiling = self._estimate
        self._step_to(self._estimate * gradient)

    def _baseline_per_token(self) -> float | None:
        if self._baseline is None:
            return None
        return self._baseline.per_token(self._shape.fixed_tokens)

    def _start_probe(self) -> None:
        self._rounds_to_probe = _PROBE_EVERY
        self._probe_from = self._estimate
        self._step_to(self._estimate * _PROBE_SHARE)

    def _end_probe(self) -> None:
        back, self._probe_from = self._probe_from, None
        assert back is not None
        baseline, old = self._baseline, self._baseline_per_token()
        if baseline is None or old is None or (self._latest or 0.0) * self.tolerance < old:
            # Far faster below the limit: the limit was well past the knee, and
            # so was the old baseline. Stay down here and probe lower still.
            self._baseline = self._round.mean()
            self._ceiling = 0.0  # cuts measured against the wrong baseline
            self._start_probe()
            return
        baseline.blend(self._round.mean(), _PROBE_WEIGHT)
        self._step_to(back)

    def _was_used(self) -> bool:
        return bool(self._waiters) or self._in_flight >= _USED_SHARE * self.limit

    def _on_drop(self) -> None:
        now = self._clock.now()
        self._round_dropped = True  # no growth in a round that saw a drop
        if now - self._last_drop < self.drop_window:
            return
        self._last_drop = now
        self._open, self._burst = False, None  # pushed back: evidence enough
        self._slow_start = False
        self._ceiling = 0.0  # after drops, back up step by step
        before, self._probe_from, self._cut_from = self._probe_from or self._estimate, None, None
        self._step_to(before * self.backoff)

    def _step_to(self, estimate: float) -> None:
        now = self._clock.now()
        self._regime = now
        self._open_round(now)
        self._estimate = min(float(self.max_limit), max(float(self.min_limit), estimate))
        self._wake()

    def _open_round(self, now: float) -> None:
        self._round_opened = now
        self._round = _Tally()
        self._round_dropped = False
        self._load_before, self._load = self._load, float(self._in_flight)

    def __repr__(self) -> str:
        baseline = self._baseline_per_token()
        latency = (
            ""
            if baseline is None
            else (
                f", baseline={baseline * 1e3:.3g}ms/tok, latest={(self._latest or 0) * 1e3:.3g}"
                f"ms/tok, fixed={self._shape.fixed_tokens:.3g}tok, gradient={self.gradient:.2f}"
            )
        )
        state = ", open" if self._open else ""
        return (
            f"AdaptiveLimit(limit={self.limit}, in_flight={self._in_flight}, "
            f"waiting={self.waiting}, estimate={self._estimate:.2f}{state}{latency})"
        )


class _Tally:
    """Latency and output tokens summed over a set of calls."""

    __slots__ = ("calls", "latency", "tokens")

    def __init__(self, latency: float = 0.0, tokens: float = 0.0, calls: float = 0.0) -> None:
        self.latency = latency
        self.tokens = tokens
        self.calls = calls

    def add(self, latency: float, tokens: int) -> None:
        self.latency += latency
        self.tokens += tokens
        self.calls += 1

    def per_token(self, fixed: float) -> float:
        """Seconds per token, each call's fixed cost counted as ``fixed`` tokens."""
        return self.latency / (self.tokens + fixed * self.calls)

    def mean(self) -> _Tally:
        """The average call of this set."""
        return _Tally(self.latency / self.calls, self.tokens / self.calls, 1.0)

    def blend(self, other: _Tally, weight: float) -> None:
        """Move ``weight`` of the way to ``other`` (both averages of one call)."""
        self.latency += weight * (other.latency - self.latency)
        self.tokens += weight * (other.tokens - self.tokens)

    def __repr__(self) -> str:
        return f"_Tally(latency={self.latency:.3g}, tokens={self.tokens:.3g}, calls={self.calls:g})"


class _Shape:
    """How latency grows with output tokens, ``a + b * tokens``, fitted by EWMA least squares.

    ``fixed_tokens`` is ``a / b``: the fixed cost of a call (the time to first
    token) in tokens' worth. Dividing latency by ``tokens + fixed_tokens``
    makes short and long answers comparable; plain ``latency / tokens`` would
    make a batch of short answers look like congestion.
    """

    __slots__ = ("_calls", "_latency", "_product", "_square", "_tokens")

    def __init__(self) -> None:
        self._calls = 0
        self._tokens = self._latency = self._square = self._product = 0.0

    def add(self, latency: float, tokens: int) -> None:
        self._calls += 1
        # A plain mean of the first calls, the EWMA after: seeded by one call, the
        # EWMA would weigh that call more than the next thousand together.
        weight = max(_SHAPE_ALPHA, 1.0 / self._calls)
        self._tokens += weight * (tokens - self._tokens)
        self._latency += weight * (latency - self._latency)
        self._square += weight * (tokens * tokens - self._square)
        self._product += weight * (latency * tokens - self._product)

    @property
    def fixed_tokens(self) -> float:
        if not self._calls:
            return 0.0
        mean = self._tokens
        spread = self._square - mean * mean
        if spread <= (_SHAPE_MIN_SPREAD * mean) ** 2:
            return 0.0  # answers all about as long: any split will do
        slope = (self._product - mean * self._latency) / spread
        cap = _SHAPE_MAX_FIXED * mean
        if slope <= 0.0:
            return cap  # latency does not grow with tokens: count calls, not tokens
        return min(cap, max(0.0, (self._latency - slope * mean) / slope))

    def __repr__(self) -> str:
        return f"_Shape(fixed_tokens={self.fixed_tokens:.3g})"
