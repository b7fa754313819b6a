"""The demo agent's model calls, once per API family: chat, Responses, Anthropic Messages.

Each client turns the workload's two kinds of call into its SDK's words:

- ``complete``: a system prompt and a user turn in, the answer's text out;
- ``lookup``: one tool lookup. On chat it is an embedding of the query, as
  retrieval-backed agents do; Responses and Messages have no embeddings, so
  there the model is asked to call the workload's ``search_notes`` tool for
  the query (a forced tool choice) and the agent runs the tool itself.

Both kinds cost one upstream request, so every API makes the same number
of calls for the same workload and their reports compare.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar, Literal, Protocol, get_args

import httpx2
import openai
from openai.types.chat import ChatCompletionMessageParam

from ._workload import CHAT_MODEL, CLAUDE_MODEL, EMBED_MODEL, SEARCH_TOOL, Workload, run_search

__all__ = ["APIS", "API_MODELS", "Api", "ModelClient", "model_client"]

Api = Literal["chat", "responses", "messages"]
APIS: tuple[Api, ...] = get_args(Api)
# The models each API's run calls (the engine's upstream serves these).
API_MODELS: dict[Api, tuple[str, ...]] = {
    "chat": (CHAT_MODEL, EMBED_MODEL),
    "responses": (CHAT_MODEL,),
    "messages": (CLAUDE_MODEL,),
}
Messages = list[dict[str, str]]


class ModelClient(Protocol):
    """What the demo's agent loop needs from an SDK."""

    # The SDK's exception for a 429 it gave up on: the agent waits and tries again.
    rate_limit_error: type[Exception]

    async def complete(self, messages: Messages) -> str: ...

    async def lookup(self, query: str) -> None: ...


def model_client(
    api: Api, base_url: str, http: httpx2.AsyncClient, workload: Workload
) -> ModelClient:
    """The ``api`` family's client on ``http``; ``base_url`` is the sim's ``.../v1``."""
    if api == "messages":
        return _messages_client(base_url, http, workload.max_tokens)
    client: openai.AsyncOpenAI = openai.AsyncOpenAI(
        base_url=base_url, api_key="demo", http_client=http
    )
    if api == "responses":
        return _ResponsesClient(client, workload.max_tokens)
    return _ChatClient(client, workload.max_tokens)


def _messages_client(base_url: str, http: httpx2.AsyncClient, max_tokens: int) -> ModelClient:
    # Imported here: the anthropic SDK is needed for this run only, not by overdrive itself.
    try:
        from ._messages_client import MessagesClient
    except ImportError as exc:
        raise ImportError(
            "the demo's Messages run needs the anthropic SDK: pip install anthropic"
        ) from exc
    return MessagesClient(base_url, http, max_tokens)


def split(messages: Messages) -> tuple[str, str]:
    """The workload's (system, user) pair of turns."""
    system, user = messages
    return system["content"], user["content"]


class _ChatClient:
    """Chat completions, and embeddings for the lookups (the demo's original workload)."""

    rate_limit_error: type[Exception] = openai.RateLimitError

    def __init__(self, client: openai.AsyncOpenAI, max_tokens: int) -> None:
        self.client = client
        self.max_tokens = max_tokens

    async def complete(self, messages: Messages) -> str:
        system, user = split(messages)
        turns: list[ChatCompletionMessageParam] = [
            {"role": "system", "content": system},
            {"role": "user", "content": user},
        ]
        completion = await self.client.chat.completions.create(
            model=CHAT_MODEL, messages=turns, max_tokens=self.max_tokens
        )
        return completion.choices[0].message.content or ""

    async def lookup(self, query: str) -> None:
        await self.client.embeddings.create(model=EMBED_MODEL, input=query)


class _ResponsesClient:
    """The Responses API: ``client.responses.create``; lookups are function calls."""

    rate_limit_error: type[Exception] = openai.RateLimitError
    _tool: ClassVar[Any] = {"type": "function", "strict": True} | SEARCH_TOOL

    def __init__(self, client: openai.AsyncOpenAI, max_tokens: int) -> None:
        self.client = client
        self.max_tokens = max_tokens

    async def complete(self, messages: Messages) -> str:
        system, user = split(messages)
        response = await self.client.responses.create(
            model=CHAT_MODEL, instructions=system, input=user, max_output_tokens=self.max_tokens
        )
        return response.output_text

    async def lookup(self, query: str) -> None:
        response = await self.client.responses.create(
            model=CHAT_MODEL,
            input=f"Look up {query}.",
            tools=[self._tool],
            tool_choice="required",
            max_output_tokens=self.max_tokens,
        )
        calls = [item for item in response.output if item.type == "function_call"]
        if not calls:
            raise RuntimeError(f"the model answered a forced tool choice with {response.output}")
        run_search(json.loads(calls[0].arguments))
