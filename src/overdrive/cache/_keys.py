"""Canonical request keys: equal requests give equal keys, whatever the dict order."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from .._errors import RequestError
from .._json import dumps_canonical

__all__ = ["request_key"]

# Fields that change how a response is delivered, not what it says.
_DELIVERY_FIELDS = frozenset({"stream", "stream_options", "timeout", "user"})
# A streamed answer's bytes do depend on `stream_options` (include_usage adds a
# usage chunk), so the key of a stream keeps it.
_STREAM_DELIVERY_FIELDS = _DELIVERY_FIELDS - {"stream_options"}


def request_key(
    op: str, body: Mapping[str, Any], namespace: str = "", *, streamed: bool = False
) -> bytes:
    """A 16-byte blake2b digest of the op, the tenant namespace and the normalised body.

    >>> request_key("chat", {"model": "m", "stream": True}) == request_key("chat", {"model": "m"})
    True

    With ``streamed`` it is the key of a streamed answer: ``stream_options``
    counts, since it changes the chunks sent.

    >>> usage = {"model": "m", "stream_options": {"include_usage": True}}
    >>> request_key("chat", usage, streamed=True) == request_key("chat", usage)
    False
    """
    ignored = _STREAM_DELIVERY_FIELDS if streamed else _DELIVERY_FIELDS
    params = {k: v for k, v in body.items() if k not in ignored and v is not None}
    try:
        material = dumps_canonical({"op": op, "ns": namespace, "params": params})
    except TypeError as exc:
        raise RequestError("<body>", f"cannot be sent as JSON: {exc}") from None
    return hashlib.blake2b(material, digest_size=16).digest()
