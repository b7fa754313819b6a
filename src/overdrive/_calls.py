"""A call as the pipeline sees it: checked arguments, its key material and its token cost.

A call carries its API family's adapter (``call.api``, an
:class:`overdrive.apis.Api`): stages ask it what they need to know about the
call instead of branching on the API's name. The adapters live above this
module (they make calls), so a call knows its adapter by :class:`ApiFamily`
and finds one by name in :data:`FAMILIES`, which the registry fills.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from ._errors import RequestError
from ._units import parse_duration

__all__ = [
    "FAMILIES",
    "Admission",
    "ApiFamily",
    "CacheMode",
    "Call",
    "Result",
    "SampledPolicy",
    "admission",
    "chat_call",
    "embeddings_call",
    "sampled",
    "shares_answers",
]


class ApiFamily(Protocol):
    """What a stage may ask of a call's API family (each member: :class:`overdrive.apis.Api`)."""

    @property
    def name(self) -> str: ...

    @property
    def path(self) -> str: ...

    @property
    def stream_type(self) -> str: ...

    @property
    def upstream_api(self) -> str: ...

    def call(self, body: Mapping[str, Any]) -> Call: ...

    def key_fields(self, body: Mapping[str, Any], *, streamed: bool = False) -> dict[str, Any]: ...

    def semantic_split(
        self, body: Mapping[str, Any], *, streamed: bool = False
    ) -> tuple[dict[str, Any], str] | None: ...

    def prefix(self, body: Mapping[str, Any], min_tokens: int = 0) -> tuple[int, ...]: ...

    def sampled(self, call: Call) -> bool: ...

    def shares(self, call: Call) -> bool: ...

    def batchable(self, call: Call) -> bool: ...

    def usage(self, payload: Mapping[str, Any]) -> tuple[int, int] | None: ...

    def cached_tokens(self, payload: Mapping[str, Any]) -> int: ...

    def stream_complete(self, chunks: Iterable[bytes]) -> bool: ...

    def is_error_event(self, payload: Any) -> bool: ...

    def with_stream_usage(self, call: Call) -> Call | None: ...

    def is_usage_event(self, payload: Any) -> bool: ...


# Every registered API family by name. ``overdrive.apis`` fills it as it
# registers its adapters (the root package imports it before any call is made).
FAMILIES: dict[str, ApiFamily] = {}


@dataclass(slots=True, frozen=True)
class Admission:
    """How a call queues for its upstream: ``priority`` (higher goes first) and ``timeout``."""

    priority: int = 0
    timeout: float | None = None


CacheMode = Literal["default", "no-cache", "no-store"]

_NO_ADMISSION_CHOICE = Admission()
_ADMISSION: ContextVar[Admission] = ContextVar("overdrive_admission", default=_NO_ADMISSION_CHOICE)


@contextmanager
def admission(priority: int = 0, timeout: float | str | None = None) -> Iterator[Admission]:
    """Calls made inside the block queue with this ``priority`` and give up after ``timeout``.

    >>> with admission(priority=10, timeout="2s") as chosen:
    ...     chosen
    Admission(priority=10, timeout=2.0)

    A call that has not been admitted within ``timeout`` seconds raises
    :class:`~overdrive.QueueTimeoutError`; the upstream never sees it.
    """
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise RequestError("priority", f"expected an integer, got {priority!r}")
    seconds = None if timeout is None else _timeout(timeout)
    token = _ADMISSION.set(chosen := Admission(priority, seconds))
    try:
        yield chosen
    finally:
        _ADMISSION.reset(token)


def _timeout(value: float | str) -> float:
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        raise RequestError("timeout", str(exc)) from None
    if seconds <= 0:
        raise RequestError("timeout", f"expected a positive duration, got {value!r}")
    return seconds


@dataclass(slots=True, frozen=True)
class Call:
    """One API request: ``op`` is its family's name ("chat"), ``path`` its upstream path.

    Made by the family's adapter (``api``), which checked ``body`` and priced it
    at ``tokens`` (the prompt plus the answer's budget).
    """

    # The adapter's name, kept: every stage's metrics read it.
    op: str
    body: Mapping[str, Any]
    model: str
    stream: bool
    tokens: int
    api: ApiFamily
    # Taken from the enclosing ``admission(...)`` block when the call is made.
    admission: Admission = field(default_factory=_ADMISSION.get)
    # "no-cache": do not answer from the cache (the answer is still stored);
    # "no-store": neither read nor store (HTTP Cache-Control semantics).
    cache: CacheMode = "default"
    # Cached answers older than this many seconds are not used (Cache-Control: max-age).
    max_age: float | None = None
    # Keeps this caller's cached and coalesced answers apart from other callers'
    # (a gateway key's cache namespace); "" shares the engine's.
    namespace: str = ""
    # The models to try, in order, once ``model``'s attempts are spent: set
    # when a ``[[models]]`` alias is resolved (see ``route/_aliases.py``).
    fallbacks: tuple[str, ...] = ()
    # The gateway key (its name) the call is made for: its cost and budget are the key's.
    key: str = ""

    @property
    def path(self) -> str:
        """The upstream path, after the base URL: the adapter's (read once per exchange)."""
        return self.api.path


@dataclass(slots=True, frozen=True)
class Result:
    """A complete response: ``source`` is "upstream", "cache", "stale", "semantic" or "coalesced".

    ``model`` is the model that served it: the one the call went as (an
    alias's target) or the fallback that answered.
    """

    status: int
    body: bytes
    upstream: str
    # "cache" and "stale" (served past its TTL while it is refreshed) come from the cache.
    source: str = "upstream"
    # Seconds the call waited for admission to its upstream.
    queued_s: float = 0.0
    # The model that served it: the call's own, or the fallback that answered.
    model: str = ""
    # A semantic hit's cosine similarity to the cached question it answered.
    similarity: float | None = None
    # USD the answer cost at its model's price: 0.0 when nothing was spent on it
    # (the cache answered, it joined another call) or the model has no price.
    cost: float = 0.0

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


SampledPolicy = Literal["share", "seeded", "fresh"]


def sampled(call: Call) -> bool:
    """Whether ``call`` asks the model to sample, as its API decides (``call.api.sampled``).

    A chat call samples unless its ``temperature`` is 0; embeddings never do.

    >>> sampled(chat_call({"model": "m", "messages": [{"role": "user"}], "temperature": 0}))
    False
    >>> sampled(chat_call({"model": "m", "messages": [{"role": "user"}]}))
    True
    """
    return call.api.sampled(call)


def shares_answers(call: Call, policy: SampledPolicy) -> bool:
    """Whether ``call`` may be answered from the cache, coalesced, and its answer stored.

    ``policy`` is ``[cache] sampled``:

    - "share" (the default): every call, sampled or not; a repeat of a
      sampled call gets the same sample back.
    - "seeded": a sampled chat call only when it carries a ``seed`` (its
      sample is meant to be reproducible; the seed is part of the key).
    - "fresh": never a sampled chat call: each caller gets its own upstream
      sample, streamed or not, and none is stored.

    Calls that do not sample (``temperature: 0``, embeddings) share, unless
    their adapter says none of their answers may be shared (``call.api.shares``:
    a Responses call that appends to a stored ``conversation``, say); those
    never share, under any policy.
    """
    if not call.api.shares(call):
        return False
    if policy == "share" or not call.api.sampled(call):
        return True
    return policy == "seeded" and call.body.get("seed") is not None


def chat_call(body: Mapping[str, Any]) -> Call:
    """Check a chat completion body and price it in tokens: the chat adapter's ``call``."""
    return FAMILIES["chat"].call(body)


def embeddings_call(body: Mapping[str, Any]) -> Call:
    """Check an embeddings body and price it in input tokens: the embeddings adapter's ``call``."""
    return FAMILIES["embeddings"].call(body)
