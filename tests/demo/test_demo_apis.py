"""`overdrive demo --api`: the agent workload on chat, Responses and Anthropic Messages."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import httpx2
import pytest

from overdrive.cli import _parser, main
from overdrive.demo import APIS, Api, _clients, _messages_client, run_demo
from overdrive.demo._report import comparison_table
from overdrive.demo._runner import DEMO_SIM, run_phase
from overdrive.demo._workload import AgentTask, build_workload
from overdrive.sim import SimServer

# The demo's rate limit, with a quicker model: each run takes a second or two.
QUICK = replace(DEMO_SIM, ttft_s=0.02, per_token_s=0.0005, embed_base_s=0.01)
# The sim endpoints each API's run may call, and no other.
PATHS: dict[Api, set[str]] = {
    "chat": {"/v1/chat/completions", "/v1/embeddings"},
    "responses": {"/v1/responses"},
    "messages": {"/v1/messages"},
}
_ONE_TASK = AgentTask("forecast GPU spend", ("docs: GPU spend",))


@pytest.fixture(autouse=True)
def elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run where the demo's saved run (.overdrive/last-run.json) cannot replace the user's."""
    monkeypatch.chdir(tmp_path)


@pytest.mark.parametrize("api", APIS)
def test_each_api_runs_the_workload_on_its_own_endpoints(api: Api) -> None:
    workload = build_workload(10)
    plain = run_phase(workload, through_overdrive=False, sim_config=QUICK, api=api)
    fast = run_phase(workload, through_overdrive=True, sim_config=QUICK, api=api)
    for result in (plain, fast):
        assert set(result.upstream["requests"]) == PATHS[api]
        assert len(result.task_seconds) == len(workload.tasks)
    # The plain SDK sends every call (and its retries); overdrive merges and caches repeats.
    assert plain.summary()["upstream_requests"] >= workload.calls()
    assert fast.summary()["upstream_requests"] < workload.calls()
    assert fast.calls == workload.calls()
    assert fast.cache_hits + fast.coalesced > 0
    assert fast.rate_limited == 0


@pytest.mark.parametrize("api", ["responses", "messages"])
async def test_a_lookup_on_responses_and_messages_is_a_forced_tool_call(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    searched: list[dict[str, Any]] = []
    for module in (_clients, _messages_client):
        monkeypatch.setattr(module, "run_search", searched.append)
    with SimServer(QUICK) as sim:
        async with httpx2.AsyncClient() as http:
            client = _clients.model_client(api, sim.base_url, http, build_workload(1))
            await client.lookup("docs: GPU spend")
            assert await client.complete(build_workload(1).plan_messages(_ONE_TASK))
        assert sum(sim.stats()["requests"].values()) == 2
    (arguments,) = searched  # the model called search_notes, and the agent ran it
    assert set(arguments) == {"query"}
    assert isinstance(arguments["query"], str)


def test_the_cli_runs_the_demo_on_the_api_it_is_given(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["demo", "--api", "messages", "--json", "--tasks", "6"]) == 0
    (line,) = capsys.readouterr().out.strip().splitlines()
    result = json.loads(line)
    plain, fast = result["plain"], result["overdrive"]
    assert {"makespan_s", "upstream_requests", "rate_limited", "cache_hits"} <= fast.keys()
    assert fast["makespan_s"] < plain["makespan_s"]
    assert fast["rate_limited"] == 0
    assert fast["upstream_requests"] < plain["upstream_requests"]


def test_the_api_option_defaults_to_chat_and_refuses_others(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert _parser().parse_args(["demo"]).api == "chat"
    with pytest.raises(SystemExit):
        main(["demo", "--api", "grpc"])
    assert "invalid choice: 'grpc'" in capsys.readouterr().err
    with pytest.raises(ValueError, match="api must be one of chat, responses, messages"):
        run_demo(tasks=1, api=cast(Any, "grpc"))  # what an untyped caller may pass


@pytest.mark.parametrize(
    ("api", "sdk"), [("chat", "openai"), ("responses", "Responses"), ("messages", "anthropic")]
)
def test_the_table_names_the_sdk_it_compared(api: str, sdk: str) -> None:
    row = {"makespan_s": 1.0, "upstream_requests": 2, "upstream_429s": 0, "rate_limited": 0}
    row |= {"p50_task_s": 0.5, "p95_task_s": 0.9, "cache_hits": 1, "coalesced": 0}
    row |= {"upstream_tokens": 10, "cost_usd": 0.0}
    table = comparison_table(row, row, api)
    assert sdk in str(table.title)
    assert table.row_count == 10
