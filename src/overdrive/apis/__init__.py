"""API families, one adapter each, and the registry the doors route requests by.

Each family (:data:`CHAT`, :data:`EMBEDDINGS`) is an :class:`Api` singleton;
see :mod:`overdrive.apis._base` for the interface and how to add one.

>>> for_request("POST", "/v1/chat/completions") is CHAT
True
>>> named("embeddings") is EMBEDDINGS
True
>>> for_request("GET", "/v1/models") is None  # a door's own answer, not an API family
True
"""

from __future__ import annotations

from typing import TypeVar

from .._calls import FAMILIES
from ._base import Api
from ._stream_usage import StreamUsage, hide_usage_events
from .chat import CHAT
from .embeddings import EMBEDDINGS
from .messages import COUNT_TOKENS, MESSAGES
from .responses import RESPONSES

__all__ = [
    "CHAT",
    "COUNT_TOKENS",
    "EMBEDDINGS",
    "MESSAGES",
    "RESPONSES",
    "Api",
    "StreamUsage",
    "for_request",
    "hide_usage_events",
    "named",
    "register",
    "registered",
    "shaped_for",
    "unregister",
]

_A = TypeVar("_A", bound=Api)

_BY_NAME: dict[str, Api] = {}
# Per method, (door path suffix, adapter), the longest suffix first: the most specific wins.
_ROUTES: dict[str, list[tuple[str, Api]]] = {}


def for_request(method: str, path: str) -> Api | None:
    """The adapter answering ``method`` on ``path`` (any prefix: "/v1", a proxy's), else None."""
    for suffix, api in _ROUTES.get(method, ()):
        if path.endswith(suffix):
            return api
    return None


def shaped_for(path: str) -> Api:
    """The adapter whose errors fit a request under ``path``, known or not (CHAT's if none).

    A client of an API reads that API's error shape, also for a path the
    doors do not serve (``GET /v1/messages/`` gets Anthropic's).

    >>> shaped_for("/v1/messages/x").name, shaped_for("/v1/files").name
    ('messages', 'chat')
    """
    within = path.rstrip("/") + "/"
    found = [api for api in _BY_NAME.values() if api.suffix + "/" in within]
    return max(found, key=lambda api: len(api.suffix), default=CHAT)


def named(name: str) -> Api | None:
    """The adapter whose name (its calls' ``op``) is ``name``, else None."""
    return _BY_NAME.get(name)


def registered() -> tuple[Api, ...]:
    """Every registered adapter, in the order registered."""
    return tuple(_BY_NAME.values())


def register(api: _A) -> _A:
    """Add ``api`` to the registry: the doors route to it, ``named`` finds it. Returns it.

    >>> class Rerank(Api):
    ...     name, path = "rerank", "/rerank"
    >>> rerank = register(Rerank())
    >>> for_request("POST", "/v1/rerank") is rerank
    True
    >>> unregister(rerank)

    A name, or a method and path, that another adapter has is a ``ValueError``.
    """
    if api.name in _BY_NAME:
        raise ValueError(f"an API named {api.name!r} is registered already")
    routes = _ROUTES.setdefault(api.method, [])
    if any(suffix == api.suffix for suffix, _ in routes):
        raise ValueError(f"another API answers {api.method} …{api.suffix}")
    _BY_NAME[api.name] = api
    FAMILIES[api.name] = api
    routes.append((api.suffix, api))
    routes.sort(key=lambda route: -len(route[0]))
    return api


def unregister(api: Api) -> None:
    """Take ``api`` out of the registry (a test's adapter, when the test is done)."""
    if _BY_NAME.get(api.name) is not api:
        raise ValueError(f"{api!r} is not registered")
    del _BY_NAME[api.name], FAMILIES[api.name]
    routes = _ROUTES[api.method]
    routes[:] = [route for route in routes if route[1] is not api]


register(CHAT)
register(EMBEDDINGS)
register(MESSAGES)
register(COUNT_TOKENS)
register(RESPONSES)
