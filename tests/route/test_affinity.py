"""Prefix affinity: a conversation's next turn goes where its prefix was served, within bounds."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from overdrive.apis import CHAT, MESSAGES, RESPONSES
from overdrive.route import Router
from overdrive.route._affinity import MAX_HOLDERS, PrefixIndex
from overdrive.testing import FakeClock
from tests.route.workload import Endpoint, router

SYSTEM = {"role": "system", "content": "You are a careful agent. " * 300}  # ~1.9k tokens


def conversation(name: str, turns: int) -> list[dict[str, Any]]:
    """A conversation ``name`` after ``turns`` exchanges, ending with the user's next turn."""
    messages: list[dict[str, Any]] = [SYSTEM]
    for turn in range(turns):
        messages.append({"role": "user", "content": f"{name}: step {turn}"})
        messages.append({"role": "assistant", "content": f"done {turn}"})
    messages.append({"role": "user", "content": f"{name}: step {turns}"})
    return messages


def chain(messages: list[dict[str, Any]], min_tokens: int = 1024) -> tuple[int, ...]:
    return CHAT.prefix({"model": "m", "messages": messages}, min_tokens)


def served(r: Router[Endpoint], prefix: tuple[int, ...], clock: FakeClock) -> str:
    """Route one call by ``prefix`` and answer it at once: the deployment's name."""
    upstream = r.pick("m", prefix=prefix)
    attempt = r.attempt(upstream, "m", prefix)
    attempt.sent()
    clock.advance(0.1)
    attempt.answered(200)
    attempt.end()
    return upstream.name


FOUR = [Endpoint(name) for name in "abcd"]


# -- the chain -------------------------------------------------------------------


def test_a_later_turn_extends_the_chain_of_the_earlier_one() -> None:
    first, later = chain(conversation("x", 1)), chain(conversation("x", 3))
    assert later[: len(first)] == first
    assert len(later) == len(first) + 4  # two exchanges more: four turns
    other = chain(conversation("y", 1))
    assert other[0] == first[0]  # the shared system prompt
    assert other[1:] != first[1:]


def test_a_prefix_too_short_to_be_cached_is_no_chain() -> None:
    short = [{"role": "user", "content": "hi"}]
    assert chain(short) == ()
    assert chain(short, min_tokens=0) != ()
    assert all(link for link in chain(conversation("x", 2)))


def test_an_explicit_prompt_cache_key_names_the_prefix() -> None:
    body = {"model": "m", "messages": conversation("x", 1), "prompt_cache_key": "ticket-7"}
    other = {"model": "m", "messages": conversation("y", 5), "prompt_cache_key": "ticket-7"}
    assert CHAT.prefix(body) == CHAT.prefix(other)
    assert len(CHAT.prefix(body)) == 1


def test_messages_and_responses_read_their_own_fields() -> None:
    system = "Rules. " * 800
    turns = [{"role": "user", "content": "a"}]
    one = MESSAGES.prefix({"model": "c", "system": system, "messages": turns}, 1024)
    two = MESSAGES.prefix({"model": "c", "system": system + "!", "messages": turns}, 1024)
    assert one
    assert two
    assert one[0] != two[0]  # the system prompt is in the head
    text = RESPONSES.prefix({"model": "m", "instructions": system, "input": "hi"}, 1024)
    assert len(text) == 2  # instructions, then the one string turn


# -- the index -------------------------------------------------------------------


def test_the_index_is_bounded_and_forgets_the_least_recent_first() -> None:
    index = PrefixIndex(max_links=100)
    for n in range(1000):
        index.record((n,), "a")
    assert len(index) == 100
    assert index.holders((0,)) == ()
    assert index.holders((999,)) == ("a",)


def test_a_link_remembers_its_holders_most_recent_last_and_at_most_a_few() -> None:
    index = PrefixIndex()
    for name in "abcdefghijk":
        index.record((1,), name)
    index.record((1,), "e")
    held = index.holders((1,))
    assert len(held) == MAX_HOLDERS
    assert held[-1] == "e"
    assert "a" not in held


# -- routing ---------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
def test_every_turn_of_a_conversation_goes_where_it_started(clock: FakeClock, seed: int) -> None:
    r = router(FOUR, clock, seed=seed)
    names = "pqrstuvw"
    opening = {name: chain(conversation(name, 0)) for name in names}
    # The conversations start at once: nothing is cached yet, so the balancer spreads them.
    started = {name: r.pick("m", prefix=prefix) for name, prefix in opening.items()}
    attempts = [r.attempt(started[name], "m", opening[name]) for name in names]
    for attempt in attempts:
        attempt.sent()
    clock.advance(0.1)
    for attempt in attempts:
        attempt.answered(200)
        attempt.end()
    homes = {name: {upstream.name} for name, upstream in started.items()}
    assert len({home for places in homes.values() for home in places}) > 1
    for turn in range(1, 6):
        for name in names:
            homes[name].add(served(r, chain(conversation(name, turn)), clock))
    assert all(len(places) == 1 for places in homes.values()), homes


def test_a_shared_prefix_held_everywhere_tells_nothing(clock: FakeClock) -> None:
    r = router(FOUR, clock)
    for endpoint in FOUR:  # the system prompt alone has been served by every deployment
        attempt = r.attempt(endpoint, "m", chain([SYSTEM]))
        attempt.sent()
        attempt.answered(200)
        attempt.end()
    picks = Counter(r.pick("m", prefix=chain(conversation("new", 0))).name for _ in range(200))
    assert set(picks) == set("abcd")


def test_without_affinity_the_turns_spread(clock: FakeClock) -> None:
    r = router(FOUR, clock, affinity={"mode": "off"})
    places = {served(r, chain(conversation("p", turn)), clock) for turn in range(12)}
    assert len(places) > 1
    assert r.pool("m").prefixes is None


def test_one_deployment_needs_no_index(clock: FakeClock) -> None:
    assert router([Endpoint("a")], clock).pool("m").prefixes is None
    assert router(FOUR, clock).pool("m").prefixes is not None


def test_a_crowded_home_is_passed_over(clock: FakeClock) -> None:
    r = router(FOUR, clock, affinity={"balance_abs": 3, "balance_rel": 1.5})
    home = served(r, chain(conversation("p", 0)), clock)
    busy = [r.attempt(next(e for e in FOUR if e.name == home), "m") for _ in range(3)]
    picks = Counter(r.pick("m", prefix=chain(conversation("p", 1))).name for _ in range(50))
    assert picks[home] == 0  # 3 pending there, none elsewhere
    for attempt in busy[:2]:
        attempt.end()
    assert r.pick("m", prefix=chain(conversation("p", 1))).name == home  # 1 pending: fine


def test_a_slow_home_is_passed_over(clock: FakeClock) -> None:
    r = router(FOUR, clock)
    home = served(r, chain(conversation("p", 0)), clock)
    for other in FOUR:  # every deployment answers at 0.1 s...
        if other.name != home:
            attempt = r.attempt(other, "m")
            attempt.sent()
            clock.advance(0.1)
            attempt.answered(200)
            attempt.end()
    slow = r.attempt(next(e for e in FOUR if e.name == home), "m")
    slow.sent()
    clock.advance(1.0)  # ...but one call has been out at home for a second
    picks = Counter(r.pick("m", prefix=chain(conversation("p", 1))).name for _ in range(50))
    assert picks[home] == 0
    slow.answered(200)
    slow.end()


def test_a_retry_avoids_the_home_that_failed(clock: FakeClock) -> None:
    r = router(FOUR, clock)
    prefix = chain(conversation("p", 0))
    home = served(r, prefix, clock)
    failed = next(e for e in FOUR if e.name == home)
    assert all(r.pick("m", failed, prefix=prefix).name != home for _ in range(20))
