"""A finished call's span attributes, after the OpenTelemetry GenAI semantic conventions.

``gen_ai.*`` for what the conventions name, ``overdrive.*`` for the pipeline's
own (the cache's verdict, the upstream, the admission wait, the cost). Read
once per sampled call, when it ends; message content only with
``capture_content`` (the conventions make it opt-in).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .._json import JSONDecodeError, dumps, loads
from ._span import CallSpan

__all__ = ["Attributes", "attributes", "error_type", "operation"]

Attributes = dict[str, str | int | float | bool]

# overdrive's op (its API family's name) -> gen_ai.operation.name.
_OPERATIONS = {"chat": "chat", "embeddings": "embeddings", "responses": "chat", "messages": "chat"}
# Request fields the conventions name, and their attribute.
_REQUEST_FIELDS = {
    "max_tokens": "gen_ai.request.max_tokens",
    "max_completion_tokens": "gen_ai.request.max_tokens",
    "max_output_tokens": "gen_ai.request.max_tokens",
    "temperature": "gen_ai.request.temperature",
    "top_p": "gen_ai.request.top_p",
}
# A captured message attribute is cut here: an attribute is a bounded buffer too.
MAX_CONTENT_CHARS = 16_384


def operation(op: str) -> str:
    """``gen_ai.operation.name`` for an overdrive op.

    >>> operation("messages"), operation("embeddings"), operation("count_tokens")
    ('chat', 'embeddings', 'count_tokens')
    """
    return _OPERATIONS.get(op, op)


def attributes(span: CallSpan, hosts: Mapping[str, str], capture: bool) -> Attributes:
    """Every attribute of ``span``'s call; ``hosts`` maps an upstream to its host."""
    call = span.call
    found: Attributes = {
        "gen_ai.operation.name": operation(call.op),
        "gen_ai.request.model": call.model,
        "gen_ai.provider.name": call.api.upstream_api,
        "overdrive.op": call.op,
        "overdrive.cache": span.cache,
        "overdrive.attempts": span.attempts,
    }
    _request_fields(call.body, found)
    if span.similarity is not None:
        found["overdrive.semantic.similarity"] = span.similarity
    if span.result is not None:
        _result(span, found, capture)
    elif span.reply is not None:
        _reply(span, found)
    upstream = found.get("overdrive.upstream")
    if isinstance(upstream, str) and upstream in hosts:
        found["server.address"] = hosts[upstream]
    if capture:
        _content(call.body.get("messages", call.body.get("input")), "input", found)
    return found


def error_type(span: CallSpan) -> str | None:
    """``error.type``: the exception's class, or the status of an error answer."""
    if span.error is not None:
        return type(span.error).__qualname__
    status = _status(span)
    return str(status) if status is not None and status >= 400 else None


def _status(span: CallSpan) -> int | None:
    if span.result is not None:
        return span.result.status
    return None if span.reply is None else span.reply.status


def _request_fields(body: Mapping[str, Any], found: Attributes) -> None:
    for field, name in _REQUEST_FIELDS.items():
        value = body.get(field)
        if isinstance(value, int | float) and not isinstance(value, bool):
            found[name] = value


def _result(span: CallSpan, found: Attributes, capture: bool) -> None:
    """What the answer says: its model, id and usage (only an upstream answer spent tokens)."""
    result = span.result
    assert result is not None
    found["overdrive.upstream"] = result.upstream
    found["overdrive.status_code"] = result.status
    found["overdrive.queue_wait_s"] = result.queued_s
    found["gen_ai.response.model"] = result.model or span.call.model
    # A call that joined another spent nothing: the first caller's answer and tokens.
    spent = result.source == "upstream" and span.cache != "coalesced"
    if result.cost and spent:
        found["overdrive.cost_usd"] = result.cost
    if not result.ok:
        return
    payload = _payload(result.body)
    model, answer_id = payload.get("model"), payload.get("id")
    if isinstance(model, str):
        found["gen_ai.response.model"] = model
    if isinstance(answer_id, str):
        found["gen_ai.response.id"] = answer_id
    usage = span.call.api.usage(payload) if spent else None
    if usage is not None:
        found["gen_ai.usage.input_tokens"], found["gen_ai.usage.output_tokens"] = usage
    if capture:
        answer = payload.get("choices", payload.get("content", payload.get("output")))
        _content(answer, "output", found)


def _reply(span: CallSpan, found: Attributes) -> None:
    """A stream's attributes at its first byte (its usage comes later, unseen here)."""
    reply = span.reply
    assert reply is not None
    found["overdrive.stream"] = True
    found["overdrive.upstream"] = reply.upstream
    found["overdrive.status_code"] = reply.status
    found["overdrive.queue_wait_s"] = reply.queued_s
    found["gen_ai.response.model"] = reply.model or span.call.model


def _payload(body: bytes) -> dict[str, Any]:
    try:
        parsed = loads(body)
    except JSONDecodeError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _content(value: Any, side: str, found: Attributes) -> None:
    if value is not None:
        found[f"gen_ai.{side}.messages"] = dumps(value).decode()[:MAX_CONTENT_CHARS]
