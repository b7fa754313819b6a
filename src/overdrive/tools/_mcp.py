"""MCP: a client session's tool calls through the tool door, per tool and per server.

``od.mcp(session, server="docs")`` wraps a connected ``mcp`` client (a
``ClientSession`` or an ``mcp.Client``); its ``call_tool`` goes through a
runner named ``docs.<tool>`` whose parent is the server's runner ``docs``,
so per-tool limits and the server's limits both hold. Options come from the
``[[tools]]`` entries of those names, then from code.

A tool's answers are cached (and identical calls in flight joined) only when
it is safe to: the server marks the tool read-only (``readOnlyHint``) or
idempotent and not destructive (``idempotentHint`` with ``destructiveHint``
false), or the caller names it in ``cacheable`` (or gives it a cache TTL).
A tool the server marks destructive is never cached, whatever the caller
says. An answer with ``isError`` is handed back, never stored. The hints
are learnt from the server's listing, fetched once if no listing went
through the wrapper yet; a tool not in it gets no cache and shares one
runner (``docs.<unlisted>``), so a caller inventing names cannot grow the
runners or the metric series without bound.

``list_tools`` answers are kept ``list_ttl`` seconds (identical listings in
flight joined); :meth:`McpTools.forget_listing` drops them, e.g. when the
server sends ``notifications/tools/list_changed``. Every other attribute is
the session's own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Collection, Mapping
from typing import TYPE_CHECKING, Any, Protocol, cast

from .._errors import ConfigError
from ._box import Toolbox
from ._options import ToolOptions
from ._runner import ToolRunner
from ._tool import tool_key

if TYPE_CHECKING:
    from mcp.types import CallToolResult, ListToolsResult

__all__ = ["McpSession", "McpTools"]

UNLISTED = "<unlisted>"
# Listings kept per wrapper (one per cursor asked), at most.
_MAX_LISTINGS = 64
# Options of the server's runner; a tool's own options are all of ToolOptions'.
_SERVER_OPTIONS = ("rpm", "rps", "concurrency", "max_concurrency", "queue_timeout", "shared")


class McpSession(Protocol):
    """What the wrapper uses of an ``mcp`` client session (``ClientSession`` or ``Client``).

    Their other arguments (``read_timeout_seconds``, a listing's cursor, …)
    pass through the wrapper as given.
    """

    async def call_tool(
        self, name: str, arguments: dict[str, Any] | None = None
    ) -> CallToolResult: ...

    async def list_tools(self) -> ListToolsResult: ...


class McpToolError(Exception):
    """An ``isError`` answer, raised through the runner so no cache stores it (and counted)."""

    def __init__(self, result: Any) -> None:
        super().__init__("the tool answered with isError")
        self.result = result


class McpTools:
    """An MCP session whose ``call_tool`` is paced, bounded, retried, cached and measured."""

    def __init__(
        self,
        session: McpSession,
        *,
        box: Toolbox,
        server: str,
        cache: float | str | None = 60.0,
        cacheable: Collection[str] = (),
        tools: Mapping[str, Mapping[str, Any]] | None = None,
        list_ttl: float | str = 30.0,
        **options: Any,
    ) -> None:
        if not server or "." in server:
            raise ConfigError("server", f"expected a name without dots, got {server!r}")
        tool_options = {k: v for k, v in options.items() if k not in _SERVER_OPTIONS}
        server_options = {k: v for k, v in options.items() if k in _SERVER_OPTIONS}
        per_tool = {name: dict(given) for name, given in (tools or {}).items()}
        for given in (tool_options, *per_tool.values()):
            ToolOptions.of(**given)  # a bad option fails here, not at the first call
        if not (callable(getattr(session, "call_tool", None)) and hasattr(session, "list_tools")):
            raise TypeError(
                f"expected an MCP client session (call_tool, list_tools), got {session!r}"
            )
        self.session, self.server, self._box = session, server, box
        # Typed loosely: the session's own keyword arguments pass through.
        self._call: Callable[..., Awaitable[Any]] = session.call_tool
        self._list: Callable[..., Awaitable[Any]] = session.list_tools
        self._cache = ToolOptions.of(cache=cache).cache
        self._cacheable = frozenset(cacheable)
        self._per_tool, self._tool_options = per_tool, tool_options
        self._list_ttl = ToolOptions.of(cache=list_ttl).cache or 0.0
        self.runner = box.runner(server, ToolOptions.of(box.entry(server), **server_options))
        self._hints: dict[str, _Hints] | None = None  # by tool name, once a listing was seen
        self._listings: dict[Any, tuple[float, Any]] = {}
        self._listing: dict[Any, asyncio.Future[Any]] = {}

    # -- tool calls ------------------------------------------------------------

    async def call_tool(
        self,
        name: str,
        arguments: dict[str, Any] | None = None,
        *args: Any,
        priority: int | None = None,
        **kwargs: Any,
    ) -> CallToolResult:
        """``session.call_tool(name, arguments, ...)`` through the tool's runner."""
        hints = await self._learnt(name)
        runner = self._runner(name if hints is not None else UNLISTED, hints)
        # A progress callback is the caller's own: its call is never shared.
        shared = runner.options.cache is not None and kwargs.get("progress_callback") is None
        key = None
        if shared:
            key = tool_key(self._box.namespace, runner.name, [arguments or {}], {})

        async def attempt() -> Any:
            result = await self._call(name, arguments, *args, **kwargs)
            if _is_error(result):
                raise McpToolError(result)
            return _stored(result) if shared else result

        try:
            value = await runner.call(attempt, key, priority)
        except McpToolError as answer:
            return cast("CallToolResult", answer.result)
        return cast("CallToolResult", _restored(value) if shared else value)

    def _runner(self, name: str, hints: _Hints | None) -> ToolRunner:
        label = f"{self.server}.{name}"
        found = self._box.runners.get(label)
        if found is not None:
            return found
        given = {**self._tool_options, **self._per_tool.get(name, {})}
        entry = self._box.entry(label)
        said = "cache" in given or (entry is not None and entry.cache is not None)
        if hints is not None and hints.may_cache(said or name in self._cacheable):
            given.setdefault("cache", self._cache)
        else:
            given["cache"] = None  # the entry's TTL too: this tool is not safe to cache
        return self._box.runner(label, ToolOptions.of(entry, **given), parent=self.runner)

    # -- listings --------------------------------------------------------------

    async def list_tools(self, *args: Any, **kwargs: Any) -> ListToolsResult:
        """The session's listing, kept ``list_ttl`` seconds; its hints are learnt."""
        key = (args, tuple(sorted(kwargs.items())))
        kept = self._listings.get(key)
        if kept is not None and kept[0] > self._box.clock.now():
            return cast("ListToolsResult", kept[1])
        # One listing in flight per key, as a task: a caller cancelled leaves it to the rest.
        task = self._listing.get(key)
        if task is None:
            task = asyncio.ensure_future(self._fetch_listing(key, args, kwargs))
            self._listing[key] = task
        return cast("ListToolsResult", await asyncio.shield(task))

    async def _fetch_listing(self, key: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        try:
            result = await self._list(*args, **kwargs)
        finally:
            self._listing.pop(key, None)
        self._learn(result)
        self._keep(key, result, self._box.clock.now())
        return result

    def forget_listing(self) -> None:
        """Drop the kept listings and hints (the server's tools changed)."""
        self._listings.clear()
        self._hints = None

    def _keep(self, key: Any, result: Any, now: float) -> None:
        if self._list_ttl <= 0:
            return
        if len(self._listings) >= _MAX_LISTINGS:
            self._listings.pop(next(iter(self._listings)))
        self._listings[key] = (now + self._list_ttl, result)

    async def _learnt(self, name: str) -> _Hints | None:
        """The hints of tool ``name``, listing the server first if no listing was seen."""
        if self._hints is None:
            await self.list_tools()
        return None if self._hints is None else self._hints.get(name)

    def _learn(self, listing: Any) -> None:
        hints = {} if self._hints is None else self._hints
        for item in getattr(listing, "tools", ()):
            hints[item.name] = _Hints.of(getattr(item, "annotations", None))
        self._hints = hints

    def __getattr__(self, name: str) -> Any:
        # Only what the wrapper lacks reaches here; its own names never go to the session.
        if name.startswith("_") or name in ("session", "server", "runner"):
            raise AttributeError(name)
        return getattr(self.session, name)

    def __repr__(self) -> str:
        return f"McpTools({self.server!r}, runner={self.runner!r})"


class _Hints:
    """A tool's annotations as the wrapper reads them (the MCP spec's defaults when absent)."""

    __slots__ = ("destructive", "idempotent", "read_only")

    def __init__(self, read_only: bool, idempotent: bool, destructive: bool | None) -> None:
        self.read_only, self.idempotent, self.destructive = read_only, idempotent, destructive

    @classmethod
    def of(cls, annotations: Any) -> _Hints:
        read_only = _hint(annotations, "read_only_hint", "readOnlyHint") is True
        idempotent = _hint(annotations, "idempotent_hint", "idempotentHint") is True
        destructive = _hint(annotations, "destructive_hint", "destructiveHint")
        return cls(read_only, idempotent, destructive)

    def may_cache(self, caller_says: bool) -> bool:
        """Read-only, or idempotent and said not destructive, or named by the caller.

        A tool the server says is destructive (and not read-only) is never cached.
        """
        if self.read_only:
            return True
        if self.destructive is True:
            return False
        return caller_says or (self.idempotent and self.destructive is False)


def _hint(annotations: Any, snake: str, camel: str) -> bool | None:
    """One hint, as the SDK spells it (2.x snake_case, 1.x camelCase); None when unset."""
    if annotations is None:
        return None
    value = getattr(annotations, snake, None)
    value = getattr(annotations, camel, None) if value is None else value
    return value if isinstance(value, bool) else None


def _is_error(result: Any) -> bool:
    flag = getattr(result, "is_error", None)
    return bool(getattr(result, "isError", False) if flag is None else flag)


def _stored(result: Any) -> Any:
    """A result as data any cache tier stores (msgpack, Redis): its wire JSON."""
    return result.model_dump(mode="json", by_alias=True, exclude_none=True)


def _restored(value: Any) -> Any:
    from mcp.types import CallToolResult

    return CallToolResult.model_validate(value)
