"""What both HTTP doors do with any request: an API call, a model, or a path no adapter knows.

:func:`respond` is the one entry of the in-process transports (every flavour,
async and sync) and the gateway's fallback. An API call goes to its adapter
(:func:`~overdrive.doors._answer.answer`); ``GET …/models/{id}`` answers from
the configured models; anything else follows ``[doors] unknown_paths``:

* ``"upstream"`` (the default): sent to the upstream serving the body's
  ``model``, or to the only upstream (see ``overdrive._forward``), else 404;
* ``"reject"``: 404 in the OpenAI error shape, naming the path.

Nothing goes to the host the caller's client named: a client made by
``od.http_client()`` reaches only the configured upstreams.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol

from .._json import dumps
from ..apis import shaped_for
from ._answer import Answer, Gate, answer, error_answer, route

if TYPE_CHECKING:
    from ._pipeline import Pipeline

__all__ = [
    "HTTPRequest",
    "Passage",
    "UnknownPaths",
    "model_answer",
    "passage_of",
    "respond",
    "respond_to",
    "unknown_path",
]

UnknownPaths = Literal["upstream", "reject"]
_JSON = {"content-type": "application/json"}


@dataclass(frozen=True, slots=True)
class Passage:
    """One HTTP request as a door received it; ``query`` without its ``?``."""

    method: str
    path: str
    headers: Mapping[str, str]
    body: bytes = b""
    query: str = ""

    @property
    def what(self) -> str:
        """``"GET /v1/files"``: how an error names the request."""
        return f"{self.method} {self.path}"


class _URL(Protocol):
    @property
    def path(self) -> str: ...

    @property
    def query(self) -> bytes: ...


class HTTPRequest(Protocol):
    """What a transport door reads of a request: httpx's and httpx2's agree on it."""

    @property
    def method(self) -> str: ...

    @property
    def url(self) -> _URL: ...

    @property
    def headers(self) -> Mapping[str, str]: ...


def passage_of(request: HTTPRequest, body: bytes) -> Passage:
    """An httpx or httpx2 request as a :class:`Passage`."""
    url = request.url
    return Passage(request.method, url.path, request.headers, body, url.query.decode("ascii"))


async def respond_to(
    engine: Pipeline, request: HTTPRequest, body: bytes, unknown: UnknownPaths
) -> Answer:
    """A transport's answer to an httpx or httpx2 request (an API call, the common case,
    makes no :class:`Passage`)."""
    kind = route(request.method, request.url.path)
    if kind is not None:
        return await answer(engine, kind, request.headers, body)
    return await unknown_path(engine, passage_of(request, body), unknown)


async def respond(
    engine: Pipeline, passage: Passage, unknown: UnknownPaths, gate: Gate | None = None
) -> Answer:
    """The door's answer to ``passage``; errors the engine knows become error answers."""
    kind = route(passage.method, passage.path)
    if kind is not None:
        return await answer(engine, kind, passage.headers, passage.body, gate)
    return await unknown_path(engine, passage, unknown, gate)


async def unknown_path(
    engine: Pipeline, passage: Passage, unknown: UnknownPaths, gate: Gate | None = None
) -> Answer:
    """A request no adapter takes: a model looked up, sent on, or refused as ``unknown`` says."""
    model = _model_id(passage.method, passage.path)
    if model is not None:
        models = engine.models()
        return model_answer(models if gate is None else gate.visible(models), model)
    if unknown == "reject":
        message = (
            f"No API adapter handles {passage.what}; this overdrive is configured "
            '([doors] unknown_paths = "reject") to send nothing else upstream.'
        )
        return error_answer(404, message, "unknown_url", api=shaped_for(passage.path))
    return await engine.forward(passage)


def model_answer(models: list[str], model: str) -> Answer:
    """``GET /models/{model}``: the model's OpenAI object, or 404 when none serves it.

    >>> model_answer(["gpt-x"], "gpt-x").status, model_answer(["gpt-x"], "gpt-y").status
    (200, 404)
    """
    if model not in models:
        message = f"The model {model!r} does not exist here; served: {', '.join(models)}."
        return error_answer(404, message, "model_not_found", "model")
    found = {"id": model, "object": "model", "created": 0, "owned_by": "overdrive"}
    return Answer(200, dict(_JSON), dumps(found))


def _model_id(method: str, path: str) -> str | None:
    if method not in ("GET", "HEAD"):
        return None
    _, models, model = path.rpartition("/models/")
    return model if models and model else None
