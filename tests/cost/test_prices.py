"""Prices and cost: the shipped list, [[prices]] over it, and each answer's cost by its usage."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from overdrive import ConfigError, Overdrive
from overdrive._assembly import price_table
from overdrive.config import load_config
from overdrive.cost import DEFAULT_PRICES_AS_OF, Price, PriceTable, default_prices
from overdrive.monitor.names import COST
from overdrive.sim import SimConfig, SimServer

MODEL = "gpt-4o-mini"
LONG = "policy " * 1400  # past the sim's 1,024-token cache minimum


def test_cached_prompt_tokens_are_priced_at_the_discount() -> None:
    price = Price(input=2.0, output=8.0, cached_input=0.5)
    assert price.cost(prompt=1_000_000, cached=0, completion=0) == 2.0
    assert price.cost(prompt=1_000_000, cached=1_000_000, completion=0) == 0.5
    assert price.cost(prompt=10, cached=50, completion=0) == 10 * 0.5 / 1e6  # at most the prompt
    assert Price(input=2.0, output=8.0).cost(1_000_000, 1_000_000, 0) == 2.0  # no discount


def test_a_snapshot_is_priced_as_its_model_and_the_longest_name_wins() -> None:
    table = PriceTable({"gpt-4o": Price(2.5, 10.0), "gpt-4o-mini": Price(0.15, 0.6)})
    assert table.price("gpt-4o-2024-08-06") == Price(2.5, 10.0)
    assert table.price("gpt-4o-mini-2024-07-18") == Price(0.15, 0.6)
    assert table.price("gpt-4ox") is None  # a name it extends only with a dash
    assert table.cost("llama", 10, 0, 10) is None


def test_the_shipped_list_is_dated_and_sane() -> None:
    prices = default_prices()
    assert DEFAULT_PRICES_AS_OF[:2] == "20"
    assert {"gpt-4o-mini", "claude-sonnet-4", "text-embedding-3-small"} <= set(prices)
    for price in prices.values():
        assert price.input >= 0
        assert price.output >= 0
        assert price.cached_input is None or price.cached_input <= price.input


def config(**extra: Any) -> dict[str, Any]:
    upstream = {"name": "a", "base_url": "http://127.0.0.1:9/v1", "models": [MODEL]}
    return {"upstreams": [upstream], **extra}


def test_prices_in_the_config_add_and_override() -> None:
    table = price_table(
        load_config(
            config(
                prices=[
                    {"model": MODEL, "input": 1, "output": 2},
                    {"model": "mine", "input": 3, "output": 4, "cached_input": 1},
                ]
            )
        )
    )
    assert table.price(MODEL) == Price(1.0, 2.0)
    assert table.price("mine") == Price(3.0, 4.0, 1.0)
    assert table.price("gpt-4o") == default_prices()["gpt-4o"]


@pytest.mark.parametrize(
    ("prices", "field"),
    [
        (
            [{"model": "m", "input": 1, "output": 1}, {"model": "m", "input": 2, "output": 2}],
            "prices[1].model",
        ),
        ([{"model": "m", "input": -1, "output": 1}], "prices[0].input"),
        ([{"model": "m", "input": 1}], "prices[0].output"),
    ],
)
def test_a_bad_price_names_its_field(prices: list[dict[str, Any]], field: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_config(config(prices=prices))
    assert raised.value.field == field


@pytest.fixture(scope="module")
def sim() -> Iterator[SimServer]:
    cached = SimConfig(ttft_s=0.0, per_token_s=0.0, models=(MODEL,), prefix_cache_tokens=65_536)
    with SimServer(cached) as server:
        yield server


async def test_the_cost_counter_is_usage_times_prices_exactly(sim: SimServer) -> None:
    price = {"model": MODEL, "input": 0.15, "output": 0.6, "cached_input": 0.075}
    upstream = {"name": "sim", "base_url": sim.base_url, "models": [MODEL]}
    expected = 0.0
    async with Overdrive.from_config(
        {"upstreams": [upstream], "cache": {"enabled": False}, "prices": [price]}
    ) as od:
        for n in range(4):  # the same long system prompt: from the second call, read from cache
            messages = [{"role": "system", "content": LONG}, {"role": "user", "content": f"q{n}"}]
            usage = (await od.chat(model=MODEL, messages=messages))["usage"]
            cached = usage.get("prompt_tokens_details", {}).get("cached_tokens", 0)
            fresh = usage["prompt_tokens"] - cached
            expected += (fresh * 0.15 + cached * 0.075 + usage["completion_tokens"] * 0.6) / 1e6
        booked = od.metrics.value(COST, op="chat", model=MODEL, upstream="sim")
        cached_total = od.metrics.value("overdrive_cached_prompt_tokens_total", op="chat")
        in_stats = od.stats()["cost_usd"]
    assert cached_total > 0  # the discount was exercised
    assert booked == pytest.approx(expected, rel=1e-12)
    assert booked > 0
    assert in_stats == {MODEL: booked}


async def test_a_model_without_a_price_costs_nothing() -> None:
    other = SimConfig(ttft_s=0.0, per_token_s=0.0, models=("unpriced-model",))
    with SimServer(other) as sim:
        upstream = {"name": "sim", "base_url": sim.base_url, "models": ["unpriced-model"]}
        async with Overdrive.from_config({"upstreams": [upstream]}) as od:
            answer = await od.chat(
                model="unpriced-model", messages=[{"role": "user", "content": "hi"}]
            )
            assert answer["usage"]["prompt_tokens"] > 0
            assert od.metrics.value(COST) == 0
            assert od.stats()["cost_usd"] == {}
