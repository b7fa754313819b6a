"""One exception hierarchy for overdrive.

::

    OverdriveError                      anything overdrive raises on purpose
    ├── AdmissionError                  a call could not be admitted to its upstream
    │   ├── KeyLimitError               a gateway key is over its own rpm/tpm
    │   ├── QueueFullError              ``limit`` calls are already waiting
    │   └── QueueTimeoutError           it waited past its deadline
    ├── BudgetExceededError             a key or the engine spent its budget for the period
    ├── ConfigError                     a config value is wrong; names the field
    ├── EngineLoopError                 a call cannot run on this thread or loop; says what to do
    ├── BatchError                      a batcher (``batcher``) refused or lost an item
    │   ├── BatchQueueFullError         ``limit`` items are already waiting
    │   ├── BatchClosedError            the batcher was closed
    │   └── BatchResultCountError       the handler returned the wrong number of results
    ├── CacheError                      a cache tier failed (callers fail open on it)
    │   └── CodecError                  a stored value cannot be decoded or fails its signature
    ├── RequestError                    a call's arguments are wrong; names the field
    │   ├── ModelNotAllowedError        a gateway key may not use the model
    │   └── UnknownModelError           no configured upstream serves the model
    ├── ResourceError                   a shared resource (a pool, the memory budget) refused
    │   ├── MemoryBudgetError           an allocation would overrun the memory budget
    │   ├── PoolError                   a resource pool (``pool``) refused or was misused
    │   │   ├── PoolClosedError         the pool was closed
    │   │   └── PoolTimeoutError        no resource within the acquire timeout
    │   └── SlowReaderError             a stream reader fell too far behind, or took nothing
    └── UpstreamError                   the upstream could not give a usable answer
        ├── UpstreamStatusError         it answered with an HTTP error status
        │   └── RateLimitedError        it kept answering 429 past the retry allowance
        ├── UpstreamProtocolError       its answer is unusable: not the API's shape, or over a bound
        └── UpstreamUnavailableError    connect/read failures or timeouts, retries spent

Every error carries its context as attributes (field, upstream, status, ...)
so callers can react without parsing messages. The ones a caller catches are
exported from ``overdrive``; the few only one part raises live with it:
``overdrive.gateway`` (``KeyLimitError``, ``ModelNotAllowedError``, which the
gateway answers as 429 and 403), ``overdrive.cost`` (``BudgetExceededError``,
a 429 at the gateway) and ``overdrive.flow`` (``BatchResultCountError``, a
batch handler's bug).
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "AdmissionError",
    "BatchClosedError",
    "BatchError",
    "BatchQueueFullError",
    "BatchResultCountError",
    "BudgetExceededError",
    "CacheError",
    "CodecError",
    "ConfigError",
    "EngineLoopError",
    "KeyLimitError",
    "MemoryBudgetError",
    "ModelNotAllowedError",
    "OverdriveError",
    "PoolClosedError",
    "PoolError",
    "PoolTimeoutError",
    "QueueFullError",
    "QueueTimeoutError",
    "RateLimitedError",
    "RequestError",
    "ResourceError",
    "SlowReaderError",
    "UnknownModelError",
    "UpstreamError",
    "UpstreamProtocolError",
    "UpstreamStatusError",
    "UpstreamUnavailableError",
]


class OverdriveError(Exception):
    """Base of every error overdrive raises on purpose."""


class ConfigError(OverdriveError, ValueError):
    """A configuration value is missing or wrong.

    ``field`` is the dotted path of the offending value, e.g. ``upstreams[0].rpm``.
    """

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"config field `{field}`: {problem}")


class EngineLoopError(OverdriveError, RuntimeError):
    """The engine cannot run a call where it was asked to, e.g. a sync client inside its own loop.

    It is a ``RuntimeError`` too, as asyncio's own "wrong loop" errors are.
    """


class AdmissionError(OverdriveError):
    """A call for ``queue`` (an upstream, or an upstream and model) was not admitted."""

    def __init__(self, queue: str, message: str) -> None:
        self.queue = queue
        super().__init__(f"admission queue {queue!r}: {message}")


class QueueFullError(AdmissionError):
    """``limit`` calls were already waiting, so this one was refused at once."""

    def __init__(self, queue: str, limit: int) -> None:
        self.limit = limit
        super().__init__(queue, f"full ({limit} calls waiting, max_waiting={limit})")


class QueueTimeoutError(AdmissionError, TimeoutError):
    """The call waited ``waited`` seconds, its whole allowance, without being admitted."""

    def __init__(self, queue: str, waited: float) -> None:
        self.waited = waited
        super().__init__(queue, f"not admitted within its deadline (waited {waited:.3f}s)")


class KeyLimitError(AdmissionError):
    """The gateway key ``key`` is over its rpm/tpm; it fits again in ``retry_after`` seconds."""

    def __init__(self, key: str, retry_after: float) -> None:
        self.key = key
        self.retry_after = retry_after
        super().__init__(f"key {key}", f"over the key's rate limit; retry in {retry_after:.3f}s")


class BudgetExceededError(OverdriveError):
    """``scope`` (the engine, or a gateway key) spent its ``limit`` USD for the ``period``.

    ``spent`` is what it had spent when the call was refused; the budget is
    whole again in ``retry_after`` seconds, when the next period begins.
    """

    def __init__(
        self, scope: str, spent: float, limit: float, period: str, retry_after: float
    ) -> None:
        self.scope = scope
        self.spent = spent
        self.limit = limit
        self.period = period
        self.retry_after = retry_after
        super().__init__(
            f"{scope} has spent ${spent:.4f} of its ${limit:g} budget for this {period};"
            f" it renews in {_span(retry_after)}"
        )


def _span(seconds: float) -> str:
    """``seconds`` as hours and minutes (or minutes and seconds) for a person to read."""
    whole = max(0, round(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h {minutes:02d}m" if hours else f"{minutes}m {secs:02d}s"


class BatchError(OverdriveError):
    """The batcher named ``batcher`` refused an item or could not deliver its result."""

    def __init__(self, batcher: str, message: str) -> None:
        self.batcher = batcher
        super().__init__(f"batcher {batcher!r}: {message}")


class BatchQueueFullError(BatchError):
    """``limit`` items are already waiting (queued or in flight); the caller was not queued."""

    def __init__(self, batcher: str, limit: int) -> None:
        self.limit = limit
        super().__init__(batcher, f"queue full ({limit} items waiting, max_queue={limit})")


class BatchClosedError(BatchError):
    """The batcher was closed with ``aclose()`` and takes no new items."""

    def __init__(self, batcher: str) -> None:
        super().__init__(batcher, "closed; it takes no new items")


class BatchResultCountError(BatchError):
    """The handler returned ``got`` results for a batch of ``expected`` items."""

    def __init__(self, batcher: str, expected: int, got: int) -> None:
        self.expected = expected
        self.got = got
        super().__init__(
            batcher, f"handler returned {got} results for {expected} items; need one per item"
        )


class CacheError(OverdriveError):
    """A cache tier (``tier``) failed; the tiered cache treats it as a miss and counts it."""

    def __init__(self, tier: str, message: str) -> None:
        self.tier = tier
        super().__init__(f"cache tier {tier!r}: {message}")


class CodecError(CacheError):
    """A stored value cannot be decoded, or its signature does not match: never unpickled."""


class RequestError(OverdriveError, ValueError):
    """The arguments of a call are wrong; ``field`` names the request field."""

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"request field `{field}`: {problem}")


class UnknownModelError(RequestError):
    """No configured upstream serves ``model`` (through ``api``, when calls of several APIs route).

    ``served_by`` names the other APIs whose upstreams do serve it: a call is
    never translated from one API family to another.
    """

    def __init__(
        self, model: str, known: list[str], api: str | None = None, served_by: Sequence[str] = ()
    ) -> None:
        self.model = model
        self.known = known
        self.api = api
        if api is None:
            problem = f"no upstream serves {model!r}; configured models: {known}"
        else:
            problem = f"no {api} upstream serves {model!r}; {api} models: {known}"
        if served_by:
            problem += (
                f" ({' and '.join(served_by)} upstreams serve it;"
                " calls are not translated between APIs)"
            )
        super().__init__("model", problem)


class ModelNotAllowedError(RequestError):
    """The gateway key ``key`` may not call ``model``."""

    def __init__(self, key: str, model: str) -> None:
        self.key = key
        self.model = model
        super().__init__("model", f"the API key {key!r} may not use model {model!r}")


class ResourceError(OverdriveError):
    """A shared resource named ``resource`` (a pool, the memory budget) refused a request."""

    def __init__(self, resource: str, message: str) -> None:
        self.resource = resource
        super().__init__(f"{resource}: {message}")


class MemoryBudgetError(ResourceError):
    """``owner`` asked for ``requested`` bytes while only ``free`` of ``budget`` were left."""

    def __init__(self, owner: str, requested: int, free: int, budget: int) -> None:
        self.owner = owner
        self.requested = requested
        self.free = free
        self.budget = budget
        super().__init__(
            "memory budget", f"{owner!r} asked for {requested} bytes; {free} of {budget} free"
        )


class PoolError(ResourceError):
    """The resource pool named ``pool`` refused a request or was used wrongly."""

    def __init__(self, pool: str, message: str) -> None:
        self.pool = pool
        super().__init__(f"pool {pool!r}", message)


class PoolClosedError(PoolError):
    """The pool was closed with ``aclose()``: waiters fail with this, new acquires too."""

    def __init__(self, pool: str) -> None:
        super().__init__(pool, "closed; it hands out no resources")


class PoolTimeoutError(PoolError, TimeoutError):
    """No resource could be had within ``timeout`` seconds (waiting, creating, checking)."""

    def __init__(self, pool: str, timeout: float) -> None:
        self.timeout = timeout
        super().__init__(pool, f"no resource within the acquire timeout ({timeout:g}s)")


class SlowReaderError(ResourceError):
    """A reader of a streamed answer was dropped for falling too far behind or going idle.

    ``behind`` is how many bytes it had not taken yet, ``limit`` the bound
    (``[gateway] stream_buffer_bytes``); ``idle`` is set (seconds) when it was
    dropped for taking nothing that long, None when it fell ``behind`` past
    ``limit`` while another reader of the same stream kept up.
    """

    def __init__(self, behind: int, limit: int, idle: float | None = None) -> None:
        self.behind = behind
        self.limit = limit
        self.idle = idle
        if idle is None:
            why = f"fell {behind} bytes behind, past the {limit}-byte stream buffer"
        else:
            why = f"took nothing for {idle:g}s with {behind} bytes waiting"
        super().__init__("stream buffer", f"reader dropped: it {why}")


class UpstreamError(OverdriveError):
    """The upstream ``upstream`` could not give a usable answer."""

    def __init__(self, upstream: str, message: str) -> None:
        self.upstream = upstream
        super().__init__(f"upstream {upstream!r}: {message}")


class UpstreamStatusError(UpstreamError):
    """The upstream answered with HTTP ``status``; ``body`` holds its error payload."""

    def __init__(self, upstream: str, status: int, body: bytes) -> None:
        self.status = status
        self.body = body
        snippet = body[:200].decode("utf-8", "replace")
        super().__init__(upstream, f"HTTP {status}: {snippet}")


class RateLimitedError(UpstreamStatusError):
    """The upstream kept answering 429 after overdrive waited as told, ``attempts`` times."""

    def __init__(self, upstream: str, body: bytes, attempts: int) -> None:
        self.attempts = attempts
        super().__init__(upstream, 429, body)


class UpstreamProtocolError(UpstreamError):
    """The upstream's answer cannot be used: a 2xx body not of the API's shape, or an
    answer over ``max_response_head_bytes`` / ``max_response_bytes``."""


class UpstreamUnavailableError(UpstreamError):
    """Connecting or reading failed (or timed out) on every attempt.

    ``timed_out`` tells a timeout (the upstream was too slow) from a failure
    to connect or a broken answer.
    """

    def __init__(self, upstream: str, message: str, *, timed_out: bool = False) -> None:
        self.timed_out = timed_out
        super().__init__(upstream, message)
