"""Streaming data with back-pressure and bounded memory.

``chunks`` cuts any byte source (a path, a file, an HTTP body, bytes,
iterables of bytes) into chunks of exactly ``size`` bytes, reading only as
fast as the consumer takes them. ``map`` applies a function to a stream of
items with at most ``concurrency`` calls in flight and as many results held,
in input order or as they complete. Together they hash, upload or embed a
file of any size in constant memory::

    from overdrive import stream

    async with stream.map(
        digest, stream.chunks("big.bin", 1 << 20), concurrency=8, to_thread=True
    ) as digests:
        async for d in digests:
            ...

Both return async iterators that close what they consume when closed early
(``aclose()`` or ``async with``), cancelling work in flight.
"""

from __future__ import annotations

from ._chunks import chunks
from ._map import map

__all__ = ["chunks", "map"]
