"""Which upstream serves a call: a balancer per model over its healthy deployments.

The router keeps, per deployment, the calls pending and its health, and per
(deployment, model) a peak-EWMA latency estimate. The dispatcher tells it
what happened to every attempt through an :class:`Attempt`; the balancer
reads the state when it picks.

>>> from dataclasses import dataclass
>>> @dataclass
... class Endpoint:
...     name: str
...     models: list[str]
>>> router = Router([Endpoint("a", ["m"]), Endpoint("b", ["m"])])
>>> router.pick("m").name in {"a", "b"}
True

Pools are kept per API as well as per model: a deployment speaks one API
(``api`` tells which; :data:`DEFAULT_API` unless told), and a call picks only
among the deployments of its own, so no call is sent where it cannot be
understood:

>>> router = Router([Endpoint("oai", ["m"]), Endpoint("claude", ["m"])],
...                 api=lambda e: "anthropic" if e.name == "claude" else DEFAULT_API)
>>> router.pick("m", api="anthropic").name
'claude'
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, TypeVar

from .._clock import Clock, SystemClock
from .._errors import UnknownModelError
from ..config import AffinityConfig, RoutingConfig
from ._affinity import PrefixIndex
from ._balancer import Balancer, balancer_for
from ._deployment import DEFAULT_API, Deployment, Member, Named
from ._probe import Prober

__all__ = ["DEFAULT_API", "Attempt", "Pool", "Router"]

_log = logging.getLogger("overdrive.route")

U = TypeVar("U", bound=Named)


class Pool(Generic[U]):
    """One model's deployments, the balancer that picks among them, and their prefixes.

    ``prefixes`` is None when calls are not routed by prefix; ``warming`` is
    True while some deployment has answered nothing (see :meth:`Router.race`).
    """

    __slots__ = ("allowed_ejected", "balancer", "members", "prefixes", "warming")

    def __init__(
        self,
        members: Sequence[Member[U]],
        balancer: Balancer,
        share: float,
        prefixes: PrefixIndex | None,
    ) -> None:
        self.members = tuple(members)
        self.balancer = balancer
        # Rounded down, so a model with one deployment never loses it.
        self.allowed_ejected = math.floor(share * len(self.members) + 1e-9)
        # None with one deployment (nowhere else to go) or affinity off.
        self.prefixes = prefixes if len(self.members) > 1 else None
        # Until every member has answered once, some are unknown (see Router.race).
        self.warming = len(self.members) > 1


class Router(Generic[U]):
    """Picks a deployment per call; learns from every attempt's outcome.

    ``weight`` and ``headroom`` tell a deployment's relative capacity and the
    share of its rate-limit burst still free for a model (both default to
    1); ``api`` the API family it speaks (:data:`DEFAULT_API` unless told);
    ``probe`` (if given) is the active health check, run every
    ``settings.health.probe_interval`` once :meth:`start_probes` is called.
    """

    __slots__ = (
        "_by_name",
        "_clock",
        "_pools",
        "_prober",
        "_settings",
        "_unhealthy",
        "deployments",
    )

    def __init__(
        self,
        upstreams: Sequence[U],
        settings: RoutingConfig | None = None,
        *,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        weight: Callable[[U], float] | None = None,
        headroom: Callable[[U, str], float] | None = None,
        probe: Callable[[U], Awaitable[bool]] | None = None,
        api: Callable[[U], str] | None = None,
    ) -> None:
        self._settings = settings = settings or RoutingConfig()
        self._clock = clock or SystemClock()
        rng = rng or random.Random()
        self.deployments = [
            Deployment(
                u, weight(u) if weight else 1.0, settings.health, api(u) if api else DEFAULT_API
            )
            for u in upstreams
        ]
        self._by_name = {d.name: d for d in self.deployments}
        # By API, then by model: a pick is two lookups whatever the number of APIs.
        self._pools: dict[str, dict[str, Pool[U]]] = {}
        by_api: dict[str, list[Deployment[U]]] = {}
        for deployment in self.deployments:
            by_api.setdefault(deployment.api, []).append(deployment)
        for speaks, deployments in by_api.items():
            pools = self._pools[speaks] = {}
            for model in dict.fromkeys(m for d in deployments for m in d.upstream.models):
                pools[model] = self._pool(deployments, model, headroom, rng)
        self._unhealthy = 0  # deployments ejected or on trial
        self._prober: Prober[Deployment[U]] | None = None
        if probe is not None:
            self._prober = Prober(
                self.deployments,
                lambda d: probe(d.upstream),
                self._probed,
                interval=settings.health.probe_interval,
                clock=self._clock,
                rng=rng,
            )

    def _pool(
        self,
        deployments: list[Deployment[U]],
        model: str,
        headroom: Callable[[U, str], float] | None,
        rng: random.Random,
    ) -> Pool[U]:
        members = []
        for deployment in deployments:
            if model in deployment.upstream.models:
                room = _bind(headroom, deployment.upstream, model)
                member = Member(deployment, model, self._settings.decay, room)
                deployment.members[model] = member
                members.append(member)
        balancer = balancer_for(self._settings.balancer, random.Random(rng.random()))
        affinity = self._settings.affinity
        prefixes = PrefixIndex(affinity.max_links) if affinity.mode == "prefix" else None
        return Pool(members, balancer, self._settings.health.max_ejected_share, prefixes)

    @property
    def balancer(self) -> str:
        return self._settings.balancer

    # -- picking ---------------------------------------------------------------

    def pick(
        self,
        model: str,
        avoid: U | None = None,
        api: str = DEFAULT_API,
        prefix: Sequence[int] = (),
    ) -> U:
        """A deployment of ``api`` for the next call of ``model``, not ``avoid`` if possible.

        With a ``prefix`` chain (``Api.prefix``) and affinity on, the call goes
        where the longest part of it was served, unless that deployment is
        crowded or slow (``[routing.affinity]``); otherwise the balancer picks.
        """
        return self.pick_in(self.pool(model, api), avoid, prefix)

    def pool(self, model: str, api: str = DEFAULT_API) -> Pool[U]:
        """The deployments of ``api`` serving ``model``; :class:`UnknownModelError` if none."""
        pools = self._pools.get(api)
        pool = pools.get(model) if pools is not None else None
        if pool is None:
            raise self.unknown(model, api)
        return pool

    def pick_in(self, pool: Pool[U], avoid: U | None = None, prefix: Sequence[int] = ()) -> U:
        """:meth:`pick` in a pool already looked up (a call's first pick reads the pool too)."""
        now = self._clock.now()
        candidates: Sequence[Member[U]] = pool.members
        if avoid is not None or self._unhealthy:
            candidates = self._candidates(pool, avoid, now)
        if pool.warming:
            candidates = self._known_enough(pool, candidates)
        if prefix and pool.prefixes is not None and len(candidates) > 1:
            held = self._affine(pool, pool.prefixes, candidates, prefix, now)
            if held is not None:
                return held.upstream
        return pool.balancer.choose(candidates, now).upstream

    @property
    def affinity(self) -> AffinityConfig:
        return self._settings.affinity

    def race(self, upstream: U, model: str) -> bool:
        """Whether a call of ``model`` routed to ``upstream`` should also go elsewhere.

        True (and counted) while that deployment has answered nothing, within
        ``cold_races`` (``[routing] cold_start``).
        """
        settings = self._settings
        deployment = self._by_name[upstream.name]
        member = deployment.members[model]
        if settings.cold_start == "off" or member.answers or member.races >= settings.cold_races:
            return False
        if len(self._pools[deployment.api][model].members) < 2:
            return False  # nowhere else to send it
        member.races += 1
        return True

    def answered(self, upstream: U, model: str) -> bool:
        """Whether ``upstream`` has answered a call of ``model`` (below 400) yet."""
        return self._by_name[upstream.name].members[model].answers > 0

    def _affine(
        self,
        pool: Pool[U],
        prefixes: PrefixIndex,
        candidates: Sequence[Member[U]],
        prefix: Sequence[int],
        now: float,
    ) -> Member[U] | None:
        """The candidate holding the deepest part of ``prefix``, if it is fit to take it."""
        holders = prefixes.holders(prefix)
        if not holders:
            return None
        held = [m for m in candidates if m.deployment.name in holders]
        if not held or len(held) == len(candidates):  # nowhere, or everywhere: no preference
            return None
        target = held[0] if len(held) == 1 else pool.balancer.choose(held, now)
        return None if self._unfit(target, candidates, now) else target

    def _unfit(self, target: Member[U], candidates: Sequence[Member[U]], now: float) -> bool:
        """Whether ``target`` is too much busier or slower than the rest for its cache to pay."""
        settings = self._settings.affinity
        load = target.deployment.pending / target.deployment.weight
        least = min(m.deployment.pending / m.deployment.weight for m in candidates)
        if load - least >= settings.balance_abs and load > settings.balance_rel * least:
            return True
        if not target.latency.observed:
            return False
        fastest = min(m.expected_latency(now, math.inf) for m in candidates if m.latency.observed)
        return target.expected_latency(now, math.inf) > settings.slower * fastest

    def _known_enough(self, pool: Pool[U], candidates: Sequence[Member[U]]) -> Sequence[Member[U]]:
        """The candidates, less the unknown ones whose races are spent (while others remain).

        A deployment that has answered nothing after ``cold_races`` raced calls
        is slow or stuck: it gets no more calls until it answers one.
        """
        if self._settings.cold_start == "off" or all(m.answers for m in pool.members):
            pool.warming = False
            return candidates
        budget = self._settings.cold_races
        usable = [m for m in candidates if m.answers or m.races < budget]
        return usable or candidates

    def _candidates(self, pool: Pool[U], avoid: U | None, now: float) -> Sequence[Member[U]]:
        """The available members other than ``avoid``; failing that, the best there is."""
        usable = [m for m in pool.members if _available(m.deployment, now)]
        others = [m for m in usable if m.deployment.upstream is not avoid]
        # All ejected can only happen with max_ejected_share = 1: better a
        # doubtful deployment than none.
        return others or usable or pool.members

    def attempt(self, upstream: U, model: str, prefix: Sequence[int] = ()) -> Attempt:
        """Start tracking one attempt of ``model`` on ``upstream`` (counted as pending).

        Once it is answered, ``prefix`` is recorded as held there.
        """
        deployment = self._by_name[upstream.name]
        index = None
        if prefix:
            pool = self._pools[deployment.api][model]
            index = pool.prefixes
        return Attempt(self, deployment.members[model], prefix if index is not None else (), index)

    def serves(self, model: str, api: str | None = None) -> bool:
        """Whether a deployment of ``api`` (of any API, with None) serves ``model``."""
        if api is not None:
            return model in self._pools.get(api, ())
        return any(model in pools for pools in self._pools.values())

    def models(self, api: str | None = None) -> list[str]:
        """The models served through ``api`` (through any API, with None), each once."""
        if api is not None:
            return list(self._pools.get(api, ()))
        return list(dict.fromkeys(m for pools in self._pools.values() for m in pools))

    def unknown(self, model: str, api: str = DEFAULT_API) -> UnknownModelError:
        """The error for a call of ``model`` through ``api`` that no deployment serves.

        It names the API once more than one is configured (or the call's is
        not), and the APIs whose deployments do serve the model.
        """
        if set(self._pools) <= {api}:
            return UnknownModelError(model, self.models())
        served_by = [other for other, pools in self._pools.items() if model in pools]
        return UnknownModelError(model, self.models(api), api=api, served_by=served_by)

    # -- learning --------------------------------------------------------------

    def _succeeded(self, deployment: Deployment[U], now: float) -> None:
        if deployment.health.success(now):
            self._unhealthy -= 1
            _log.info("deployment %r is back after a successful trial call", deployment.name)

    def _failed(self, deployment: Deployment[U], now: float) -> None:
        health = deployment.health
        if not health.failure(now) or not self._may_eject(deployment, now):
            return
        was_healthy = health.state(now) == "healthy"
        seconds = health.eject(now)
        if was_healthy:
            self._unhealthy += 1
        _log.warning(
            "deployment %r ejected for %gs after %d failure(s) in a row",
            deployment.name,
            seconds,
            health.consecutive_failures,
        )

    def _may_eject(self, deployment: Deployment[U], now: float) -> bool:
        """True unless ejecting it would eject more than the allowed share of a model."""
        pools = self._pools[deployment.api]
        for model in deployment.members:
            pool = pools[model]
            ejected = sum(
                1
                for other in pool.members
                if other.deployment is not deployment
                and other.deployment.health.state(now) == "ejected"
            )
            if ejected + 1 > pool.allowed_ejected:
                return False
        return True

    def _probed(self, deployment: Deployment[U], ok: bool) -> None:
        now = self._clock.now()
        if ok:
            deployment.health.reprieve(now)  # only shortens an ejection
        else:
            self._failed(deployment, now)

    # -- probes and lifecycle ----------------------------------------------------

    def start_probes(self) -> None:
        """Start the active probes on the running loop (no-op without a probe, or if started)."""
        if self._prober is not None:
            self._prober.start()

    async def aclose(self) -> None:
        if self._prober is not None:
            await self._prober.aclose()

    def health(self) -> dict[str, dict[str, Any]]:
        """Each deployment's state, failures in a row, ejection left, calls pending, latency."""
        now = self._clock.now()
        return {
            d.name: {
                **d.health.snapshot(now),
                "pending": d.pending,
                "weight": d.weight,
                "latency_s": {
                    model: _rounded(m.latency.current(now)) for model, m in d.members.items()
                },
            }
            for d in self.deployments
        }

    def __repr__(self) -> str:
        sizes = {
            model if speaks == DEFAULT_API else f"{speaks}:{model}": len(pool.members)
            for speaks, pools in self._pools.items()
            for model, pool in pools.items()
        }
        return (
            f"Router(balancer={self.balancer!r}, deployments_per_model={sizes}, "
            f"unhealthy={self._unhealthy})"
        )


class Attempt:
    """One attempt on one deployment, from routing to the end of its answer.

    ``sent`` when it goes on the wire; then ``answered`` (a status came back)
    or ``failed`` (no answer: timeout, connection error); ``end`` when its
    answer is read or it is given up. ``end`` is idempotent, and an attempt
    ended while still on the wire (cancelled: the caller left, a hedge won)
    counts as having taken at least that long.
    """

    __slots__ = ("_ended", "_member", "_prefix", "_prefixes", "_router", "_sent_at", "_trial")

    def __init__(
        self,
        router: Router[Any],
        member: Member[Any],
        prefix: Sequence[int] = (),
        prefixes: PrefixIndex | None = None,
    ) -> None:
        self._router = router
        self._member = member
        self._prefix = prefix
        self._prefixes = prefixes
        self._sent_at: float | None = None
        self._ended = False
        deployment = member.deployment
        deployment.pending += 1
        self._trial = deployment.health.state(router._clock.now()) == "trial"
        if self._trial:
            deployment.trials += 1

    @property
    def trial(self) -> bool:
        """True if this is the one call a deployment on trial gets."""
        return self._trial

    def sent(self) -> None:
        now = self._router._clock.now()
        self._sent_at = now
        self._member.sending[self] = now

    def answered(self, status: int) -> None:
        """A status came back: 5xx is a failure; a 2xx/3xx answer's latency is a sample."""
        now = self._router._clock.now()
        started = self._member.sending.pop(self, None)
        deployment = self._member.deployment
        if status >= 500:
            if started is not None:  # a 504 after 30 s says "at least that slow"
                self._member.latency.at_least(now - started, now)
            self._router._failed(deployment, now)
            return
        if status != 429:  # a 429 says nothing about health, nor latency
            self._router._succeeded(deployment, now)
        if status < 400:
            self._member.answers += 1
            if started is not None:
                self._member.latency.observe(now - started, now)
            if self._prefixes is not None:  # the prompt is now cached there
                self._prefixes.record(self._prefix, deployment.name)

    def failed(self) -> None:
        """No answer at all: counts against health, and its time as a lower bound."""
        now = self._router._clock.now()
        started = self._member.sending.pop(self, None)
        if started is not None:
            self._member.latency.at_least(now - started, now)
        self._router._failed(self._member.deployment, now)

    def end(self) -> None:
        if self._ended:
            return
        self._ended = True
        deployment = self._member.deployment
        deployment.pending -= 1
        if self._trial:
            deployment.trials -= 1
        started = self._member.sending.pop(self, None)
        if started is not None:  # given up while on the wire
            now = self._router._clock.now()
            self._member.latency.at_least(now - started, now)

    def __repr__(self) -> str:
        state = "ended" if self._ended else ("sent" if self._sent_at is not None else "routed")
        return f"Attempt({self._member.deployment.name!r}, {self._member.model!r}, {state})"


def _available(deployment: Deployment[Any], now: float) -> bool:
    state = deployment.health.state(now)
    if state == "healthy":
        return True
    # On trial: one call at a time until one succeeds.
    return state == "trial" and deployment.trials == 0


def _bind(
    headroom: Callable[[U, str], float] | None, upstream: U, model: str
) -> Callable[[], float] | None:
    if headroom is None:
        return None
    return lambda: headroom(upstream, model)


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 4)
