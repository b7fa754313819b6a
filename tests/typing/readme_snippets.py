"""The README's "Use it" snippets, as code mypy --strict checks (test_readme_snippets.py).

Keep this in step with README.md: a snippet that fails here fails a user's mypy.
"""

from __future__ import annotations

import asyncio
from typing import Any

import anthropic
import httpx
import mcp
import openai

from overdrive import Overdrive

od = Overdrive.from_config("overdrive.toml")  # or a dict of the same shape
messages: Any = [{"role": "user", "content": "hi"}]


async def main() -> None:
    # 1. the openai SDK, unchanged: requests are routed by model to your upstreams
    client = openai.AsyncOpenAI(api_key="unused", http_client=od.http_client())
    reply = await client.chat.completions.create(model="gpt-4o-mini", messages=messages)
    print(reply.choices[0].message.content)

    # the Responses API and Anthropic's Messages API, the same way
    response = await client.responses.create(model="gpt-4o-mini", input="...")
    claude = anthropic.AsyncAnthropic(api_key="unused", http_client=od.http_client())
    message = await claude.messages.create(
        model="claude-sonnet-4-5", max_tokens=512, messages=messages
    )
    print(response.output_text, message.content)

    # 2. or the engine directly
    answer = await od.chat(model="gpt-4o-mini", messages=messages)  # OpenAI JSON as a dict
    vectors = await od.embed(["a", "b"], model="text-embedding-3-small")
    async for chunk in od.stream_chat(model="gpt-4o-mini", messages=messages):
        print(chunk, answer, vectors)
    await od.aclose()


def sync_program() -> None:
    # 3. sync code: the same engine, on a loop thread of its own; safe from many threads
    client = openai.OpenAI(api_key="unused", http_client=od.http_client(sync=True))
    reply = client.chat.completions.create(model="gpt-4o-mini", messages=messages)
    print(reply.choices[0].message.content)
    od.close()


def httpx_flavour() -> None:
    # 4. libraries that want httpx (0.x) clients: the httpx flavour
    async_http: httpx.AsyncClient = od.http_client(flavour="httpx")
    sync_http: httpx.Client = od.http_client(sync=True, flavour="httpx")
    print(async_http, sync_http)


if __name__ == "__main__":
    asyncio.run(main())


# README "MCP servers": a ClientSession, and the high-level Client, are both accepted.
async def ask_docs(session: mcp.ClientSession) -> None:
    docs = od.mcp(session, server="docs", rpm=120, concurrency=4)
    result = await docs.call_tool("search", {"query": "retry budget"})
    print(result.content)


async def ask_with_client(client: mcp.Client) -> None:
    docs = od.mcp(client, server="docs")
    listing = await docs.list_tools()
    print([tool.name for tool in listing.tools])
