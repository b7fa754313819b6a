"""The gateway as a raw ASGI app: the OpenAI routes through the engine, health, metrics.

No framework: one dict lookup routes a request, and the OpenAI calls go
through the same door code as the in-process httpx transport
(:mod:`overdrive.doors._answer`), so both doors behave alike.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from .._asgi import BodyTooLarge, ClientGone, Receive, Scope, Send, read_body
from .._clock import SystemClock
from .._errors import OverdriveError
from .._json import dumps
from .._validate import check_int
from ..apis import CHAT, Api, registered, shaped_for
from ..config import GatewayConfig
from ..dashboard import GET_PATHS, LOGIN_PATH, Dashboard, KeyGate
from ..doors import (
    MODELS,
    REQUEST_HEADERS,
    Answer,
    Kind,
    Passage,
    answer,
    error_answer,
    unknown_path,
)
from ..monitor import CONTENT_TYPE as METRICS_TYPE
from ..monitor import Counter
from ..monitor.names import GATEWAY_REQUESTS
from ..optimize import Sample, analyse
from ..trace import TRACE_HEADERS
from ._access_log import AccessLog
from ._openapi import openapi_document
from ._tenants import Tenant, Tenants

if TYPE_CHECKING:
    from ..coalesce import StreamReply
    from ..config import Config
    from ..engine import Overdrive

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "DOOR_HEADERS",
    "GatewayApp",
    "create_app",
    "log_broken_stream",
]

Handler = Callable[[Mapping[str, str], bytes], Awaitable[Answer]]

DEFAULT_MAX_BODY_BYTES = 8 * 1024 * 1024
_log = logging.getLogger("overdrive.gateway")


class GatewayApp:
    """ASGI app serving the engine as an OpenAI-compatible HTTP API.

    The engine is built from ``config`` (a TOML path, a dict of its shape, a
    ``Config``, or ``$OVERDRIVE_CONFIG`` when None) at ASGI lifespan startup
    and closed at shutdown. Bodies over ``max_body_bytes`` get 413 unread.
    Every GET route answers HEAD too (the head alone).

    ``/health/live`` and ``/health/ready`` are open to anyone (probes).
    ``/metrics`` and ``/openapi.json`` follow ``[gateway] metrics``:

    * ``"keys"`` (the default): with ``[[gateway.keys]]`` configured they need a
      valid key, like the API routes, since the metrics name every key and its
      traffic; without keys anyone may read them, like everything else;
    * ``"public"``: anyone, for a scraper that cannot send a key;
    * ``"off"``: 404, as if they did not exist.

    One access-log line per request goes to the ``overdrive.access`` logger
    as ``[gateway] access_log`` says (:mod:`overdrive.gateway._access_log`).

    >>> app = GatewayApp("overdrive.toml")  # doctest: +SKIP
    >>> uvicorn.run(app, port=8000)  # doctest: +SKIP
    """

    __slots__ = (
        "_access_log",
        "_body_from_config",
        "_config",
        "_counters",
        "_dashboard",
        "_draining",
        "_engine",
        "_gateway",
        "_max_body",
        "_openapi",
        "_routes",
        "_tenants",
    )

    def __init__(
        self,
        config: str | Path | Mapping[str, Any] | Config | None = None,
        *,
        max_body_bytes: int | None = None,
    ) -> None:
        if max_body_bytes is not None:
            check_int("gateway.max_body_bytes", max_body_bytes, 1)
        self._config = config
        # Without an explicit limit, [gateway] max_body_bytes applies once the config is read.
        self._body_from_config = max_body_bytes is None
        self._max_body = max_body_bytes or DEFAULT_MAX_BODY_BYTES
        self._engine: Overdrive | None = None
        self._draining = False
        self._tenants: Tenants | None = None
        # The [gateway] section: its defaults until startup reads the config.
        self._gateway = GatewayConfig()
        self._access_log = AccessLog(self._gateway.access_log)
        self._counters: dict[tuple[str, int], Counter] = {}
        self._openapi = dumps(openapi_document())
        self._dashboard = Dashboard()
        self._routes = self._route_table()

    def _route_table(self) -> dict[str, dict[str, Handler | Kind]]:
        # An API call routes to its adapter: serve() runs it with no handler layer.
        routes: dict[str, dict[str, Handler | Kind]] = {}
        for api in registered():
            routes.setdefault(f"/v1{api.suffix}", {})[api.method] = api
        return routes | {
            "/v1/models": {"GET": MODELS},
            "/health/live": {"GET": self._live},
            "/health/ready": {"GET": self._ready},
            "/metrics": {"GET": self._metrics},
            REPORT_PATH: {"GET": self._report},
            "/openapi.json": {"GET": self._openapi_json},
            # HEAD of its own: a HEAD falling through to GET would open the endless feed.
            **{
                path: {
                    "GET": self._dashboard_route(path),
                    "HEAD": self._dashboard_route(path, "HEAD"),
                }
                for path in GET_PATHS
            },
            LOGIN_PATH: {"POST": self._dashboard_route(LOGIN_PATH, "POST")},
        }

    @property
    def max_body_bytes(self) -> int:
        """The largest request body served; larger ones get 413."""
        return self._max_body

    @property
    def gateway(self) -> GatewayConfig:
        """The ``[gateway]`` section in effect: the config's once started, defaults before.

        :class:`GatewayProtocol` reads its limits here for each connection
        (uvicorn runs the lifespan, so the startup, before it accepts any).
        """
        return self._gateway

    @property
    def access_log(self) -> AccessLog:
        """Where a request's access-log line is written."""
        return self._access_log

    @property
    def engine(self) -> Overdrive | None:
        """The engine once started (by the lifespan or :meth:`startup`), else None."""
        return self._engine

    def drain(self) -> None:
        """A drain has begun: readiness answers 503 from now on, so no new traffic is sent here.

        :class:`GatewayProtocol` calls it as the server starts its graceful
        shutdown; requests still in flight are answered as usual.
        """
        self._draining = True

    @property
    def draining(self) -> bool:
        return self._draining

    async def startup(self) -> None:
        """Build the engine from the config; the lifespan calls this."""
        from ..engine import Overdrive

        if self._engine is None:
            self._draining = False
            engine = Overdrive.from_config(self._config)
            self._tenants = Tenants(engine.config, SystemClock())
            self._counters.clear()  # series of an earlier engine, if restarted
            self._engine = engine
            self._gateway = engine.config.gateway
            self._access_log = AccessLog(self._gateway.access_log)
            if self._body_from_config:
                self._max_body = engine.config.gateway.max_body_bytes

    async def shutdown(self) -> None:
        """Close the engine; the lifespan calls this."""
        engine, self._engine = self._engine, None
        tenants, self._tenants = self._tenants, None
        if tenants is not None:
            await tenants.aclose()
        if engine is not None:
            await engine.aclose()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._dispatch(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await self._lifespan_step(self.startup, "startup", send)
            elif message["type"] == "lifespan.shutdown":
                await self._lifespan_step(self.shutdown, "shutdown", send)
                return

    async def _lifespan_step(
        self, step: Callable[[], Awaitable[None]], name: str, send: Send
    ) -> None:
        try:
            await step()
        except Exception as exc:
            _log.exception("gateway %s failed", name)
            await send({"type": f"lifespan.{name}.failed", "message": str(exc)})
        else:
            await send({"type": f"lifespan.{name}.complete"})

    async def _dispatch(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            body = await read_body(scope, receive, self._max_body)
        except BodyTooLarge:
            return await _respond(send, self.too_large(scope["path"]))
        except ClientGone:
            return
        started = time.perf_counter()
        method, path = scope["method"], scope["path"]
        reply = await self.serve(method, path, _headers(scope), body)
        if reply.stream is None:
            await _respond(send, reply)
        else:
            await _relay(reply, reply.stream, receive, send)
        total_s = time.perf_counter() - started
        self._access_log.record(method, path, reply.status, reply, total_s)

    async def serve(
        self, method: str, path: str, headers: Mapping[str, str], body: bytes
    ) -> Answer:
        """Answer one request whatever carries it (ASGI, or :class:`GatewayProtocol`).

        ``headers`` holds at least the ones the door reads (lower-case names).
        A streamed answer's ``stream`` must be relayed, then closed, by the caller.
        Nothing raises: a bug is logged and answers 500.
        """
        methods = self._routes.get(path)
        if methods is None:
            return await self._unknown(Passage(method, path, headers, body))
        handler = methods.get(method)
        if handler is None and method == "HEAD":
            handler = methods.get("GET")  # the server leaves the body out
        if handler is None:
            return _not_allowed(method, path, methods)
        try:
            if isinstance(handler, (Api, str)):
                return await self._call(handler, headers, body)
            return await handler(headers, body)
        except Exception:
            # A bug, not the caller's fault: log it, answer, keep serving.
            _log.exception("gateway: %s %s failed", method, path)
            return error_answer(500, "Internal server error.", "server_error")

    def too_large(self, path: str) -> Answer:
        """The 413 for a body over ``max_body_bytes``, in the shape of the API under ``path``."""
        limit = self._max_body
        message = f"The request body is larger than the {limit} bytes this server accepts."
        return error_answer(413, message, "request_too_large", api=shaped_for(path))

    # --- the OpenAI routes ------------------------------------------------------

    async def _call(self, kind: Kind, headers: Mapping[str, str], body: bytes) -> Answer:
        engine, tenants = self._engine, self._tenants
        if engine is None or tenants is None:
            return _not_ready()
        tenant = tenants.find(headers) if tenants.required else None
        if tenants.required and tenant is None:
            reply = _unauthorized(headers, kind if isinstance(kind, Api) else CHAT)
        else:
            work = answer(engine, kind, headers, body, tenant)
            tracer = engine.tracer  # continues the caller's traceparent, if it sent one
            reply = await (work if tracer is None else tracer.serving(work, headers))
            if tenant is not None:
                reply.key = tenant.name
        self._count(engine, tenant, reply.status)
        return reply

    async def _unknown(self, passage: Passage) -> Answer:
        """A path no route takes: a model looked up, or as ``[doors] unknown_paths`` says."""
        engine, tenants = self._engine, self._tenants
        if engine is None or tenants is None:
            return _not_ready()
        tenant = tenants.find(passage.headers) if tenants.required else None
        if tenants.required and tenant is None:
            reply = _unauthorized(passage.headers)
        else:
            policy = engine.config.doors.unknown_paths
            try:
                reply = await unknown_path(engine, passage, policy, tenant)
            except Exception:
                _log.exception("gateway: %s failed", passage.what)
                reply = error_answer(500, "Internal server error.", "server_error")
            if tenant is not None:
                reply.key = tenant.name
        self._count(engine, tenant, reply.status)
        return reply

    def _count(self, engine: Overdrive, tenant: Tenant | None, status: int) -> None:
        key = tenant.name if tenant is not None else ""
        counter = self._counters.get((key, status))
        if counter is None:  # looked up once per key and status: a lookup hashes the labels
            counter = self._counters[key, status] = engine.metrics.counter(
                GATEWAY_REQUESTS, key=key, code=str(status)
            )
        counter.inc()

    # --- health, metrics, the API description ----------------------------------

    async def _live(self, headers: Mapping[str, str], body: bytes) -> Answer:
        return Answer(200, _JSON_HEADERS, b'{"status":"live"}')

    async def _ready(self, headers: Mapping[str, str], body: bytes) -> Answer:
        engine = self._engine
        if engine is None:
            return _not_ready()
        if self._draining:
            return Answer(503, _JSON_HEADERS, b'{"status":"draining"}')
        health: dict[str, dict[str, Any]] = engine.stats()["health"]
        serving = sorted(name for name, h in health.items() if h["state"] != "ejected")
        status = 200 if serving else 503
        body_json = {"status": "ready" if serving else "unavailable", "upstreams": serving}
        return Answer(status, _JSON_HEADERS, dumps(body_json))

    async def _metrics(self, headers: Mapping[str, str], body: bytes) -> Answer:
        refused = self._operator_refusal("/metrics", headers)
        if refused is not None:
            return refused
        engine = self._engine
        if engine is None:
            return _not_ready()
        return Answer(200, {"content-type": METRICS_TYPE}, engine.metrics_text().encode())

    async def _report(self, headers: Mapping[str, str], body: bytes) -> Answer:
        """Where this gateway's time went (``overdrive report --url``), and the figures it read."""
        refused = self._operator_refusal(REPORT_PATH, headers)
        if refused is not None:
            return refused
        engine = self._engine
        if engine is None:
            return _not_ready()
        sample = Sample.from_metrics(engine.metrics, engine.stats())
        report = {"analysis": analyse(sample).to_dict(), "sample": sample.to_dict()}
        return Answer(200, _JSON_HEADERS, dumps(report))

    async def _openapi_json(self, headers: Mapping[str, str], body: bytes) -> Answer:
        refused = self._operator_refusal("/openapi.json", headers)
        return refused if refused is not None else Answer(200, _JSON_HEADERS, self._openapi)

    def _dashboard_route(self, path: str, method: str = "GET") -> Handler:
        """The handler of a dashboard route: ``[gateway] metrics`` decides who may see it.

        Under "keys" with keys configured, a key or the session cookie the key
        form sets (see :mod:`overdrive.dashboard._gate`); "public": anyone; "off": 404.
        """

        async def handle(headers: Mapping[str, str], body: bytes) -> Answer:
            engine, tenants = self._engine, self._tenants
            if engine is None or tenants is None:
                return _not_ready()
            policy = self._gateway.metrics
            if policy == "off":
                return _unknown_url(path)
            gate = None
            if policy == "keys" and tenants.required:
                gate = KeyGate(tenants, {k.name: k.digest() for k in self._gateway.keys})
            # A draining gateway ends its live feeds: they would hold the drain forever.
            return await self._dashboard.answer(
                engine, method, path, headers, body, gate=gate, ended=lambda: self._draining
            )

        return handle

    def _operator_refusal(self, path: str, headers: Mapping[str, str]) -> Answer | None:
        """The answer ``[gateway] metrics`` gives instead of ``path``, or None to serve it."""
        policy = self._gateway.metrics
        if policy == "off":
            return _unknown_url(path)
        tenants = self._tenants
        if policy == "keys" and tenants is not None and tenants.required:
            return None if tenants.find(headers) is not None else _unauthorized(headers)
        return None

    def __repr__(self) -> str:
        state = "started" if self._engine is not None else "stopped"
        return f"GatewayApp({state}, max_body_bytes={self._max_body}, engine={self._engine!r})"


_JSON_HEADERS = {"content-type": "application/json"}
# Where the gateway reports on itself (`overdrive report --url`): an operator route.
REPORT_PATH = "/v1/overdrive/report"


async def _respond(send: Send, reply: Answer) -> None:
    headers = [(k.encode(), v.encode()) for k, v in reply.headers.items()]
    headers.append((b"content-length", b"%d" % len(reply.body)))
    await send({"type": "http.response.start", "status": reply.status, "headers": headers})
    await send({"type": "http.response.body", "body": reply.body})


async def _relay(reply: Answer, stream: StreamReply, receive: Receive, send: Send) -> None:
    """Pass the streamed body on chunk by chunk until it ends or the client hangs up."""
    headers = [(k.encode(), v.encode()) for k, v in reply.headers.items()]
    headers.append((b"cache-control", b"no-cache"))
    pump = asyncio.ensure_future(_pump(stream, headers, reply.status, send))
    gone = asyncio.ensure_future(_disconnected(receive))
    try:
        await asyncio.wait((pump, gone), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (pump, gone):
            task.cancel()
        try:
            await asyncio.gather(pump, gone, return_exceptions=True)
        finally:
            await stream.aclose()  # leaves the shared upstream stream to any other readers


async def _pump(
    stream: StreamReply, headers: list[tuple[bytes, bytes]], status: int, send: Send
) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})
    try:
        async for chunk in stream:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
    except Exception as exc:
        # The status is sent; all that is left is to end the body where it broke.
        log_broken_stream(exc)
    await send({"type": "http.response.body", "body": b""})


def log_broken_stream(exc: Exception) -> None:
    """One line for a stream cut for a known reason; a traceback for anything else (a bug)."""
    if isinstance(exc, OverdriveError | httpx.TransportError):
        _log.warning("gateway: a streamed answer was cut off: %s", exc)
    else:
        _log.exception("gateway: the upstream stream broke off")


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


# The request headers the door reads, as the server hands them over (lower-case bytes);
# and the cookie, for the dashboard's session (a browser's EventSource sends no key).
DOOR_HEADERS = frozenset(name.encode() for name in REQUEST_HEADERS | {"cookie"} | TRACE_HEADERS)


def _headers(scope: Scope) -> dict[str, str]:
    """The request headers the door reads (decoding every header costs per request)."""
    wanted = DOOR_HEADERS
    return {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"] if k in wanted}


def _unknown_url(path: str) -> Answer:
    return error_answer(404, f"Unknown request URL: {path}", "unknown_url", api=shaped_for(path))


def _not_allowed(method: str, path: str, methods: Mapping[str, Handler | Kind]) -> Answer:
    allow = ", ".join(sorted({*methods, "HEAD"} if "GET" in methods else methods))
    # In the shape of the API the path belongs to (Anthropic's for the Messages routes).
    api = next((kind for kind in methods.values() if isinstance(kind, Api)), CHAT)
    message = f"Method {method} is not allowed on {path}; use {allow}."
    reply = error_answer(405, message, "method_not_allowed", api=api)
    reply.headers["allow"] = allow
    return reply


def _unauthorized(headers: Mapping[str, str], api: Api = CHAT) -> Answer:
    """The 401, in the shape of the API asked (Anthropic's for the Messages routes)."""
    # The key itself is never echoed back, nor logged.
    given = "authorization" in headers or "x-api-key" in headers
    problem = "a key this gateway does not know" if given else "no key"
    message = (
        f"The request carries {problem}. Send `Authorization: Bearer <key>` "
        "or `x-api-key: <key>` with a key from the gateway's [[gateway.keys]]."
    )
    reply = error_answer(401, message, "invalid_api_key", api=api)
    reply.headers["www-authenticate"] = "Bearer"
    return reply


def _not_ready() -> Answer:
    return error_answer(503, "The gateway's engine is not started.", "not_ready")


def create_app() -> GatewayApp:
    """The app for ``uvicorn --factory`` (and each worker): config from ``$OVERDRIVE_CONFIG``.

    This process is the gateway's own, so it may tune the garbage collector:
    what exists at start-up (modules, config) is moved out of its reach, and
    young collections run less often. Requests make short-lived containers in
    the thousands per second, and each collection would walk them again.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*_GC_THRESHOLDS)
    return GatewayApp()


_GC_THRESHOLDS = (50_000, 20, 100)
