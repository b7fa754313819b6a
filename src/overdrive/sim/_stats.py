"""Counters the simulated upstream keeps, served at ``GET /stats``."""

from __future__ import annotations

from typing import Any

__all__ = ["SimStats"]


class SimStats:
    """Plain counters; the server's single event loop is the only writer.

    ``cached_prompt_tokens`` are the prompt tokens served from a prefix cache
    (the automatic one, or Messages' ``cache_control`` reads): their prefill
    was skipped. Divided by ``prompt_tokens`` it is the cache's hit ratio.
    """

    __slots__ = (
        "cached_prompt_tokens",
        "completion_tokens",
        "embedding_inputs",
        "errors_injected",
        "hung",
        "in_flight",
        "max_in_flight",
        "prompt_tokens",
        "rate_limited",
        "requests",
        "responses",
    )

    def __init__(self) -> None:
        self.in_flight = 0
        self.reset()

    def reset(self) -> None:
        """Zero the counters; ``in_flight`` is live state, so it stays."""
        self.requests: dict[str, int] = {}
        self.responses: dict[int, int] = {}
        self.rate_limited = 0
        self.errors_injected = 0
        self.hung = 0
        self.max_in_flight = self.in_flight
        self.prompt_tokens = 0
        self.cached_prompt_tokens = 0
        self.completion_tokens = 0
        self.embedding_inputs = 0

    def enter(self) -> None:
        self.in_flight += 1
        if self.in_flight > self.max_in_flight:
            self.max_in_flight = self.in_flight

    def leave(self) -> None:
        self.in_flight -= 1

    def count_tokens(self, prompt: int, cached: int, completion: int) -> None:
        """One answered generation: its prompt (``cached`` of it from a cache) and its output."""
        self.prompt_tokens += prompt
        self.cached_prompt_tokens += cached
        self.completion_tokens += completion

    def count_request(self, path: str) -> None:
        self.requests[path] = self.requests.get(path, 0) + 1

    def count_response(self, status: int) -> None:
        self.responses[status] = self.responses.get(status, 0) + 1

    def snapshot(self) -> dict[str, Any]:
        return {
            "requests": dict(self.requests),
            "responses": {str(status): n for status, n in sorted(self.responses.items())},
            "rate_limited": self.rate_limited,
            "errors_injected": self.errors_injected,
            "hung": self.hung,
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "prompt_tokens": self.prompt_tokens,
            "cached_prompt_tokens": self.cached_prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "embedding_inputs": self.embedding_inputs,
        }

    def __repr__(self) -> str:
        served = sum(self.responses.values())
        return f"SimStats(in_flight={self.in_flight}, served={served})"
