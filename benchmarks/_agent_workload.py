"""The agent workload of ``bench_agent_workload.py`` and the lower bound on its makespan.

The workload
------------
``tasks`` agent tasks arrive over ``arrival_window_s`` seconds (seeded uniform
draws). Each task runs one sequential chain, as an agent loop does::

    plan   = chat(system prompt, goal)
    notes  = the task's single-text embedding lookups, fired together
    draft  = chat(system prompt, goal, plan, notes)
    review = chat(system prompt, goal, draft)

Every chat carries the same long system prompt. Goals follow a Zipf(1.1)
popularity over 144 goals, and a goal fixes its lookups (the plan derives
them), so a popular task repeats its whole chain, and lookup texts repeat
across goals too. The simulated upstream answers deterministically, so every
client issues exactly the same logical calls; :class:`Ledger` records them
and the benchmark checks that the contenders' ledgers agree.

The lower bound
---------------
No client can finish sooner than either of two limits:

* **Rate.** The distinct calls must reach the upstream at least once; repeats
  could all be answered locally (cache, coalescing). Chats cannot be merged,
  so each distinct chat is one request. Distinct embedding texts could at best
  share requests of the API's maximum size (2048 inputs), so they count as
  ``ceil(texts / 2048)`` requests. Tokens are counted as the upstream charges
  them: prompt tokens plus ``max_tokens`` per chat, input tokens per text.
  A call cannot go before the first task needing it arrives, so for every
  arrival time ``t`` the work first needed at or after ``t`` takes at least
  ``max((requests - R) / rpm, (tokens - T) / tpm)`` after ``t``, where ``R``
  and ``T`` are what the upstream's buckets hold when full (``burst_s``
  seconds of rate, as the sim sizes them): a perfect client spends a full
  bucket at once and the rest at the rate. The rate bound is the largest such
  ``t + time``. (The issue's "unique work / rate" is the ``t = 0`` term
  without the bucket: ``burst_s`` longer.)
* **Critical path.** A task's chain is sequential whoever computes it: its
  arrival plus the sum of its stages' nominal upstream latencies (the sim's
  mean latency for that call; parallel lookups count once). The largest over
  tasks.

The bound is the larger of the two. It errs low, never high (up to the sim's
latency jitter, which can make a lucky chain beat its nominal latency): it
leaves out the last call's own latency, and lets all distinct lookup texts
share one request though no lookup can start before its task's plan is
answered.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import openai

from overdrive._json import dumps_canonical
from overdrive._tokens import estimate_messages_tokens, estimate_tokens
from overdrive.demo._workload import SUBJECTS, TOOLS, VERBS
from overdrive.sim import SimConfig

__all__ = [
    "CHATS_PER_TASK",
    "CHAT_MODEL",
    "EMBED_MODEL",
    "MAX_TOKENS",
    "AgentClient",
    "AgentTask",
    "Ledger",
    "LowerBound",
    "RunResult",
    "Workload",
    "build_workload",
    "lower_bound",
    "run_agents",
]

T = TypeVar("T")
Stage = tuple[str, int]

CHAT_MODEL = "gpt-4o-mini"
EMBED_MODEL = "text-embedding-3-small"
MAX_TOKENS = 48
CHATS_PER_TASK = 3  # plan, draft, review
# The most inputs one embeddings request may carry (OpenAI's limit, and the sim's).
MAX_EMBEDDING_INPUTS = 2048
# What an agent loop does when its client gives up on a call: wait, try again.
AGENT_BACKOFF_S = 1.0
AGENT_ATTEMPTS = 20

SYSTEM_PROMPT = (
    "You are an operations analyst agent for a mid-sized software company. "
    "You work from the company's internal documents, tickets, metrics and wiki. "
    "Be concise and factual; cite the notes you were given; never invent figures. "
    "When a step needs data you do not have, say which lookup would provide it. "
    "Write in plain English for a busy executive reader, in short numbered points, "
    "and end with one line stating your confidence and the main open risk."
)
_ZIPF_SKEW = 1.1


@dataclass(frozen=True, slots=True)
class AgentTask:
    """One agent task: when it arrives, its goal and the lookups its plan calls for."""

    index: int
    arrival_s: float
    goal: str
    lookups: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Workload:
    tasks: tuple[AgentTask, ...]

    def calls(self) -> int:
        """Logical calls the agents make: three chats and the lookups per task."""
        return sum(CHATS_PER_TASK + len(task.lookups) for task in self.tasks)


def build_workload(
    tasks: int = 240, lookups: int = 3, arrival_window_s: float = 3.0, seed: int = 7
) -> Workload:
    """``tasks`` tasks with Zipf-popular goals, each goal with its own fixed lookups."""
    rng = random.Random(seed)
    goals = [f"{verb} {subject}" for subject in SUBJECTS for verb in VERBS]
    queries = [f"{tool}: {subject}" for subject in SUBJECTS for tool in TOOLS]
    rng.shuffle(goals)
    rng.shuffle(queries)
    arrivals = sorted(rng.uniform(0.0, arrival_window_s) for _ in range(tasks))
    chosen = [_zipf(rng, goals) for _ in range(tasks)]
    return Workload(
        tuple(
            AgentTask(i, arrival, goal, _goal_lookups(goal, queries, lookups, seed))
            for i, (arrival, goal) in enumerate(zip(arrivals, chosen, strict=True))
        )
    )


def _goal_lookups(goal: str, queries: list[str], count: int, seed: int) -> tuple[str, ...]:
    """The lookups a goal's plan asks for: the same for every task with that goal."""
    rng = random.Random(f"{seed}:{goal}")
    return tuple(_zipf(rng, queries) for _ in range(count))


def _zipf(rng: random.Random, items: Sequence[str]) -> str:
    weights = [1.0 / (rank + 1) ** _ZIPF_SKEW for rank in range(len(items))]
    return rng.choices(items, weights)[0]


# --- the agents ----------------------------------------------------------------


class AgentClient(Protocol):
    """What an agent needs from an LLM client; each contender adapts its library to it.

    Failures surface as the library raises them: a rate-limit error is an
    ``openai.RateLimitError`` (LiteLLM's subclasses it).
    """

    async def chat(self, messages: list[dict[str, str]]) -> tuple[str, int]:
        """The answer's text and its completion tokens."""
        ...

    async def embed(self, text: str) -> None: ...


@dataclass(slots=True)
class Ledger:
    """Every logical call the agents made, and each task's sequential stages.

    ``calls`` maps a call's canonical key to (op, charged tokens, tasks that
    made it); ``stages`` holds each task's sequential stages in order:
    ``("chat", completion tokens)`` or ``("lookups", how many, in parallel)``.
    """

    calls: dict[bytes, tuple[str, int, list[int]]] = field(default_factory=dict)
    stages: dict[int, list[Stage]] = field(default_factory=dict)

    def record(self, task: AgentTask, op: str, key: Any, tokens: int) -> None:
        material = dumps_canonical([op, key])
        entry = self.calls.setdefault(material, (op, tokens, []))
        entry[2].append(task.index)

    def stage(self, task: AgentTask, kind: str, size: int) -> None:
        self.stages.setdefault(task.index, []).append((kind, size))

    def same_calls(self, other: Ledger) -> bool:
        return self.calls.keys() == other.calls.keys()


class CallerRateLimited(Exception):
    """A client's own "rate limited, try later" that is not an ``openai.RateLimitError``."""


@dataclass(slots=True)
class RunResult:
    """What one contender's run measured on the client side."""

    makespan_s: float
    ledger: Ledger
    caller_429s: int = 0
    caller_errors: int = 0
    tasks_given_up: int = 0


class _Agent:
    """The agent loop: plan, look things up in parallel, draft, review."""

    def __init__(self, client: AgentClient, ledger: Ledger, result: RunResult) -> None:
        self.client = client
        self.ledger = ledger
        self.result = result

    async def run(self, task: AgentTask, started: float) -> None:
        await asyncio.sleep(max(0.0, task.arrival_s - (time.perf_counter() - started)))
        try:
            await self.steps(task)
        except (openai.APIError, CallerRateLimited):
            self.result.tasks_given_up += 1  # its client kept failing past AGENT_ATTEMPTS

    async def steps(self, task: AgentTask) -> None:
        plan = await self.chat(task, [_user(f"Goal: {task.goal}. Make a plan.")])
        await asyncio.gather(*(self.lookup(task, query) for query in task.lookups))
        self.ledger.stage(task, "lookups", len(task.lookups))
        notes = "; ".join(f"notes from {query}" for query in task.lookups)
        draft_prompt = f"Goal: {task.goal}.\nPlan: {plan}\nNotes: {notes}\nWrite a draft."
        draft = await self.chat(task, [_user(draft_prompt)])
        await self.chat(task, [_user(f"Goal: {task.goal}.\nDraft: {draft}\nReview the draft.")])

    async def chat(self, task: AgentTask, turns: list[dict[str, str]]) -> str:
        messages = [{"role": "system", "content": SYSTEM_PROMPT}, *turns]
        tokens = estimate_messages_tokens(messages) + MAX_TOKENS
        self.ledger.record(task, "chat", messages, tokens)
        text, completion_tokens = await self.persist(lambda: self.client.chat(messages))
        self.ledger.stage(task, "chat", completion_tokens)
        return text

    async def lookup(self, task: AgentTask, query: str) -> None:
        self.ledger.record(task, "embed", query, estimate_tokens(query))
        await self.persist(lambda: self.client.embed(query))

    async def persist(self, call: Callable[[], Awaitable[T]]) -> T:
        """Retry what the client gave up on, counting each give-up the agent saw."""
        for _ in range(AGENT_ATTEMPTS - 1):
            try:
                return await call()
            except (openai.RateLimitError, CallerRateLimited):
                self.result.caller_429s += 1
            except openai.APIError:
                self.result.caller_errors += 1
            await asyncio.sleep(AGENT_BACKOFF_S)
        return await call()


def _user(content: str) -> dict[str, str]:
    return {"role": "user", "content": content}


async def run_agents(client: AgentClient, workload: Workload) -> RunResult:
    """Run every task (each from its arrival time); the makespan ends with the last task."""
    result = RunResult(0.0, Ledger())
    agent = _Agent(client, result.ledger, result)
    started = time.perf_counter()
    await asyncio.gather(*(agent.run(task, started) for task in workload.tasks))
    result.makespan_s = time.perf_counter() - started
    return result


# --- the lower bound -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LowerBound:
    """The least makespan any client could reach (see the module docstring)."""

    unique_chats: int
    unique_texts: int
    requests: int
    tokens: int
    rate_s: float
    critical_path_s: float

    @property
    def seconds(self) -> float:
        return max(self.rate_s, self.critical_path_s)

    @property
    def binding(self) -> str:
        return "rate" if self.rate_s >= self.critical_path_s else "critical path"


def lower_bound(workload: Workload, ledger: Ledger, sim: SimConfig) -> LowerBound:
    """The rate bound and the critical path of ``workload`` on an upstream set up as ``sim``."""
    arrival = {task.index: task.arrival_s for task in workload.tasks}
    work = [
        (min(arrival[i] for i in tasks), op, tokens) for op, tokens, tasks in ledger.calls.values()
    ]
    chats = sum(1 for _, op, _ in work if op == "chat")
    texts = len(work) - chats
    return LowerBound(
        unique_chats=chats,
        unique_texts=texts,
        requests=chats + math.ceil(texts / MAX_EMBEDDING_INPUTS),
        tokens=sum(tokens for _, _, tokens in work),
        rate_s=_rate_bound(work, sim),
        critical_path_s=max(
            arrival[index] + _chain_seconds(stages, sim) for index, stages in ledger.stages.items()
        ),
    )


def _rate_bound(work: list[tuple[float, str, int]], sim: SimConfig) -> float:
    """The largest ``t + time for the work first needed at or after t``, over arrivals t."""
    bound = 0.0
    for start in sorted({released for released, _, _ in work}):
        later = [(op, tokens) for released, op, tokens in work if released >= start]
        chats = sum(1 for op, _ in later if op == "chat")
        requests = chats + math.ceil((len(later) - chats) / MAX_EMBEDDING_INPUTS)
        tokens = sum(cost for _, cost in later)
        seconds = max(_drain_s(requests, sim.rpm, sim), _drain_s(tokens, sim.tpm, sim))
        bound = max(bound, start + seconds)
    return bound


def _drain_s(amount: int, per_minute: int | None, sim: SimConfig) -> float:
    """Seconds to pass ``amount`` through the upstream's bucket, spending it full at once."""
    if per_minute is None:
        return 0.0
    rate = per_minute / 60.0
    bucket = max(1.0, rate * sim.burst_s)  # as the sim sizes it
    return max(0.0, amount - bucket) / rate


def _chain_seconds(stages: list[Stage], sim: SimConfig) -> float:
    """Nominal seconds of one task's stages: a chat by its answer's length, lookups as one."""
    return sum(_stage_seconds(kind, size, sim) for kind, size in stages)


def _stage_seconds(kind: str, size: int, sim: SimConfig) -> float:
    if kind == "chat":
        return sim.ttft_s + sim.per_token_s * size
    return sim.embed_base_s + sim.embed_per_item_s  # parallel single-text calls: one's time
