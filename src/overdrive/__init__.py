"""overdrive: make AI agents fast and cheap.

One pipeline caches, coalesces, paces, retries and measures every LLM and
embedding call::

    import overdrive, openai

    od = overdrive.Overdrive.from_config("overdrive.toml")
    client = openai.AsyncOpenAI(api_key="unused", http_client=od.http_client())
"""

from __future__ import annotations

from . import stream as stream  # the module: overdrive.stream.chunks, .map
from ._calls import Admission, admission
from ._clock import Clock, FakeClock, SystemClock
from ._errors import (
    AdmissionError,
    BatchClosedError,
    BatchError,
    BatchQueueFullError,
    BatchResultCountError,
    CacheError,
    CodecError,
    ConfigError,
    KeyLimitError,
    MemoryBudgetError,
    ModelNotAllowedError,
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
from .config import CacheConfig, Config, RetryConfig, UpstreamConfig, load_config
from .doors import cached
from .engine import Overdrive, Result
from .flow import Batcher, batched
from .monitor import Alerts, Measure, Metrics, WebhookSink, measure, metrics_text
from .resources import ResourceManager, ResourcePool

__version__ = "0.1.0"

__all__ = [
    "Admission",
    "AdmissionError",
    "Alerts",
    "BatchClosedError",
    "BatchError",
    "BatchQueueFullError",
    "BatchResultCountError",
    "Batcher",
    "CacheConfig",
    "CacheError",
    "Clock",
    "CodecError",
    "Config",
    "ConfigError",
    "FakeClock",
    "KeyLimitError",
    "Measure",
    "MemoryBudgetError",
    "Metrics",
    "ModelNotAllowedError",
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
    "ResourceManager",
    "ResourcePool",
    "Result",
    "RetryConfig",
    "SlowReaderError",
    "SystemClock",
    "UnknownModelError",
    "UpstreamConfig",
    "UpstreamError",
    "UpstreamProtocolError",
    "UpstreamStatusError",
    "UpstreamUnavailableError",
    "WebhookSink",
    "__version__",
    "admission",
    "batched",
    "cached",
    "load_config",
    "measure",
    "metrics_text",
]
