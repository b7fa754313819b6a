"""Budgets: an engine's or a key's spend per day or month stops calls (or moves them) at its figure.

The engine tests run real calls through the simulated upstream on an
injected clock (its time is the wall time budgets read); the replica test
runs two gateways sharing one real Redis.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from overdrive import ConfigError, Overdrive
from overdrive.apis import CHAT
from overdrive.config import BudgetConfig, load_config
from overdrive.cost import Budget, BudgetExceededError, LocalTally, RedisTally
from overdrive.cost._tally import MAX_ENTRIES
from overdrive.gateway import GatewayApp, hash_key
from overdrive.gateway._server import GatewayServer
from overdrive.monitor.names import BUDGET_DECISIONS, COST
from overdrive.sim import SimConfig, SimServer
from overdrive.testing import FakeClock
from tests.redis_server import RedisServer

MODEL = "gpt-4o"
CHEAP = "gpt-4o-mini"
# Round prices, so a few short calls spend a budget: $100 per million tokens, in and out.
PER_MILLION = 100.0
PRICES = [{"model": m, "input": PER_MILLION, "output": PER_MILLION} for m in (MODEL, CHEAP)]
BUDGET_USD = 0.05
SECRET = "sk-budgeted-41d2"


@pytest.fixture(scope="module")
def sim() -> Iterator[SimServer]:
    with SimServer(SimConfig(ttft_s=0.0, per_token_s=0.0, models=(MODEL, CHEAP))) as server:
        yield server


def config(sim: SimServer, **extra: Any) -> dict[str, Any]:
    upstream = {"name": "sim", "base_url": sim.base_url, "models": [MODEL, CHEAP]}
    return {"upstreams": [upstream], "prices": PRICES, **extra}


def ask(n: int, model: str = MODEL) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": f"question {n}"}]}


# -- periods and the tally -------------------------------------------------------


def test_a_period_is_the_utc_day_or_month_and_ends_at_the_next() -> None:
    new_year_eve = datetime(2026, 12, 31, 23, 59, tzinfo=UTC).timestamp()
    day = Budget("engine", "the engine", BudgetConfig(usd=1.0, period="day"))
    month = Budget("engine", "the engine", BudgetConfig(usd=1.0, period="month"))
    assert day.period_of(new_year_eve) == (
        "2026-12-31",
        datetime(2027, 1, 1, tzinfo=UTC).timestamp(),
    )
    assert month.period_of(new_year_eve) == (
        "2026-12",
        datetime(2027, 1, 1, tzinfo=UTC).timestamp(),
    )
    assert day.entry(new_year_eve)[0] == "engine:2026-12-31"


async def test_the_local_tally_holds_at_most_its_bound_dropping_the_oldest() -> None:
    tally = LocalTally()
    for n in range(MAX_ENTRIES + 10):
        await tally.add(f"key:k{n}:2026-12", 0.5, ends=0.0)
    assert len(tally._spent) == MAX_ENTRIES
    assert await tally.read(["key:k0:2026-12", f"key:k{MAX_ENTRIES + 9}:2026-12"]) == [0.0, 0.5]


async def test_a_failing_redis_keeps_the_spend_here_and_loses_none(
    redis_server: RedisServer,
) -> None:
    clock = FakeClock()
    tally = RedisTally(redis_server.url, namespace="t", clock=clock, timeout=0.5)
    try:
        await tally.add("engine:2026-12", 0.25, ends=2e9)
        redis_server.stop()
        await tally.add("engine:2026-12", 0.5, ends=2e9)  # Redis is down: kept here
        assert await tally.read(["engine:2026-12"]) == [0.75]
        redis_server.start()
        clock.advance(5.0)  # past the breaker's backoff
        await tally.add("engine:2026-12", 0.125, ends=2e9)  # the unsent 0.5 goes with it
        fresh = RedisTally(redis_server.url, namespace="t")
        try:
            # The restarted server kept nothing: it holds the unsent 0.5 and the new 0.125.
            assert await fresh.read(["engine:2026-12"]) == [0.625]
        finally:
            await fresh.aclose()
    finally:
        await tally.aclose()


# -- an engine's budget ------------------------------------------------------------


async def test_the_engine_stops_at_its_budget_and_serves_the_cache_still(sim: SimServer) -> None:
    clock = FakeClock(start=datetime(2026, 12, 6, 12, tzinfo=UTC).timestamp())
    od = Overdrive(load_config(config(sim, budget={"usd": BUDGET_USD})), clock=clock)
    async with od:
        spent, n = 0.0, 0
        while spent < BUDGET_USD:
            result = await od.request(CHAT.call(ask(n)))
            assert result.status == 200
            spent += result.cost
            n += 1
        with pytest.raises(BudgetExceededError) as refused:
            await od.chat(**ask(n))
        cached = await od.chat(**ask(0))  # an answer the cache holds costs nothing
        booked = od.metrics.value(COST)
        status = od.stats()["budgets"]
        refusals = od.metrics.value(BUDGET_DECISIONS, scope="engine", outcome="refused")
    assert n >= 2  # the budget took several calls to spend
    assert refused.value.spent == pytest.approx(spent, rel=1e-12)
    assert refused.value.limit == BUDGET_USD
    assert refused.value.retry_after == 12 * 3600  # noon: it renews at midnight UTC
    assert "the engine has spent $" in str(refused.value)
    assert "renews in 12h 00m" in str(refused.value)
    assert cached["choices"]
    assert booked == pytest.approx(spent, rel=1e-12)  # the counter is the same money
    assert status == [
        {
            "scope": "engine",
            "period": "day",
            "usd": BUDGET_USD,
            "spent_usd": pytest.approx(spent, rel=1e-12),
            "fallback": None,
            "renews_in_s": 12 * 3600,
        }
    ]
    assert refusals == 1


async def test_the_next_day_the_budget_is_whole_again(sim: SimServer) -> None:
    clock = FakeClock(start=datetime(2026, 12, 6, 23, tzinfo=UTC).timestamp())
    od = Overdrive(load_config(config(sim, budget={"usd": 1e-9})), clock=clock)
    async with od:
        await od.chat(**ask(100))  # the first call finds nothing spent yet
        with pytest.raises(BudgetExceededError):
            await od.chat(**ask(101))
        clock.advance(3600)  # midnight
        answer = await od.chat(**ask(101))
    assert answer["choices"]


async def test_a_budget_with_a_fallback_moves_calls_to_the_cheaper_model(sim: SimServer) -> None:
    budget = {"usd": 1e-9, "fallback": CHEAP}
    async with Overdrive.from_config(config(sim, budget=budget), clock=FakeClock()) as od:
        first = await od.request(CHAT.call(ask(200)))
        moved = [await od.request(CHAT.call(ask(n))) for n in (201, 202)]
        decisions = od.metrics.value(BUDGET_DECISIONS, scope="engine", outcome="moved")
        by_model = od.stats()["cost_usd"]
    assert first.model == MODEL
    assert [r.model for r in moved] == [CHEAP, CHEAP]
    assert all(r.status == 200 for r in moved)
    assert decisions == 2
    assert set(by_model) == {MODEL, CHEAP}  # the fallback's calls still cost (and count)


# -- config -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"budget": {"usd": 0}}, "budget.usd"),
        ({"budget": {"usd": 1, "period": "week"}}, "budget.period"),
        ({"budget": {"usd": 1, "fallback": "not-served"}}, "budget.fallback"),
        (
            {
                "gateway": {
                    "keys": [
                        {"name": "a", "key_sha256": "0" * 64},
                        {
                            "name": "b",
                            "key_sha256": "1" * 64,
                            "budget": {"usd": 1, "fallback": "nope"},
                        },
                    ]
                }
            },
            "gateway.keys[1].budget.fallback",
        ),
    ],
)
def test_a_bad_budget_names_its_field(sim: SimServer, extra: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_config(config(sim, **extra))
    assert raised.value.field == field


# -- a key's budget, shared by two replicas -------------------------------------------


@pytest.fixture
def replicas(sim: SimServer, redis_server: RedisServer) -> Iterator[list[GatewayServer]]:
    key = {"name": "team-b", "key_sha256": hash_key(SECRET), "budget": {"usd": BUDGET_USD}}
    shared = config(
        sim, redis_url=redis_server.url, gateway={"keys": [key]}, cache={"enabled": False}
    )
    with ExitStack() as stack:
        yield [stack.enter_context(GatewayServer(GatewayApp(shared))) for _ in range(2)]


def test_two_replicas_stop_a_key_at_its_budget_in_total(
    replicas: list[GatewayServer], redis_server: RedisServer
) -> None:
    auth = {"authorization": f"Bearer {SECRET}"}
    clients = [httpx.Client(base_url=r.base_url, headers=auth) for r in replicas]
    try:
        spent, n = 0.0, 0
        while spent < BUDGET_USD:
            answer = clients[n % 2].post("/chat/completions", json=ask(n))
            assert answer.status_code == 200, answer.text
            spent += cost_of(answer.json())
            n += 1
        refused = [c.post("/chat/completions", json=ask(n + i)) for i, c in enumerate(clients)]
        booked = sum(key_cost(c, r.url) for c, r in zip(clients, replicas, strict=True))
    finally:
        for c in clients:
            c.close()
    assert n >= 3  # both replicas spent part of it
    for answer in refused:  # each replica sees what the other spent
        assert answer.status_code == 429
        assert answer.json()["error"]["type"] == "budget_exceeded"
        assert "key 'team-b' has spent" in answer.json()["error"]["message"]
        assert answer.headers["x-should-retry"] == "false"
        assert int(answer.headers["retry-after"]) > 0
    assert booked == pytest.approx(spent, rel=1e-9)


def cost_of(answer: dict[str, Any]) -> float:
    usage = answer["usage"]
    tokens: int = usage["prompt_tokens"] + usage["completion_tokens"]
    return tokens * PER_MILLION / 1e6


def key_cost(client: httpx.Client, url: str) -> float:
    """The key's cost as one replica's /metrics shows it."""
    total = 0.0
    for line in client.get(f"{url}/metrics").text.splitlines():
        if line.startswith(COST) and 'key="team-b"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_nothing_budgeted_means_no_tally(sim: SimServer) -> None:
    od = Overdrive(load_config(config(sim)), clock=FakeClock())
    assert od.stats()["budgets"] == []
    asyncio.run(od.aclose())
