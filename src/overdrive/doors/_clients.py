"""The HTTP clients ``od.http_client()`` hands out: httpx2 or httpx, async or sync.

openai 3.x takes ``httpx2`` clients (its type hints say so, and mypy holds a
caller to them); openai before 3, and libraries built on httpx, take ``httpx``
ones. Each client is the library's own class on a door transport, so the SDK's
``isinstance`` checks pass and everything else about the client (timeouts,
headers, event hooks) is the library's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import httpx
    import httpx2

    from ._pipeline import Pipeline
    from ._unknown import UnknownPaths

__all__ = ["Flavour", "make_client"]

Flavour = Literal["httpx2", "httpx"]
_FLAVOURS: tuple[Flavour, ...] = ("httpx2", "httpx")


def make_client(
    engine: Pipeline, flavour: str, sync: bool, unknown: UnknownPaths, options: dict[str, Any]
) -> httpx2.AsyncClient | httpx2.Client | httpx.AsyncClient | httpx.Client:
    """The client of ``flavour`` (``sync`` or not) whose requests go through ``engine``.

    ``options`` go to the client's constructor (``base_url``, ``headers``, …);
    ``timeout`` defaults to None: the engine's own timeouts and queue deadlines apply.
    """
    if flavour not in _FLAVOURS:
        raise ValueError(f"flavour: expected one of {', '.join(_FLAVOURS)}, got {flavour!r}")
    if "transport" in options:
        raise ValueError("transport: the door is the client's transport; it cannot take another")
    options.setdefault("timeout", None)
    if flavour == "httpx2":
        return _httpx2_client(engine, sync, unknown, options)
    return _httpx_client(engine, sync, unknown, options)


def _httpx2_client(
    engine: Pipeline, sync: bool, unknown: UnknownPaths, options: dict[str, Any]
) -> httpx2.AsyncClient | httpx2.Client:
    import httpx2

    from ._httpx2 import Httpx2Transport, SyncHttpx2Transport

    if sync:
        return httpx2.Client(transport=SyncHttpx2Transport(engine, unknown), **options)
    return httpx2.AsyncClient(transport=Httpx2Transport(engine, unknown), **options)


def _httpx_client(
    engine: Pipeline, sync: bool, unknown: UnknownPaths, options: dict[str, Any]
) -> httpx.AsyncClient | httpx.Client:
    import httpx

    from ._transport import EngineTransport, SyncEngineTransport

    if sync:
        return httpx.Client(transport=SyncEngineTransport(engine, unknown), **options)
    return httpx.AsyncClient(transport=EngineTransport(engine, unknown), **options)
