"""The built-in agent workload: tasks that plan, look things up, then answer.

Prompts repeat across tasks with Zipf-skewed popularity, as real agent
traffic does: a few goals and tool queries are asked again and again.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

__all__ = ["SEARCH_TOOL", "AgentTask", "Workload", "build_workload", "run_search"]

CHAT_MODEL = "gpt-4o-mini"
EMBED_MODEL = "text-embedding-3-small"
# The model of the Anthropic Messages run (the sim answers any name it is told to serve).
CLAUDE_MODEL = "claude-haiku-4-5"
# The lookup tool of the Responses and Messages runs, in OpenAI's function shape.
SEARCH_TOOL: dict[str, Any] = {
    "name": "search_notes",
    "description": "Search the team's notes; returns the matching passages.",
    "parameters": {
        "type": "object",
        "properties": {"query": {"type": "string"}},
        "required": ["query"],
        "additionalProperties": False,
    },
}

# Shared with benchmarks/_agent_workload.py, so both speak of the same work.
SUBJECTS = [
    "quarterly revenue",
    "churn in the EU",
    "the onboarding flow",
    "GPU spend",
    "the refund policy",
    "support backlog",
    "pricing tiers",
    "the Q3 roadmap",
    "API latency",
    "the hiring plan",
    "data retention",
    "the incident review",
    "partner integrations",
    "search relevance",
    "the mobile release",
    "fraud alerts",
    "warehouse costs",
    "the security audit",
    "customer NPS",
    "the migration to Postgres",
    "ad attribution",
    "the SLA report",
    "model evaluation",
    "the vendor contract",
]
VERBS = ["summarise", "explain", "forecast", "compare", "audit", "draft a memo on"]
TOOLS = ["docs", "tickets", "metrics", "wiki", "crm"]


@dataclass(frozen=True, slots=True)
class AgentTask:
    """One agent task: a goal to plan for and the tool lookups it makes."""

    goal: str
    lookups: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Workload:
    tasks: tuple[AgentTask, ...]
    max_tokens: int = 48

    def plan_messages(self, task: AgentTask) -> list[dict[str, str]]:
        return [
            {"role": "system", "content": "You are a planning agent. Reply with numbered steps."},
            {"role": "user", "content": f"Make a plan to {task.goal}."},
        ]

    def answer_messages(self, task: AgentTask, plan: str) -> list[dict[str, str]]:
        return [
            {"role": "system", "content": "You are a helpful analyst. Answer concisely."},
            {"role": "user", "content": f"Goal: {task.goal}.\nPlan: {plan}\nWrite the answer."},
        ]

    def calls(self) -> int:
        return sum(2 + len(t.lookups) for t in self.tasks)


def run_search(arguments: dict[str, Any]) -> str:
    """The agent's side of a ``search_notes`` call: local, instant next to a model call."""
    return f"notes matching {arguments.get('query', '')!r}"


def build_workload(tasks: int = 60, lookups: int = 3, seed: int = 7) -> Workload:
    """``tasks`` agent tasks whose goals and lookups follow a Zipf(1.1) popularity."""
    rng = random.Random(seed)
    goals = [f"{verb} {subject}" for subject in SUBJECTS for verb in VERBS[:2]]
    queries = [f"{tool}: {subject}" for subject in SUBJECTS for tool in TOOLS[:2]]
    rng.shuffle(goals)
    rng.shuffle(queries)
    return Workload(
        tuple(
            AgentTask(_zipf(rng, goals), tuple(_zipf(rng, queries) for _ in range(lookups)))
            for _ in range(tasks)
        )
    )


def _zipf(rng: random.Random, items: list[str], skew: float = 1.1) -> str:
    weights = [1.0 / (rank + 1) ** skew for rank in range(len(items))]
    return rng.choices(items, weights)[0]
