from __future__ import annotations

import asyncio
import random

import pytest

from overdrive.config import HealthConfig, RoutingConfig
from overdrive.route import Router
from overdrive.route._health import Health
from overdrive.testing import FakeClock
from tests.route.workload import Endpoint, call, router

FOUR = "abcd"


def fail(r: Router[Endpoint], endpoint: Endpoint, clock: FakeClock, status: int = 500) -> None:
    attempt = r.attempt(endpoint, "m")
    attempt.sent()
    clock.advance(0.01)
    attempt.answered(status)
    attempt.end()


def states(r: Router[Endpoint]) -> dict[str, str]:
    return {name: h["state"] for name, h in r.health().items()}


def test_ejected_after_consecutive_failures_and_skipped(clock: FakeClock) -> None:
    eps = [Endpoint(n) for n in FOUR]
    r = router(eps, clock, health={"eject_after": 3})
    fail(r, eps[0], clock)
    fail(r, eps[0], clock)
    assert states(r)["a"] == "healthy"
    fail(r, eps[0], clock)
    assert states(r)["a"] == "ejected"
    assert "a" not in {r.pick("m").name for _ in range(200)}
    assert r.health()["a"]["ejected_for_s"] == pytest.approx(30.0, abs=0.1)


def test_a_success_in_between_starts_the_count_over(clock: FakeClock) -> None:
    eps = [Endpoint("a"), Endpoint("b")]
    r = router(eps, clock, health={"eject_after": 3})
    fail(r, eps[0], clock)
    fail(r, eps[0], clock)
    fail(r, eps[0], clock, status=200)
    fail(r, eps[0], clock)
    fail(r, eps[0], clock)
    assert r.health()["a"]["consecutive_failures"] == 2
    assert states(r)["a"] == "healthy"


@pytest.mark.parametrize("status", [400, 404, 429])
def test_client_errors_and_429_are_not_failures(clock: FakeClock, status: int) -> None:
    eps = [Endpoint("a"), Endpoint("b")]
    r = router(eps, clock, health={"eject_after": 2})
    for _ in range(5):
        fail(r, eps[0], clock, status=status)
    assert r.health()["a"]["consecutive_failures"] == 0
    assert states(r)["a"] == "healthy"


def test_connection_failures_and_timeouts_count(clock: FakeClock) -> None:
    eps = [Endpoint("a"), Endpoint("b")]
    r = router(eps, clock, health={"eject_after": 2})
    for _ in range(2):
        attempt = r.attempt(eps[0], "m")
        attempt.sent()
        clock.advance(5.0)
        attempt.failed()
        attempt.end()
    assert states(r)["a"] == "ejected"
    # The time a call went unanswered is a lower bound on its latency.
    assert r.health()["a"]["latency_s"] == {"m": pytest.approx(5.0)}


def test_ejection_time_doubles_up_to_the_cap() -> None:
    health = Health(HealthConfig(eject_after=1, ejection=10, max_ejection=25))
    assert [health.eject(now=0.0) for _ in range(4)] == [10.0, 20.0, 25.0, 25.0]


def test_trial_after_the_ejection_one_success_brings_it_back(clock: FakeClock) -> None:
    eps = [Endpoint("a"), Endpoint("b")]
    r = router(eps, clock, health={"eject_after": 2, "ejection": 10})
    fail(r, eps[0], clock)
    fail(r, eps[0], clock)
    clock.advance(10.0)
    assert states(r)["a"] == "trial"
    trial = r.attempt(eps[0], "m")
    assert trial.trial
    # One call at a time while on trial: a is not offered again meanwhile.
    assert {r.pick("m").name for _ in range(50)} == {"b"}
    trial.sent()
    trial.answered(200)
    trial.end()
    assert states(r)["a"] == "healthy"
    assert "a" in {r.pick("m").name for _ in range(50)}
    assert repr(r).endswith("unhealthy=0)")


def test_a_failed_trial_ejects_again_for_longer(clock: FakeClock) -> None:
    eps = [Endpoint("a"), Endpoint("b")]
    r = router(eps, clock, health={"eject_after": 2, "ejection": 10})
    fail(r, eps[0], clock)
    fail(r, eps[0], clock)
    clock.advance(10.0)
    fail(r, eps[0], clock)  # one failure is enough on trial
    snapshot = r.health()["a"]
    assert (snapshot["state"], snapshot["ejections"]) == ("ejected", 2)
    assert snapshot["ejected_for_s"] == pytest.approx(20.0)


def test_the_ejection_count_starts_over_after_a_healthy_stretch(clock: FakeClock) -> None:
    eps = [Endpoint("a"), Endpoint("b")]
    r = router(eps, clock, health={"eject_after": 1, "ejection": 10, "max_ejection": 40})
    fail(r, eps[0], clock)
    clock.advance(10.0)
    fail(r, eps[0], clock, status=200)  # back
    clock.advance(41.0)
    fail(r, eps[0], clock, status=200)  # healthy for max_ejection: the slate is clean
    fail(r, eps[0], clock)
    assert r.health()["a"]["ejected_for_s"] == pytest.approx(10.0)


def test_never_more_than_the_max_share_ejected(clock: FakeClock) -> None:
    eps = [Endpoint(n) for n in FOUR]
    r = router(eps, clock, health={"eject_after": 1, "max_ejected_share": 0.5})
    for endpoint in eps:
        fail(r, endpoint, clock)
    assert sorted(states(r).values()) == ["ejected", "ejected", "healthy", "healthy"]
    # The two left in keep getting all the traffic, failing or not.
    assert {call(r, clock, 0.05) for _ in range(100)} == {"c", "d"}


def test_a_lone_deployment_is_never_ejected(clock: FakeClock) -> None:
    eps = [Endpoint("a")]
    r = router(eps, clock, health={"eject_after": 1})
    for _ in range(10):
        fail(r, eps[0], clock)
    assert states(r) == {"a": "healthy"}
    assert r.health()["a"]["consecutive_failures"] == 10


def test_with_every_deployment_ejected_the_router_still_picks(clock: FakeClock) -> None:
    eps = [Endpoint("a"), Endpoint("b")]
    r = router(eps, clock, health={"eject_after": 1, "max_ejected_share": 1.0})
    fail(r, eps[0], clock)
    fail(r, eps[1], clock)
    assert set(states(r).values()) == {"ejected"}
    assert r.pick("m").name in {"a", "b"}  # better a doubtful deployment than none


def test_failover_avoids_the_one_that_just_failed(clock: FakeClock) -> None:
    eps = [Endpoint(n) for n in FOUR]
    r = router(eps, clock)
    assert all(r.pick("m", avoid=eps[2]).name != "c" for _ in range(200))


def test_state_is_visible(clock: FakeClock) -> None:
    eps = [Endpoint("a"), Endpoint("b")]
    r = router(eps, clock, health={"eject_after": 1})
    call(r, clock, 0.25)
    pending = r.attempt(eps[1], "m")
    fail(r, eps[0], clock)
    health = r.health()
    assert set(health["a"]) == {
        "state",
        "consecutive_failures",
        "ejections",
        "ejected_for_s",
        "pending",
        "weight",
        "latency_s",
    }
    assert health["b"]["pending"] == 1
    assert health["a"]["state"] == "ejected"
    assert "Health(consecutive_failures=1, ejections=1, ejected_until=" in repr(
        r.deployments[0].health
    )
    assert repr(r.deployments[1]).startswith("Deployment('b', weight=1, pending=1")
    pending.end()


# -- active probes -----------------------------------------------------------------


class Probe:
    def __init__(self) -> None:
        self.up = {"a": True, "b": True, "c": True}
        self.asked: list[tuple[float, str]] = []

    async def __call__(self, endpoint: Endpoint) -> bool:
        self.asked.append((0.0, endpoint.name))
        if endpoint.name == "b":
            raise OSError("probe transport broke")  # counts as down
        return self.up[endpoint.name]


def probed_router(clock: FakeClock, probe: Probe, **health: object) -> Router[Endpoint]:
    settings = RoutingConfig.model_validate({"health": {"probe_interval": 1.0, **health}})
    eps = [Endpoint("a"), Endpoint("b"), Endpoint("c")]
    return Router(eps, settings, clock=clock, rng=random.Random(0), probe=probe)


async def test_failing_probes_eject_and_a_passing_probe_returns_early(clock: FakeClock) -> None:
    probe = Probe()
    probe.up["a"] = False
    r = probed_router(clock, probe, eject_after=3, ejection=60, max_ejected_share=1.0)
    r.start_probes()
    r.start_probes()  # idempotent
    await clock.run_for(3.5, step=0.1)
    assert states(r) == {"a": "ejected", "b": "ejected", "c": "healthy"}
    probe.up["a"] = True
    await clock.run_for(1.2, step=0.1)
    assert states(r)["a"] == "trial"  # well before its 60 s were up
    assert states(r)["b"] == "ejected"
    await r.aclose()
    asked = len(probe.asked)
    await clock.run_for(3.0, step=0.1)
    assert len(probe.asked) == asked  # stopped


async def test_without_a_probe_nothing_runs(clock: FakeClock) -> None:
    r = router([Endpoint("a")], clock)
    r.start_probes()
    assert clock.sleepers == 0
    await r.aclose()
    await asyncio.sleep(0)
