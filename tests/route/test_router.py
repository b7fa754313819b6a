from __future__ import annotations

import math

import pytest

from overdrive import UnknownModelError
from overdrive.route import Router
from overdrive.route._latency import LatencyEstimate
from overdrive.testing import FakeClock
from tests.route.workload import Endpoint, router


def test_the_peak_is_believed_at_once_and_decays_away() -> None:
    estimate = LatencyEstimate(decay=10.0)
    assert estimate.current(0.0) is None
    estimate.observe(0.1, now=0.0)
    estimate.observe(2.0, now=1.0)
    assert estimate.current(1.0) == 2.0
    assert estimate.current(11.0) == pytest.approx(2.0 / math.e)  # left alone: towards zero


def test_lower_samples_pull_it_down_by_time_not_by_count() -> None:
    fast, slow = LatencyEstimate(decay=10.0), LatencyEstimate(decay=10.0)
    for estimate, every in ((fast, 0.01), (slow, 1.0)):
        estimate.observe(1.0, now=0.0)
        for step in range(1, round(10 / every) + 1):
            estimate.observe(0.1, now=step * every)
    # Ten seconds of samples at 0.1, whether 1000 or 10 of them: 1/e of the gap left.
    expected = 0.1 + 0.9 / math.e
    assert fast.current(10.0) == pytest.approx(expected, rel=1e-6)
    assert slow.current(10.0) == pytest.approx(expected, rel=1e-6)
    assert repr(fast) == f"LatencyEstimate({expected * 1000:.1f}ms, decay=10s)"


def test_a_lower_bound_only_raises_the_estimate() -> None:
    estimate = LatencyEstimate(decay=10.0)
    estimate.observe(0.5, now=0.0)
    estimate.at_least(0.2, now=0.0)
    assert estimate.current(0.0) == 0.5
    estimate.at_least(3.0, now=0.0)
    assert estimate.current(0.0) == 3.0


def test_models_serves_and_unknown_models(clock: FakeClock) -> None:
    r = router([Endpoint("a", ["m", "e"]), Endpoint("b", ["m"])], clock)
    assert r.models() == ["m", "e"]
    assert r.serves("e")
    assert not r.serves("x")
    assert r.pick("e").name == "a"
    with pytest.raises(UnknownModelError, match="'x'"):
        r.pick("x")
    assert repr(r) == (
        "Router(balancer='peak_ewma', deployments_per_model={'m': 2, 'e': 1}, unhealthy=0)"
    )


def test_plain_router_needs_only_names_and_models(clock: FakeClock) -> None:
    r: Router[Endpoint] = Router([Endpoint("a"), Endpoint("b")], clock=clock)
    assert r.balancer == "peak_ewma"
    assert r.pick("m").name in {"a", "b"}
    assert r.health()["a"]["weight"] == 1.0


def test_attempts_count_as_pending_until_they_end(clock: FakeClock) -> None:
    eps = [Endpoint("a"), Endpoint("b")]
    r = router(eps, clock)
    attempt = r.attempt(eps[0], "m")
    assert repr(attempt) == "Attempt('a', 'm', routed)"
    attempt.sent()
    clock.advance(0.2)
    attempt.answered(200)
    assert r.health()["a"]["pending"] == 1  # a stream is load until it is read
    attempt.end()
    attempt.end()  # idempotent
    assert r.health()["a"]["pending"] == 0
    assert r.health()["a"]["latency_s"] == {"m": 0.2}


def test_an_attempt_given_up_on_the_wire_is_a_lower_bound(clock: FakeClock) -> None:
    eps = [Endpoint("a")]
    r = router(eps, clock)
    attempt = r.attempt(eps[0], "m")
    attempt.sent()
    clock.advance(4.0)
    attempt.end()  # cancelled: the caller left
    assert r.health()["a"] == {
        "state": "healthy",
        "consecutive_failures": 0,
        "ejections": 0,
        "ejected_for_s": 0.0,
        "pending": 0,
        "weight": 1.0,
        "latency_s": {"m": 4.0},
    }


def test_a_slow_5xx_is_a_lower_bound_a_quick_one_changes_nothing(clock: FakeClock) -> None:
    eps = [Endpoint("a")]
    r = router(eps, clock)
    for seconds, status in ((0.1, 200), (0.01, 500), (30.0, 504)):
        attempt = r.attempt(eps[0], "m")
        attempt.sent()
        clock.advance(seconds)
        attempt.answered(status)
        attempt.end()
        if status == 500:
            assert r.health()["a"]["latency_s"] == {"m": pytest.approx(0.1, rel=0.01)}
    assert r.health()["a"]["latency_s"] == {"m": 30.0}
