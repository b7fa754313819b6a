"""A real MCP server for the tool door's tests: ``python mcp_server.py [PORT]``.

On stdio by default; given a port, over streamable HTTP at ``/mcp`` on loopback.

Its tools carry the annotations the wrapper reads; ``calls`` reports how
many times each tool ran, so a test sees what reached the server.
"""

from __future__ import annotations

import asyncio
import sys
from collections import Counter

from mcp.server import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations

server = MCPServer("overdrive-test-tools")
ran: Counter[str] = Counter()
READ_ONLY = ToolAnnotations(read_only_hint=True)
# Spelled out: not read-only, so the spec's defaults would say destructive.
COUNTER_ONLY = ToolAnnotations(read_only_hint=False, destructive_hint=False)


@server.tool(annotations=READ_ONLY)
async def search(query: str, delay: float = 0.0) -> str:
    """Search the notes (read-only); ``delay`` holds the answer back, so calls overlap."""
    ran["search"] += 1
    await asyncio.sleep(delay)
    return f"results for {query}"


@server.tool(annotations=ToolAnnotations(idempotent_hint=True, destructive_hint=False))
def lookup(key: str) -> str:
    """Idempotent and said not destructive: safe to cache."""
    ran["lookup"] += 1
    return key.upper()


@server.tool(annotations=ToolAnnotations(destructive_hint=True, idempotent_hint=True))
def delete_note(note: str) -> str:
    """Destructive: never cached, even when a caller names it cacheable."""
    ran["delete_note"] += 1
    return f"deleted {note}"


@server.tool()
def plain(value: str) -> str:
    """No annotations: cached only when the caller says so."""
    ran["plain"] += 1
    return value


@server.tool(annotations=READ_ONLY)
def broken(value: str) -> str:
    """Read-only but failing: its error answer must not be cached."""
    ran["broken"] += 1
    raise ToolError(f"cannot do {value}")


@server.tool(annotations=COUNTER_ONLY)
def calls(tool: str) -> int:
    """How many times ``tool`` ran (never cached: not read-only)."""
    return ran[tool]


if __name__ == "__main__":
    if len(sys.argv) > 1:
        server.run("streamable-http", host="127.0.0.1", port=int(sys.argv[1]))
    else:
        server.run()
