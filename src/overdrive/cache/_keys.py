"""Canonical request keys: equal requests give equal keys, whatever the dict order."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from .._calls import Call
from .._errors import RequestError
from .._json import dumps_canonical

__all__ = ["call_key", "request_key", "semantic_scope"]


def call_key(call: Call, namespace: str = "") -> bytes:
    """The cache and coalescing key of a call: its adapter's key fields, in its tenant's namespace.

    A streamed call has a key of its own (its answer is kept as chunks), and
    a caller's own namespace keeps its answers apart from the engine's.

    >>> from overdrive._calls import chat_call
    >>> ask = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    >>> call_key(chat_call(ask)) == call_key(chat_call({**ask, "user": "ann"}))
    True
    >>> call_key(chat_call(ask)) == call_key(chat_call({**ask, "stream": True}))
    False
    """
    op = f"{call.op}.stream" if call.stream else call.op
    if call.namespace:
        namespace = f"{namespace}/{call.namespace}"
    return request_key(op, call.api.key_fields(call.body, streamed=call.stream), namespace)


def semantic_scope(call: Call, namespace: str = "") -> tuple[bytes, str] | None:
    """``(scope, text)``: what must match exactly, and the last user text matched by meaning.

    None when the call's API or its last turn has no such text. The scope is
    keyed like :func:`call_key`, with the text left out, in the same namespace.

    >>> from overdrive._calls import chat_call
    >>> def ask(text):
    ...     return chat_call({"model": "m", "messages": [{"role": "user", "content": text}]})
    >>> first, second = semantic_scope(ask("hi there")), semantic_scope(ask("hello"))
    >>> first[0] == second[0], first[1]
    (True, 'hi there')
    """
    split = call.api.semantic_split(call.body, streamed=call.stream)
    if split is None:
        return None
    fields, text = split
    op = f"{call.op}.stream" if call.stream else call.op
    if call.namespace:
        namespace = f"{namespace}/{call.namespace}"
    return request_key(f"{op}~semantic", fields, namespace), text


def request_key(op: str, params: Mapping[str, Any], namespace: str = "") -> bytes:
    """A 16-byte blake2b digest of the op, the tenant namespace and the key's fields.

    >>> request_key("chat", {"model": "m", "n": 2}) == request_key("chat", {"n": 2, "model": "m"})
    True
    """
    try:
        material = dumps_canonical({"op": op, "ns": namespace, "params": params})
    except TypeError as exc:
        raise RequestError("<body>", f"cannot be sent as JSON: {exc}") from None
    return hashlib.blake2b(material, digest_size=16).digest()
