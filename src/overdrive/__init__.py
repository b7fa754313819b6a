"""overdrive: make AI agents fast and cheap.

One pipeline caches, coalesces, paces, retries and measures every LLM and
embedding call::

    import overdrive, openai

    od = overdrive.Overdrive.from_config("overdrive.toml")
    client = openai.AsyncOpenAI(api_key="unused", http_client=od.http_client())

Here: the engine, its config, the decorators, admission, ``measure`` and the
errors a caller catches. The rest lives with its part: ``overdrive.monitor``
(metrics, alerts), ``overdrive.resources`` (pools, the memory budget),
``overdrive.stream``, ``overdrive.distribute``, ``overdrive.gateway``,
``overdrive.sim``, and ``overdrive.testing`` (a fake clock for your tests).
"""

from __future__ import annotations

from . import stream as stream  # the module: overdrive.stream.chunks, .map
from ._calls import Admission, Call, Result, admission
from ._errors import (
    AdmissionError,
    BatchClosedError,
    BatchError,
    BatchQueueFullError,
    CacheError,
    CodecError,
    ConfigError,
    EngineLoopError,
    MemoryBudgetError,
    OverdriveError,
    PoolClosedError,
    PoolError,
    PoolTimeoutError,
    QueueFullError,
    QueueTimeoutError,
    RateLimitedError,
    RequestError,
    ResourceError,
    SlowReaderError,
    UnknownModelError,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamStatusError,
    UpstreamUnavailableError,
)
from .config import Config, load_config
from .doors import cached
from .engine import Overdrive
from .flow import batched
from .monitor import measure

__version__ = "0.1.0"

__all__ = [
    "Admission",
    "AdmissionError",
    "BatchClosedError",
    "BatchError",
    "BatchQueueFullError",
    "CacheError",
    "Call",
    "CodecError",
    "Config",
    "ConfigError",
    "EngineLoopError",
    "MemoryBudgetError",
    "Overdrive",
    "OverdriveError",
    "PoolClosedError",
    "PoolError",
    "PoolTimeoutError",
    "QueueFullError",
    "QueueTimeoutError",
    "RateLimitedError",
    "RequestError",
    "ResourceError",
    "Result",
    "SlowReaderError",
    "UnknownModelError",
    "UpstreamError",
    "UpstreamProtocolError",
    "UpstreamStatusError",
    "UpstreamUnavailableError",
    "__version__",
    "admission",
    "batched",
    "cached",
    "load_config",
    "measure",
]
