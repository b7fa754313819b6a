"""``[[tools]]`` entries: checked with field names, picked up by ``@od.tool``, overridden."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from overdrive import ConfigError, Overdrive, RequestError, load_config
from overdrive.monitor.names import TOOL_CALLS, TOOL_QUEUE_WAIT
from overdrive.testing import FakeClock
from overdrive.tools import runner_of
from tests.fakes import finish

UPSTREAM = {"name": "a", "base_url": "http://127.0.0.1:1/v1", "models": ["m"]}


def config_with(tools: list[dict[str, Any]], **more: Any) -> dict[str, Any]:
    return {"upstreams": [UPSTREAM], "tools": tools, **more}


def test_an_entry_is_read_with_units() -> None:
    config = load_config(config_with([{"name": "search", "rpm": 30, "timeout": "1.5s"}]))
    entry = config.tools[0]
    assert (entry.name, entry.rpm, entry.timeout, entry.cache) == ("search", 30, 1.5, None)


@pytest.mark.parametrize(
    ("entry", "field"),
    [
        ({"name": "s", "rpm": 0}, "tools[0].rpm"),
        ({"name": "s", "rpm": 10, "rps": 1}, "tools[0].rps"),
        ({"name": "s", "concurrency": "lots"}, "tools[0].concurrency"),
        ({"name": "s", "timeout": "never"}, "tools[0].timeout"),
        ({"name": "s", "attempts": 0}, "tools[0].attempts"),
        ({"name": "s", "cache": 0}, "tools[0].cache"),
        ({"name": "s", "retries": 2}, "tools[0].retries"),
        ({"rpm": 10}, "tools[0].name"),
    ],
)
def test_a_bad_entry_names_its_field(entry: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(config_with([entry]))
    assert caught.value.field == field


def test_two_entries_of_one_name_are_refused() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(config_with([{"name": "s"}, {"name": "s"}]))
    assert caught.value.field == "tools[1].name"


async def test_the_entry_of_the_tools_name_is_picked_up_and_code_overrides_it() -> None:
    clock = FakeClock()
    entries = [
        {"name": "search", "rpm": 60, "concurrency": 2, "attempts": 4},
        {"name": "search_fast", "rpm": 60, "concurrency": 2, "attempts": 4},
    ]
    od = Overdrive.from_config(config_with(entries), clock=clock)
    try:

        @od.tool("search")
        async def search() -> None: ...

        @od.tool("search_fast", rps=10, attempts=1)
        async def faster() -> None: ...

        runner, override = runner_of(search), runner_of(faster)
        assert (runner.options.rpm, runner.options.concurrency) == (60, 2)
        assert runner.options.attempts == 4
        assert (override.options.rpm, override.options.attempts) == (600, 1)
        assert override.options.concurrency == 2  # not given in code: the entry's
        started: list[float] = []

        @od.tool("search")  # the same name, the same limits: one runner
        async def timed() -> None:
            started.append(clock.now())

        assert runner_of(timed) is runner

        await finish(clock, asyncio.gather(timed(), timed()))
        assert started == pytest.approx([0.0, 1.0], abs=0.02)
        assert od.metrics.value(TOOL_CALLS, tool="search", outcome="ok") == 2.0
        assert TOOL_QUEUE_WAIT in od.metrics_text()
    finally:
        await od.aclose()


async def test_engine_tools_share_the_engine_cache_in_its_namespace() -> None:
    od = Overdrive.from_config(config_with([], namespace="team"), clock=FakeClock())
    runs = 0
    try:

        @od.tool("lookup", cache="1h")
        async def lookup(term: str) -> str:
            nonlocal runs
            runs += 1
            return term

        assert [await lookup("q"), await lookup("q")] == ["q", "q"]
        assert runs == 1
        assert od.stats()["cache"]["entries"] >= 1
    finally:
        await od.aclose()


def test_a_cached_tool_on_an_engine_with_its_cache_off_is_refused() -> None:
    od = Overdrive.from_config(config_with([], cache={"enabled": False}), clock=FakeClock())
    with pytest.raises(RequestError) as caught:

        @od.tool(cache=60)
        async def lookup() -> None: ...

    assert caught.value.field == "cache"
    od.close()


def test_a_sync_tool_on_an_engine_runs_on_its_loop() -> None:
    od = Overdrive.from_config(config_with([{"name": "read", "concurrency": 1}]))
    try:

        @od.tool("read")
        def read(path: str) -> str:
            return path.upper()

        assert [read("a"), read("b")] == ["A", "B"]
        assert od.metrics.value(TOOL_CALLS, tool="read", outcome="ok") == 2.0
    finally:
        od.close()
