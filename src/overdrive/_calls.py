"""A call as the pipeline sees it: checked arguments, its key material and its token cost."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Literal

from ._errors import RequestError
from ._tokens import estimate_messages_tokens, estimate_tokens
from ._units import parse_duration

__all__ = [
    "Admission",
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

# Reserved for the answer when a chat call sets no max_tokens; the real figure
# is settled from the reported usage once the answer arrives.
DEFAULT_OUTPUT_TOKENS = 256

CHAT_PATH = "/chat/completions"
EMBEDDINGS_PATH = "/embeddings"


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
    """One OpenAI-compatible request: ``op`` is "chat" or "embeddings"."""

    op: str
    path: str
    body: Mapping[str, Any]
    model: str
    stream: bool
    tokens: int
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


@dataclass(slots=True, frozen=True)
class Result:
    """A complete response: ``source`` is "upstream", "cache", "stale" or "coalesced"."""

    status: int
    body: bytes
    upstream: str
    # "cache" and "stale" (served past its TTL while it is refreshed) come from the cache.
    source: str = "upstream"
    # Seconds the call waited for admission to its upstream.
    queued_s: float = 0.0

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


SampledPolicy = Literal["share", "seeded", "fresh"]


def sampled(call: Call) -> bool:
    """Whether ``call`` asks the model to sample: a chat call whose ``temperature`` is unset or > 0.

    OpenAI's default temperature is 1, so a call without one samples. Only
    temperature decides: ``top_p`` narrows what is sampled from but at
    temperature 0 nothing is, and ``n`` asks for that many choices of
    whatever kind (both are part of the key, as every body field is, so an
    answer with one choice never serves a call that asked for ``n > 1``).

    >>> sampled(chat_call({"model": "m", "messages": [{"role": "user"}], "temperature": 0}))
    False
    >>> sampled(chat_call({"model": "m", "messages": [{"role": "user"}]}))
    True
    """
    if call.op != "chat":
        return False
    temperature = call.body.get("temperature")
    if isinstance(temperature, bool) or not isinstance(temperature, int | float):
        return True  # unset (1), or a value the upstream will judge: not known to be greedy
    return temperature > 0


def shares_answers(call: Call, policy: SampledPolicy) -> bool:
    """Whether ``call`` may be answered from the cache, coalesced, and its answer stored.

    ``policy`` is ``[cache] sampled``:

    - "share" (the default): every call, sampled or not; a repeat of a
      sampled call gets the same sample back.
    - "seeded": a sampled chat call only when it carries a ``seed`` (its
      sample is meant to be reproducible; the seed is part of the key).
    - "fresh": never a sampled chat call: each caller gets its own upstream
      sample, streamed or not, and none is stored.

    Calls that do not sample (``temperature: 0``, embeddings) always share.
    """
    if policy == "share" or not sampled(call):
        return True
    return policy == "seeded" and call.body.get("seed") is not None


def chat_call(body: Mapping[str, Any]) -> Call:
    """Check a chat completion body and price it in tokens (prompt + answer budget)."""
    model = _model(body)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestError("messages", "expected a non-empty list of message objects")
    for index, message in enumerate(messages):
        # ``type(...) is dict`` first: parsed JSON always is, and the ABC check costs more.
        if not (type(message) is dict or isinstance(message, Mapping)) or not isinstance(
            message.get("role"), str
        ):
            raise RequestError(f"messages[{index}]", "expected an object with a string `role`")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise RequestError("stream", f"expected true or false, got {stream!r}")
    budget = _output_budget(body)
    return Call("chat", CHAT_PATH, body, model, stream, estimate_messages_tokens(messages) + budget)


def embeddings_call(body: Mapping[str, Any]) -> Call:
    """Check an embeddings body and price it in input tokens."""
    model = _model(body)
    texts = _embedding_inputs(body.get("input"))
    return Call("embeddings", EMBEDDINGS_PATH, body, model, False, sum(map(_input_tokens, texts)))


def _model(body: Mapping[str, Any]) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        raise RequestError("model", f"expected a non-empty model name, got {model!r}")
    return model


def _output_budget(body: Mapping[str, Any]) -> int:
    for name in ("max_completion_tokens", "max_tokens"):
        value = body.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise RequestError(name, f"expected a positive integer, got {value!r}")
        return value
    return DEFAULT_OUTPUT_TOKENS


def _embedding_inputs(value: Any) -> list[Any]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value:
        if all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            return [value]  # one input given as token ids
        if all(isinstance(v, str | list) for v in value):
            return value
    raise RequestError("input", "expected a string, a non-empty list of strings, or token id lists")


def _input_tokens(item: str | list[int]) -> int:
    return estimate_tokens(item) if isinstance(item, str) else len(item)
