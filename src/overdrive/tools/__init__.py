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

from ._options import ToolOptions
from ._runner import ToolRunner
from ._tool import ToolParts, runner_of, tool

__all__ = ["ToolOptions", "ToolParts", "ToolRunner", "runner_of", "tool"]
