"""What every HTTP door does with an API call: route it to its adapter, run it, answer it.

The in-process httpx transport and the gateway both hand a request's method,
path, headers and body here and get an :class:`Answer` back: a status, headers
and either a whole body or a :class:`StreamReply` to relay chunk by chunk.
The API family's adapter (:mod:`overdrive.apis`) checks and prices the body;
engine errors become error answers in its shape in one place, so both doors
map them the same way. ``GET …/models`` is the doors' own answer, no API's.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from .._calls import Admission, CacheMode, Call, Result, admission
from .._errors import (
    BudgetExceededError,
    KeyLimitError,
    ModelNotAllowedError,
    QueueFullError,
    QueueTimeoutError,
    RequestError,
    UnknownModelError,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamUnavailableError,
)
from .._json import JSONDecodeError, dumps, loads
from ..apis import CHAT, Api, for_request, named

if TYPE_CHECKING:
    from ..coalesce import StreamReply
    from ._pipeline import Pipeline

__all__ = [
    "MODELS",
    "MODEL_HEADER",
    "PRIORITY_HEADER",
    "QUEUE_TIMEOUT_HEADER",
    "REQUEST_HEADERS",
    "SHOULD_RETRY",
    "Answer",
    "Gate",
    "Kind",
    "answer",
    "cache_control",
    "error_answer",
    "models_payload",
    "route",
]

PRIORITY_HEADER = "x-overdrive-priority"
# The model that served an answer: the one the call named, the model its alias
# stands for, or the fallback that answered (the body's ``model`` is the upstream's own).
MODEL_HEADER = "x-overdrive-model"
QUEUE_TIMEOUT_HEADER = "x-overdrive-queue-timeout"
# The request headers a door reads; a door may pass on only these. ``x-api-key``
# is how the anthropic SDK sends its key (the gateway's keys are taken there too).
REQUEST_HEADERS = frozenset(
    {"authorization", "x-api-key", "cache-control", PRIORITY_HEADER, QUEUE_TIMEOUT_HEADER}
)
_JSON = "application/json"
# An upstream's error reaches the caller only once the engine has retried it as
# configured (and waited out its 429s): this header (the openai and anthropic
# SDKs obey it) keeps the SDK from retrying each of those attempts again.
SHOULD_RETRY = "x-should-retry"
# What a door answers: an API family's adapter, or MODELS (the door's own list).
MODELS = "models"
Kind = Api | str
_log = logging.getLogger("overdrive.gateway")


@dataclass(slots=True)
class Answer:
    """A door's reply: ``body`` when whole, ``stream`` (to relay, then close) when streamed."""

    status: int
    headers: dict[str, str]
    body: bytes = b""
    stream: StreamReply | None = field(default=None)
    # For the access log: the gateway key's name and the model the call named.
    key: str = ""
    model: str = ""
    # What the answer cost in USD (0.0 from the cache, or for a model with no price).
    cost: float = 0.0


class Gate(Protocol):
    """Who a call is made for (a gateway key): their cache namespace and their limits."""

    namespace: str
    # The key's name: its calls' cost and budget are booked under it.
    name: str
    # The highest admission priority this caller may ask for.
    max_priority: int

    def visible(self, models: list[str]) -> list[str]:
        """The ones of ``models`` this caller may use, for ``GET /models``."""
        ...

    async def admit(self, call: Call) -> float:
        """Let the call through (the seconds it waited) or raise why not."""
        ...

    async def settle(self, call: Call, result: Result) -> None:
        """Book what the call really cost once its answer is in."""
        ...


def route(method: str, path: str) -> Kind | None:
    """The adapter of the API call, :data:`MODELS` for ``GET …/models``, None for anything else.

    >>> route("POST", "/v1/embeddings").name, route("GET", "/v1/models")
    ('embeddings', 'models')
    """
    api = for_request(method, path)
    if api is not None:
        return api
    if method == "GET" and path.endswith("/models"):
        return MODELS
    return None


async def answer(
    engine: Pipeline,
    kind: Kind,
    headers: Mapping[str, str],
    body: bytes,
    gate: Gate | None = None,
) -> Answer:
    """Run one call of ``kind`` (see :func:`route`) through ``engine``; errors become answers.

    ``kind`` is an adapter, :data:`MODELS`, or an adapter's name ("chat").
    ``gate``, when given, admits the call first and keeps its cache apart.
    Errors the engine does not know as a caller's or an upstream's fault propagate.
    """
    call: Call | None = None
    api: Api = CHAT  # its error shape until the API is known
    try:
        if kind == MODELS:
            models = engine.models() if gate is None else gate.visible(engine.models())
            return Answer(200, {"content-type": _JSON}, dumps(models_payload(models)))
        api = _named(kind) if isinstance(kind, str) else kind  # errors in its shape from here
        asked = PRIORITY_HEADER in headers or QUEUE_TIMEOUT_HEADER in headers
        cap = gate.max_priority if gate is not None else None
        with _admission_from(headers, cap) if asked else _AS_CONFIGURED:
            call = _call(api, headers, body, gate)
            waited = await gate.admit(call) if gate is not None else 0.0
            if call.stream:
                reply = await engine.open_stream(call)
                content_type = reply.headers.get("content-type", api.stream_type)
                served = reply.model or call.model
                marks = _marks(content_type, reply, served, waited + reply.queued_s)
                if reply.status >= 400:
                    marks[SHOULD_RETRY] = "false"
                return Answer(reply.status, marks, stream=reply, model=call.model)
            result = await engine.request(call)
            if gate is not None:
                await gate.settle(call, result)
            served = result.model or call.model
            marks = _marks(_JSON, result, served, waited + result.queued_s)
            if result.status >= 400:
                marks[SHOULD_RETRY] = "false"  # the engine's retries are spent (see below)
            return Answer(result.status, marks, result.body, model=call.model, cost=result.cost)
    except _REFUSALS as exc:
        refused = _refusal(exc, api)
        refused.model = call.model if call is not None else ""
        return refused


def _named(name: str) -> Api:
    api = named(name)
    if api is None:
        raise ValueError(f"no API family is named {name!r}")  # a door's bug, not the caller's
    return api


# What a caller, a limit or an upstream refused, and the error answer for each.
_REFUSALS = (
    BudgetExceededError,
    KeyLimitError,
    QueueFullError,
    QueueTimeoutError,
    ModelNotAllowedError,
    UnknownModelError,
    RequestError,
    UpstreamError,
)
_AS_CONFIGURED = nullcontext(Admission())


def _refusal(exc: Exception, api: Api) -> Answer:
    if isinstance(exc, KeyLimitError):
        reply = error_answer(429, str(exc), "rate_limit_exceeded", api=api)
        reply.headers["retry-after"] = str(max(1, math.ceil(exc.retry_after)))
        reply.headers["retry-after-ms"] = str(math.ceil(exc.retry_after * 1000))
        return reply
    if isinstance(exc, BudgetExceededError):
        return _budget_refusal(exc, api)
    if isinstance(exc, QueueFullError):
        return error_answer(429, str(exc), "queue_full", api=api)
    if isinstance(exc, QueueTimeoutError):
        reply = error_answer(504, str(exc), "queue_timeout", api=api)
        reply.headers[SHOULD_RETRY] = "false"  # it waited its whole deadline already
        return reply
    if isinstance(exc, ModelNotAllowedError):
        return error_answer(403, str(exc), "model_not_allowed", exc.field, api=api)
    if isinstance(exc, UnknownModelError):
        return error_answer(404, str(exc), "model_not_found", exc.field, api=api)
    if isinstance(exc, RequestError):
        return error_answer(400, str(exc), "invalid_request_error", exc.field, api=api)
    assert isinstance(exc, UpstreamError)
    reply = _upstream_failure(exc, api)
    reply.headers[SHOULD_RETRY] = "false"
    return reply


def _budget_refusal(exc: BudgetExceededError, api: Api) -> Answer:
    """429 until the period renews: retrying sooner cannot help, so SDKs are told not to."""
    reply = error_answer(429, f"{exc}.", "budget_exceeded", api=api)
    reply.headers["retry-after"] = str(max(1, math.ceil(exc.retry_after)))
    reply.headers[SHOULD_RETRY] = "false"
    return reply


def _upstream_failure(exc: UpstreamError, api: Api) -> Answer:
    """502 (504 for a timeout) naming the upstream as configured, never its address.

    The detail (addresses, the transport's own words) goes to the log only:
    a caller learns which upstream failed and how, not where it lives.
    """
    _log.warning("upstream %r failed: %s", exc.upstream, exc)
    if isinstance(exc, UpstreamUnavailableError) and exc.timed_out:
        message = f"The upstream {exc.upstream!r} did not answer in time; retries are spent."
        return error_answer(504, message, "upstream_timeout", api=api)
    what = _FAILURES.get(type(exc), "could not give a usable answer")
    return error_answer(502, f"The upstream {exc.upstream!r} {what}.", "upstream_error", api=api)


_FAILURES: dict[type[UpstreamError], str] = {
    UpstreamUnavailableError: "could not be reached or broke off its answer; retries are spent",
    UpstreamProtocolError: "sent an answer that cannot be used (not the API's shape, or too big)",
}


def cache_control(value: str | None) -> tuple[CacheMode, float | None]:
    """What a request's ``Cache-Control`` asks of the cache: the mode and any ``max-age``.

    >>> cache_control("max-age=60")
    ('default', 60.0)

    Directives other than no-cache, no-store and max-age are ignored.
    """
    if not value:
        return "default", None
    directives: dict[str, str] = {}
    for part in value.split(","):
        name, _, argument = part.strip().partition("=")
        directives[name.lower()] = argument.strip().strip('"')
    mode: CacheMode = "default"
    if "no-store" in directives:
        mode = "no-store"
    elif "no-cache" in directives:
        mode = "no-cache"
    max_age = directives.get("max-age")
    return mode, None if max_age is None else _seconds(max_age)


def _seconds(value: str) -> float:
    if not value.isdigit():
        problem = f"max-age expects a whole number of seconds, got {value!r}"
        raise RequestError("cache-control", problem)
    return float(value)


def _call(api: Api, headers: Mapping[str, str], body: bytes, gate: Gate | None) -> Call:
    call = api.call(_json_body(body))
    mode, max_age = cache_control(headers.get("cache-control"))
    if gate is None:
        if mode == "default" and max_age is None:
            return call  # the common case: no copy
        return dataclasses.replace(call, cache=mode, max_age=max_age)
    return dataclasses.replace(
        call, cache=mode, max_age=max_age, namespace=gate.namespace, key=gate.name
    )


_CACHE_MARKS = {"cache": "HIT", "stale": "STALE", "semantic": "SEMANTIC"}
# A semantic hit's cosine similarity to the cached question whose answer it got.
SIMILARITY_HEADER = "x-overdrive-similarity"


def _marks(
    content_type: str, served: Result | StreamReply, model: str, queued_s: float
) -> dict[str, str]:
    marks = {
        "content-type": content_type,
        "x-overdrive-cache": _CACHE_MARKS.get(served.source, "MISS"),
        "x-overdrive-upstream": served.upstream,
        MODEL_HEADER: model,
        "x-overdrive-queue-ms": f"{queued_s * 1000:.1f}",
    }
    if served.similarity is not None:
        marks[SIMILARITY_HEADER] = f"{served.similarity:.4f}"
    return marks


def _admission_from(
    headers: Mapping[str, str], cap: int | None
) -> AbstractContextManager[Admission]:
    """``admission(...)`` as the request's priority and queue-timeout headers ask.

    A priority above ``cap`` (the caller's ``max_priority``) is lowered to it:
    one tenant may not overtake another's waiting calls by asking.
    """
    priority, timeout = headers.get(PRIORITY_HEADER), headers.get(QUEUE_TIMEOUT_HEADER)
    try:
        level = int(priority) if priority is not None else 0
    except ValueError:
        raise RequestError(PRIORITY_HEADER, f"expected an integer, got {priority!r}") from None
    if cap is not None and level > cap:
        level = cap
    try:
        return admission(level, timeout)
    except RequestError as exc:
        raise RequestError(QUEUE_TIMEOUT_HEADER, exc.problem) from None


def _json_body(raw: bytes) -> dict[str, Any]:
    try:
        body = loads(raw)
    except JSONDecodeError:
        raise RequestError("<body>", "expected a JSON object, got malformed JSON") from None
    if not isinstance(body, dict):
        raise RequestError("<body>", f"expected a JSON object, got {type(body).__name__}")
    return body


def models_payload(models: list[str]) -> dict[str, Any]:
    """The OpenAI ``GET /models`` answer for ``models``."""
    data = [{"id": m, "object": "model", "created": 0, "owned_by": "overdrive"} for m in models]
    return {"object": "list", "data": data}


def error_answer(
    status: int, message: str, kind: str, param: str | None = None, *, api: Api = CHAT
) -> Answer:
    """An error in ``api``'s shape, which its client turns into its errors.

    Before the API is known (an unknown path, a body too large) it is the
    OpenAI shape, the chat API's.

    >>> error = loads(error_answer(404, "No such model.", "model_not_found", "model").body)
    >>> error["error"]["type"], error["error"]["param"]
    ('model_not_found', 'model')
    """
    body = api.error_payload(message, kind, param)
    return Answer(status, {"content-type": _JSON}, dumps(body))
