"""The tool door: ``@od.tool(...)`` paces, bounds, retries, caches and measures tool functions.

>>> import asyncio
>>> from overdrive.tools import tool
>>> @tool(concurrency=4, timeout="30s")
... async def lookup(term: str) -> str:
...     return term.upper()
>>> asyncio.run(lookup("od"))
'OD'
"""

from __future__ import annotations

from ._box import Toolbox
from ._mcp import McpSession, McpTools
from ._options import ToolOptions
from ._runner import ToolRunner
from ._tool import runner_of, tool

__all__ = ["McpSession", "McpTools", "ToolOptions", "ToolRunner", "Toolbox", "runner_of", "tool"]
