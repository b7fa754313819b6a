"""A child process for the cross-process semantic test: ``python -m ... REDIS_URL UPSTREAM_URL``.

It asks one question through an engine that shares its cache and semantic
entries through Redis, waits until the entry is remembered (and published),
prints the answer and exits.
"""

from __future__ import annotations

import asyncio
import sys

from overdrive import Overdrive

QUESTION = "How do I reset my password?"


async def ask(redis_url: str, upstream_url: str) -> str:
    config = {
        "upstreams": [{"name": "sim", "base_url": upstream_url, "models": ["gpt-4o-mini"]}],
        "cache": {"redis_url": redis_url, "semantic": {"enabled": True}},
    }
    async with Overdrive.from_config(config) as od:  # closing settles the remembering
        reply = await od.chat(model="gpt-4o-mini", messages=[{"role": "user", "content": QUESTION}])
    return str(reply["choices"][0]["message"]["content"])


if __name__ == "__main__":
    print(asyncio.run(ask(sys.argv[1], sys.argv[2])), flush=True)
