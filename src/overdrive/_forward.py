"""Requests no adapter knows, sent on to a configured upstream (``[doors] unknown_paths``).

A path the API adapters do not know (``POST /v1/completions``,
``GET /v1/files``, ``GET /v1/responses/{id}``) goes to the upstream serving the
body's ``model``, or to the only upstream when there is one; never to the
host the caller's client named. It is paced by that upstream's rate limit
(one request, no tokens priced) and concurrency, measured under the op
``passthrough``, read within the upstream's answer bounds, never cached,
never retried (the method may not be idempotent), and sent with the
upstream's own key, not the caller's.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Mapping, Sequence

import httpx

from ._clock import Clock
from ._errors import OverdriveError
from ._json import JSONDecodeError, loads
from .apis import shaped_for
from .doors import Answer, Passage, error_answer
from .monitor import OpMeterBook
from .upstream import Upstream, auth_headers, read_within

__all__ = ["Forwarder"]

OP = "passthrough"
# The caller's headers an upstream may need to serve the request; never its key.
_SENT_ON = frozenset({"accept", "content-type", "idempotency-key", "openai-beta", "anthropic-beta"})
# The upstream's headers worth handing back.
_HANDED_BACK = frozenset({"content-type", "retry-after", "retry-after-ms"})


class Forwarder:
    """Sends a :class:`~overdrive.doors.Passage` to the upstream that serves it."""

    __slots__ = ("_clients", "_clock", "_meters", "_upstreams")

    def __init__(self, upstreams: Sequence[Upstream], meters: OpMeterBook, clock: Clock) -> None:
        self._upstreams = list(upstreams)
        self._meters = meters
        self._clock = clock
        self._clients: dict[str, httpx.AsyncClient] = {}  # by upstream, made on first use

    def upstream_for(self, model: str | None) -> Upstream | None:
        """The first upstream serving ``model``; the only one when none is named."""
        if model is not None:
            return next((u for u in self._upstreams if model in u.models), None)
        return self._upstreams[0] if len(self._upstreams) == 1 else None

    async def forward(self, passage: Passage) -> Answer:
        if _relative(passage.path) is None:
            message = f"The path of {passage.what!r} cannot be sent on: not a plain URL path."
            return error_answer(400, message, "invalid_request_error", api=shaped_for(passage.path))
        model = _model_of(passage.body)
        upstream = self.upstream_for(model)
        if upstream is None:
            return _nowhere(passage, model)
        meters = self._meters.of(OP)
        meters.requests.inc()
        started = self._clock.now()
        try:
            return await self._send(upstream, model, passage)
        finally:
            meters.duration.observe(self._clock.now() - started)

    async def _send(self, upstream: Upstream, model: str | None, passage: Passage) -> Answer:
        waiting = self._clock.now()
        queued = await upstream.queue(model or "").admit(1, 0)
        permit = await upstream.concurrency.acquire()
        sent = self._clock.now()
        meters = self._meters.of(OP)
        meters.queue_wait(upstream.name).observe(sent - waiting)
        answered = False
        try:
            status, headers, body = await self._exchange(upstream, passage)
            answered = True
        except httpx.InvalidURL:  # a query string httpx will not send
            message = f"The query of {passage.what!r} cannot be sent on: not a plain URL query."
            return error_answer(400, message, "invalid_request_error", api=shaped_for(passage.path))
        except (httpx.HTTPError, OverdriveError) as exc:
            failure = type(exc).__name__
            message = f"The upstream {upstream.name!r} failed on {passage.what}: {failure}."
            return error_answer(502, message, "upstream_error", api=shaped_for(passage.path))
        finally:
            permit.release("ok" if answered else "ignored")
        meters.upstream_duration(upstream.name).observe(self._clock.now() - sent)
        headers |= {"x-overdrive-upstream": upstream.name, "x-overdrive-cache": "MISS"}
        headers["x-overdrive-queue-ms"] = f"{queued * 1000:.1f}"
        return Answer(status, headers, body, model=model or "")

    async def _exchange(
        self, upstream: Upstream, passage: Passage
    ) -> tuple[int, dict[str, str], bytes]:
        target = _relative(passage.path) or ""
        request = self._client(upstream).build_request(
            passage.method,
            f"{target}?{passage.query}" if passage.query else target,
            headers=_sent_on(passage.headers, passage.body),
            content=passage.body or None,
        )
        response = await self._client(upstream).send(request, stream=True)
        try:
            body = await read_within(response, upstream.bounds)
        finally:
            await response.aclose()
        kept = {k: v for k, v in response.headers.items() if k in _HANDED_BACK}
        return response.status_code, kept, body

    def _client(self, upstream: Upstream) -> httpx.AsyncClient:
        client = self._clients.get(upstream.name)
        if client is None:
            config = upstream.config
            client = self._clients[upstream.name] = httpx.AsyncClient(
                base_url=config.base_url,
                headers=auth_headers(config),
                timeout=httpx.Timeout(config.timeout, connect=min(config.timeout, 10.0)),
                limits=httpx.Limits(max_connections=config.max_concurrency),
            )
        return client

    async def aclose(self) -> None:
        """Close the clients (their connections); new ones are made if used again."""
        clients, self._clients = self._clients, {}
        for client in clients.values():
            with contextlib.suppress(RuntimeError):  # made on a loop that is closed now
                await client.aclose()

    def __repr__(self) -> str:
        return (
            f"Forwarder(upstreams={[u.name for u in self._upstreams]}, open={len(self._clients)})"
        )


def _model_of(body: bytes) -> str | None:
    """The ``model`` a JSON body names, if it is a JSON object naming one."""
    if not body.lstrip().startswith(b"{"):
        return None
    try:
        parsed = loads(body)
    except JSONDecodeError:
        return None
    model = parsed.get("model") if isinstance(parsed, dict) else None
    return model if isinstance(model, str) else None


@functools.lru_cache(maxsize=256)
def _relative(path: str) -> str | None:
    """The path after the API version the client named, relative to an upstream's base URL.

    None for a path that is not plain: control or non-ASCII characters, or a
    ``.``/``..`` segment (which could climb out of the base URL's path).

    >>> _relative("/v1/models/gpt-x"), _relative("/openai/v1/files"), _relative("/health")
    ('models/gpt-x', 'files', 'health')
    >>> _relative("/v1/../admin") is None
    True
    """
    _, version, rest = path.partition("/v1/")
    rest = rest if version else path.lstrip("/")
    plain = rest.isascii() and rest.isprintable() and " " not in rest
    if not plain or any(segment in (".", "..") for segment in rest.split("/")):
        return None
    return rest


def _sent_on(headers: Mapping[str, str], body: bytes) -> dict[str, str]:
    sent = {k: v for k, v in headers.items() if k.lower() in _SENT_ON}
    if body and not any(k.lower() == "content-type" for k in sent):
        sent["content-type"] = "application/json"
    return sent


def _nowhere(passage: Passage, model: str | None) -> Answer:
    why = (
        f"no configured upstream serves the model {model!r}"
        if model is not None
        else "the request names no model and more than one upstream is configured"
    )
    message = (
        f"No API adapter handles {passage.what}, and {why}; "
        "overdrive sends unknown paths only to its configured upstreams."
    )
    return error_answer(404, message, "unknown_url", api=shaped_for(passage.path))
