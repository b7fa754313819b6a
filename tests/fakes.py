"""A scripted OpenAI-compatible upstream for unit tests of the engine's own logic.

Integration tests use the real simulated upstream (``overdrive.sim``) instead.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx

from overdrive import FakeClock, Overdrive

Responder = Callable[[httpx.Request], httpx.Response]
T = TypeVar("T")


async def finish(clock: FakeClock, work: Awaitable[T], seconds: float = 120.0) -> T:
    """Run ``work`` while stepping the fake clock until it completes."""
    task = asyncio.ensure_future(work)
    for _ in range(int(seconds / 0.05)):
        if task.done():
            break
        await clock.run_for(0.05)
    return await task


def chat_response(model: str, content: str = "hello", completion_tokens: int = 2) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 5, "completion_tokens": completion_tokens, "total_tokens": 7},
    }


def embeddings_response(model: str, count: int) -> dict[str, Any]:
    data = [{"object": "embedding", "index": i, "embedding": [float(i), 0.5]} for i in range(count)]
    return {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": count, "total_tokens": count},
    }


@dataclass
class FakeUpstream:
    """Answers from a script of responders, then with a default success; records every call."""

    clock: FakeClock | None = None
    script: list[Responder] = field(default_factory=list)
    calls: list[tuple[float, str, dict[str, Any]]] = field(default_factory=list)
    gate: asyncio.Event | None = None

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        self.calls.append((self.clock.now() if self.clock else 0.0, request.url.path, body))
        if self.gate is not None:
            await self.gate.wait()
        if self.script:
            return self.script.pop(0)(request)
        if request.url.path.endswith("/embeddings"):
            inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
            return httpx.Response(200, json=embeddings_response(body["model"], len(inputs)))
        return httpx.Response(200, json=chat_response(body["model"]))

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self)


def status(code: int, headers: dict[str, str] | None = None) -> Responder:
    def respond(request: httpx.Request) -> httpx.Response:
        error = {
            "error": {"message": f"status {code}", "type": "test", "param": None, "code": None}
        }
        return httpx.Response(code, json=error, headers=headers)

    return respond


def raw(code: int, content: bytes) -> Responder:
    return lambda request: httpx.Response(code, content=content)


def connect_error(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("connection refused", request=request)


def engine(fake: FakeUpstream, clock: FakeClock, **overrides: Any) -> Overdrive:
    upstream = {
        "name": "a",
        "base_url": "http://upstream.test/v1",
        "models": ["m", "e"],
        **overrides,
    }
    config: dict[str, Any] = {"upstreams": [upstream], "retry": {"base": "100ms", "cap": "1s"}}
    return Overdrive.from_config(config, clock=clock, upstream_transport=fake.transport())
