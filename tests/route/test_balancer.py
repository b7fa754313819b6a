from __future__ import annotations

import random

import pytest

from overdrive import ConfigError
from overdrive.route import Router
from overdrive.route._balancer import LeastLoad, PeakEwma, RoundRobin, balancer_for, cost
from overdrive.route._deployment import Member
from overdrive.testing import FakeClock
from tests.route.workload import Endpoint, call, closed_loop, jittered, router

FOUR = "abcd"


def endpoints(names: str = FOUR) -> list[Endpoint]:
    return [Endpoint(name) for name in names]


def member(r: Router[Endpoint], name: str) -> Member[Endpoint]:
    return next(d for d in r.deployments if d.name == name).members["m"]


def shares(served: dict[str, int]) -> dict[str, float]:
    total = sum(served.values())
    return {name: count / total for name, count in served.items()}


# -- the choice rules ----------------------------------------------------------


def test_round_robin_takes_each_in_turn_and_skips_the_one_to_avoid(clock: FakeClock) -> None:
    eps = endpoints("abc")
    r = router(eps, clock, balancer="round_robin")
    assert [r.pick("m").name for _ in range(6)] == ["a", "b", "c", "a", "b", "c"]
    assert r.pick("m", avoid=eps[0]).name != "a"


def test_least_load_takes_the_fewest_pending_per_weight(clock: FakeClock) -> None:
    eps = [Endpoint("a"), Endpoint("b", weight=4.0), Endpoint("c")]
    r = router(eps, clock, balancer="least_load")
    held = [r.attempt(eps[0], "m"), r.attempt(eps[1], "m"), r.attempt(eps[1], "m")]
    # Load if chosen: a (1+1)/1 = 2, b (2+1)/4 = 0.75, c (0+1)/1 = 1.
    assert r.pick("m").name == "b"
    for attempt in held:
        attempt.end()


def test_least_load_breaks_ties_in_turn_so_no_deployment_starves(clock: FakeClock) -> None:
    # LiteLLM's least-busy sent 93.7% of traffic to one of four deployments
    # when calls were quick: every deployment idle, always the first taken.
    r = router(endpoints(), clock, balancer="least_load")
    served = [call(r, clock, 0.05) for _ in range(400)]
    assert {name: served.count(name) for name in FOUR} == dict.fromkeys(FOUR, 100)


def test_peak_ewma_takes_the_cheaper_of_its_two_choices(clock: FakeClock) -> None:
    eps = endpoints("ab")
    r = router(eps, clock)
    member(r, "a").latency.observe(0.1, clock.now())
    member(r, "b").latency.observe(0.3, clock.now())
    assert {r.pick("m").name for _ in range(20)} == {"a"}  # 0.1 × 1 < 0.3 × 1
    held = [r.attempt(eps[0], "m") for _ in range(3)]
    assert {r.pick("m").name for _ in range(20)} == {"b"}  # 0.1 × 4 > 0.3 × 1
    assert cost(member(r, "a"), clock.now()) == pytest.approx(0.4)
    for attempt in held:
        attempt.end()


def test_peak_ewma_divides_the_cost_by_weight(clock: FakeClock) -> None:
    r = router([Endpoint("a", weight=3.0), Endpoint("b")], clock)
    member(r, "a").latency.observe(0.2, clock.now())
    member(r, "b").latency.observe(0.1, clock.now())
    assert {r.pick("m").name for _ in range(20)} == {"a"}  # 0.2 / 3 < 0.1


def test_unobserved_deployments_get_the_mean_of_the_observed(clock: FakeClock) -> None:
    eps = endpoints("abc")
    r = router(eps, clock)
    member(r, "a").latency.observe(0.1, clock.now())
    member(r, "b").latency.observe(0.3, clock.now())
    # c is new: assumed 0.2, so it beats b but not a.
    picks = {r.pick("m").name for _ in range(200)}
    assert picks == {"a", "c"}


def test_no_headroom_means_not_drawn_while_another_has_some(clock: FakeClock) -> None:
    eps = endpoints()
    eps[0].room = 0.0
    r = router(eps, clock)
    assert "a" not in {call(r, clock, 0.05) for _ in range(400)}
    for endpoint in eps:
        endpoint.room = 0.0  # none has any: by weight, as if all had
    assert {call(r, clock, 0.05) for _ in range(400)} == set(FOUR)


def test_draws_follow_headroom(clock: FakeClock) -> None:
    eps = endpoints()
    eps[0].room = 0.1
    r = router(eps, clock, seed=3)
    served = closed_loop(r, clock, jittered(dict.fromkeys(FOUR, 0.1)), seconds=50, concurrency=8)
    assert shares(served)["a"] < 0.15  # drawn far less often than its 25%


# -- fair shares and weights ------------------------------------------------------


@pytest.mark.parametrize("balancer", ["peak_ewma", "least_load", "round_robin"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_equal_healthy_deployments_get_equal_shares(
    clock: FakeClock, balancer: str, seed: int
) -> None:
    r = router(endpoints(), clock, seed=seed, balancer=balancer)
    latency = jittered(dict.fromkeys(FOUR, 0.1), seed=seed)
    served = closed_loop(r, clock, latency, seconds=50, concurrency=16)
    for share in shares(served).values():
        assert share == pytest.approx(0.25, rel=0.10)


@pytest.mark.parametrize(
    ("weights", "expected"),
    [((3.0, 1.0), (0.75, 0.25)), ((2.0, 1.0, 1.0, 1.0), (0.4, 0.2, 0.2, 0.2))],
)
@pytest.mark.parametrize("balancer", ["peak_ewma", "least_load"])
def test_weights_set_the_shares(
    clock: FakeClock, balancer: str, weights: tuple[float, ...], expected: tuple[float, ...]
) -> None:
    eps = [Endpoint(name, weight=w) for name, w in zip(FOUR, weights, strict=False)]
    r = router(eps, clock, balancer=balancer)
    latency = jittered({e.name: 0.1 for e in eps})
    served = shares(closed_loop(r, clock, latency, seconds=75, concurrency=16))
    for endpoint, share in zip(eps, expected, strict=True):
        assert served[endpoint.name] == pytest.approx(share, rel=0.10)


# -- slow deployments -------------------------------------------------------------


def test_peak_ewma_reacts_to_one_slow_answer_at_once(clock: FakeClock) -> None:
    eps = endpoints("ab")
    r = router(eps, clock)
    for _ in range(50):
        call(r, clock, 0.1)
    slow = member(r, "a")
    attempt = r.attempt(eps[0], "m")
    attempt.sent()
    clock.advance(2.0)
    attempt.answered(200)
    attempt.end()
    assert slow.latency.current(clock.now()) == pytest.approx(2.0)
    assert {call(r, clock, 0.1) for _ in range(50)} == {"b"}


def test_a_slow_deployment_recovers_by_decay(clock: FakeClock) -> None:
    r = router(endpoints(), clock)
    base = dict.fromkeys(FOUR, 0.1)
    jitter = jittered(base)

    def latency(name: str, now: float) -> float:
        slow = name == "a" and 20.0 <= now < 40.0
        return jitter(name, now) + (2.0 if slow else 0.0)

    closed_loop(r, clock, latency, seconds=20, concurrency=16)
    window = closed_loop(r, clock, latency, seconds=20, concurrency=16)
    assert window["a"] <= 16  # a handful of slow calls while it was slow
    closed_loop(r, clock, latency, seconds=30, concurrency=16)  # forgetting
    later = closed_loop(r, clock, latency, seconds=30, concurrency=16)
    assert shares(later)["a"] == pytest.approx(0.25, rel=0.10)


def test_a_call_running_past_the_estimate_counts_before_it_ends(clock: FakeClock) -> None:
    eps = endpoints("ab")
    r = router(eps, clock)
    for _ in range(20):
        call(r, clock, 0.1)
    hung = r.attempt(eps[0], "m")
    hung.sent()
    busy = [r.attempt(eps[1], "m") for _ in range(3)]
    clock.advance(0.05)
    assert r.pick("m").name == "a"  # 0.1 × 2 < 0.1 × 4: the hung call is young
    clock.advance(1.0)
    # Now a's oldest call is 1.05 s old: 1.05 × 2 > 0.1 × 4, though it never answered.
    assert {r.pick("m").name for _ in range(20)} == {"b"}
    for attempt in (hung, *busy):
        attempt.end()
    assert member(r, "a").latency.current(clock.now()) == pytest.approx(1.05)  # a lower bound


def slow_calls(balancer: str) -> int:
    """Calls sent to ``a`` while it is 2 s slow, from 5 s to 25 s of a 50 s run."""
    clock = FakeClock()
    r = router(endpoints(), clock, balancer=balancer)
    jitter = jittered(dict.fromkeys(FOUR, 0.1))
    count = 0

    def latency(name: str, now: float) -> float:
        nonlocal count
        if name == "a" and 5.0 <= now < 25.0:
            count += 1
            return jitter(name, now) + 2.0
        return jitter(name, now)

    closed_loop(r, clock, latency, seconds=50, concurrency=16)
    return count


def test_a_slow_window_costs_peak_ewma_least() -> None:
    peak, least, turns = (slow_calls(b) for b in ("peak_ewma", "least_load", "round_robin"))
    assert peak <= 16
    # Least load only sees the pile-up; round robin keeps sending (each of
    # the 16 callers is stuck 2 s at every fourth call, or it would be more).
    assert 3 * peak < least < turns


# -- construction ----------------------------------------------------------------


def test_balancers_by_name() -> None:
    assert isinstance(balancer_for("peak_ewma", random.Random(0)), PeakEwma)
    assert isinstance(balancer_for("least_load"), LeastLoad)
    assert isinstance(balancer_for("round_robin"), RoundRobin)
    with pytest.raises(ConfigError) as info:
        balancer_for("random")
    assert info.value.field == "routing.balancer"
    assert repr(LeastLoad()) == "LeastLoad(turn=0)"
