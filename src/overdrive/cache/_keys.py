"""Canonical request keys: equal requests give equal keys, whatever the dict order."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from .._calls import Call
from .._errors import RequestError
from .._json import dumps_canonical

__all__ = ["call_key", "request_key"]


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
