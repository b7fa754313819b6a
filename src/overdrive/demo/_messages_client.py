"""The demo agent's calls on Anthropic's Messages API, through the anthropic SDK.

Its own module, imported only for ``overdrive demo --api messages``: the
anthropic SDK is an optional dependency of overdrive.
"""

from __future__ import annotations

from typing import Any, ClassVar

import anthropic
import httpx2

from ._clients import Messages, split
from ._workload import CLAUDE_MODEL, SEARCH_TOOL, run_search

__all__ = ["MessagesClient"]


class MessagesClient:
    """Anthropic's Messages API: ``client.messages.create``; lookups are ``tool_use`` blocks."""

    rate_limit_error: type[Exception] = anthropic.RateLimitError
    _tool: ClassVar[Any] = {
        "name": SEARCH_TOOL["name"],
        "description": SEARCH_TOOL["description"],
        "input_schema": SEARCH_TOOL["parameters"],
    }

    def __init__(self, base_url: str, http: httpx2.AsyncClient, max_tokens: int) -> None:
        # The anthropic SDK adds /v1 itself.
        self.client = anthropic.AsyncAnthropic(
            api_key="demo", base_url=base_url.removesuffix("/v1"), http_client=http
        )
        self.max_tokens = max_tokens

    async def complete(self, messages: Messages) -> str:
        system, user = split(messages)
        message = await self.client.messages.create(
            model=CLAUDE_MODEL,
            system=system,
            messages=[{"role": "user", "content": user}],
            max_tokens=self.max_tokens,
        )
        return "".join(block.text for block in message.content if block.type == "text")

    async def lookup(self, query: str) -> None:
        message = await self.client.messages.create(
            model=CLAUDE_MODEL,
            messages=[{"role": "user", "content": f"Look up {query}."}],
            tools=[self._tool],
            tool_choice={"type": "any"},
            max_tokens=self.max_tokens,
        )
        uses = [block for block in message.content if block.type == "tool_use"]
        if not uses:
            raise RuntimeError(f"the model answered a forced tool choice with {message.content}")
        run_search(dict(uses[0].input))
