"""The simulated upstream as a raw ASGI app: OpenAI routes, latency, limits, faults.

No framework: one dict lookup routes a request, responses reuse prebuilt
headers, and nothing allocates per request beyond the answer itself, so one
process holds thousands of requests per second on loopback.

Each API's request parsing and answers live in modules of their own
(``_requests.py``, ``_answers.py``, ``_responses.py``, ``_messages.py``); what
stays here is one class on purpose: every route draws from the same latency
stream, rate buckets, faults and counters, in an order the seeds reproduce.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import random
import secrets
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from overdrive._asgi import (
    BodyTooLarge,
    ClientGone,
    Receive,
    Scope,
    Send,
    header,
    read_body,
)
from overdrive._clock import Clock, SystemClock
from overdrive._errors import ConfigError
from overdrive._json import JSONDecodeError, dumps, loads
from overdrive.sim._answers import ChatAnswer, embeddings_body, models_body, rate_limit_message
from overdrive.sim._call import SimCall
from overdrive.sim._capacity import Accelerator
from overdrive.sim._config import Faults, SimConfig
from overdrive.sim._limits import RateLimiter
from overdrive.sim._messages import (
    MessagesAnswer,
    PromptCache,
    anthropic_errors,
    as_anthropic,
    count_tokens_body,
    limit_headers,
    parse_count_tokens,
    parse_messages,
)
from overdrive.sim._messages import authorize as authorize_api_key
from overdrive.sim._prefix_cache import Prefill, PrefixCache
from overdrive.sim._requests import (
    ApiError,
    invalid,
    parse_chat,
    parse_embeddings,
)
from overdrive.sim._responses import ResponsesAnswer, parse_responses
from overdrive.sim._stats import SimStats

__all__ = ["SimApp"]

Handler = Callable[[Scope, Receive, Send], Awaitable[None]]


class EventAnswer(Protocol):
    """An answer streamed as typed events (Responses, Messages): how it opens, goes on, ends."""

    def opening(self) -> bytes: ...

    def deltas(self) -> list[bytes]: ...

    def closing(self) -> bytes: ...

    def error_event(self, error: ApiError) -> bytes: ...


ASGIApp = Handler
Headers = list[tuple[bytes, bytes]]

_JSON_TYPE = (b"content-type", b"application/json")
_SSE_HEADERS: Headers = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
_DONE = b"data: [DONE]\n\n"
_DEFAULT_MODELS = ("gpt-4o-mini", "gpt-4o", "text-embedding-3-small", "text-embedding-3-large")
_FAULT_FIELDS = frozenset(("error_rate", "hang_rate", "slow_factor"))


class SimApp:
    """ASGI app simulating an OpenAI-compatible upstream.

    Serve it with any ASGI server (:class:`SimServer` runs it on uvicorn) or
    call it in-process through ``httpx.ASGITransport``. ``clock`` drives the
    rate buckets and every simulated delay, so tests can step a ``FakeClock``.
    With ``capacity`` set, chat completions share an :class:`Accelerator`
    that slows them all down past the knee. With ``prefix_cache_tokens`` set,
    chat completions and Responses calls share one :class:`PrefixCache`: the
    deployment's automatic prompt prefix cache.

    >>> app = SimApp(SimConfig(rpm=60))
    >>> app.stats()["in_flight"]
    0
    """

    __slots__ = (
        "_accelerator",
        "_auth",
        "_clock",
        "_closed",
        "_closing",
        "_config",
        "_fault_rng",
        "_faults",
        "_jitter_rng",
        "_limiter",
        "_models",
        "_models_body",
        "_prefill_free_at",
        "_prefix_cache",
        "_prompt_cache",
        "_routes",
        "_stats",
    )

    def __init__(self, config: SimConfig | None = None, *, clock: Clock | None = None) -> None:
        self._config = config = config or SimConfig()
        self._clock = clock = clock or SystemClock()
        self._stats = SimStats()
        self._faults = Faults(config.error_rate, config.hang_rate, config.slow_factor)
        # Separate streams so turning faults on does not shift the latency draws.
        self._jitter_rng = random.Random(f"jitter:{config.seed}")
        self._fault_rng = random.Random(f"faults:{config.seed}")
        self._limiter = _limiter(config, clock)
        self._accelerator = (
            None
            if config.capacity is None
            else Accelerator(config.capacity, config.overload_exponent, clock)
        )
        self._models = frozenset(config.models) if config.models else None
        self._models_body = models_body(config.models or _DEFAULT_MODELS)
        self._auth = f"Bearer {config.api_key}".encode() if config.api_key else None
        self._prompt_cache = PromptCache()  # the prompt prefixes Messages calls cached
        self._prefix_cache = _prefix_cache(config)  # the automatic one, for OpenAI's APIs
        self._prefill_free_at = 0.0  # with prefill_shared: when the prompts taken are read
        self._routes = self._route_table()
        self._closed = False
        self._closing: asyncio.Future[None] | None = None

    def _route_table(self) -> dict[str, dict[str, Handler]]:
        return {
            "/v1/chat/completions": {"POST": self._chat},
            "/v1/embeddings": {"POST": self._embeddings},
            "/v1/messages": {"POST": self._messages},
            "/v1/messages/count_tokens": {"POST": self._count_message_tokens},
            "/v1/responses": {"POST": self._responses},
            "/v1/models": {"GET": self._list_models},
            "/stats": {"GET": self._get_stats},
            "/sim/reset": {"POST": self._post_reset},
            "/sim/faults": {"GET": self._get_faults, "POST": self._post_faults},
        }

    @property
    def config(self) -> SimConfig:
        return self._config

    @property
    def faults(self) -> dict[str, float]:
        """The fault knobs in force: ``error_rate``, ``hang_rate``, ``slow_factor``."""
        return self._faults.as_dict()

    def stats(self) -> dict[str, Any]:
        """The counters served at ``GET /stats``."""
        return self._stats.snapshot()

    def reset(self) -> None:
        """Zero the counters, refill the rate buckets and forget the cached prompts."""
        self._stats.reset()
        self._prefill_free_at = 0.0
        self._prompt_cache.clear()
        if self._prefix_cache is not None:
            self._prefix_cache.clear()
        if self._limiter is not None:
            self._limiter.fill()

    def set_faults(
        self,
        error_rate: float | None = None,
        hang_rate: float | None = None,
        slow_factor: float | None = None,
    ) -> dict[str, float]:
        """Change the fault knobs given (``ConfigError`` if out of range); return all three."""
        now = self._faults
        self._faults = Faults(
            now.error_rate if error_rate is None else error_rate,
            now.hang_rate if hang_rate is None else hang_rate,
            now.slow_factor if slow_factor is None else slow_factor,
        )
        return self._faults.as_dict()

    def close(self) -> None:
        """End every simulated wait now, for shutdown: waiting calls answer 503 and
        open streams end early, so a server stops without sitting out ``hang_s``.
        """
        self._closed = True
        if self._closing is not None and not self._closing.done():
            self._closing.set_result(None)

    def _call(self, receive: Receive) -> SimCall:
        return SimCall(receive, self._stats, self._clock, self._accelerator, self._closing_signal)

    def _closing_signal(self) -> asyncio.Future[None]:
        """A future done once :meth:`close` is called, on the running loop."""
        loop = asyncio.get_running_loop()
        if self._closing is None or self._closing.get_loop() is not loop:
            self._closing = loop.create_future()
            if self._closed:
                self._closing.set_result(None)
        return self._closing

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._dispatch(scope, receive, send)
        elif scope["type"] == "lifespan":
            await _lifespan(receive, send)

    async def _dispatch(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        methods = self._routes.get(path)
        # Unknown paths share one counter: junk URLs must not grow the stats.
        self._stats.count_request(path if methods is not None else "other")
        try:
            if methods is None:
                raise _unknown_url(path)
            handler = methods.get(scope["method"])
            if handler is None:
                raise _not_allowed(scope["method"], path, methods)
            await handler(scope, receive, send)
        except ApiError as error:
            await self._respond(send, error.status, error.body(), error.headers)
        except ClientGone:
            pass

    async def _respond(self, send: Send, status: int, body: bytes, extra: Headers) -> None:
        self._stats.count_response(status)
        headers = [_JSON_TYPE, (b"content-length", b"%d" % len(body)), *extra]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    # --- /v1/chat/completions -------------------------------------------------

    async def _chat(self, scope: Scope, receive: Receive, send: Send) -> None:
        with self._call(receive) as call:
            self._authorize(scope)
            request = parse_chat(await self._read_json(scope, receive), self._models)
            answer = ChatAnswer(request, request.max_tokens or self._config.default_max_tokens)
            headers = self._admit(request.prompt_tokens + (request.max_tokens or answer.tokens))
            await self._inject_faults(call)
            prefill = self._prefill(answer)
            if request.stream:
                await self._stream(send, call, answer, headers, prefill)
            else:
                await self._complete(send, call, answer, headers, prefill)

    async def _complete(
        self, send: Send, call: SimCall, answer: ChatAnswer, headers: Headers, prefill: Prefill
    ) -> None:
        await self._generate(call, prefill, answer.tokens)
        self._count_tokens(answer, prefill)
        await self._respond(send, 200, answer.completion(), headers)

    async def _stream(
        self, send: Send, call: SimCall, answer: ChatAnswer, headers: Headers, prefill: Prefill
    ) -> None:
        # Headers go out at once, as real upstreams do; tokens follow at their pace.
        self._stats.count_response(200)
        start = {"type": "http.response.start", "status": 200, "headers": _SSE_HEADERS + headers}
        await send(start)
        try:
            with self._generating():
                await self._stream_tokens(send, call, answer, prefill)
        except ApiError:  # shutting down: the status is sent, so just end the body
            await send({"type": "http.response.body", "body": b""})
            return
        await _event(send, answer.chunk({}, answer.finish_reason))
        if answer.request.include_usage:
            await _event(send, answer.usage_chunk())
        self._count_tokens(answer, prefill)
        await send({"type": "http.response.body", "body": _DONE})

    async def _stream_tokens(
        self, send: Send, call: SimCall, answer: ChatAnswer, prefill: Prefill
    ) -> None:
        ttft, pace = self._ttft(prefill), self._decode_pace()  # drawn in _generate's order
        await call.pause(ttft, shared=True)
        prefill.done()
        first, *rest = answer.deltas()  # the role (or the tool call's head), then a token each
        await _event(send, answer.chunk(first, None))
        for delta in rest:
            await call.pause(pace, shared=True)
            await _event(send, answer.chunk(delta, None))

    async def _generate(self, call: SimCall, prefill: Prefill, tokens: int) -> None:
        """Wait out a whole answer, sent at its end: the prompt's prefill, then ``tokens``."""
        ttft, pace = self._ttft(prefill), self._decode_pace()
        with self._generating():
            if not prefill.stores:  # one wait, as before there was a prefix cache
                await call.pause(ttft + pace * tokens, shared=True)
                return
            # Cached once the prompt is read, not once answered: a call arriving during
            # this one's decode already hits, as on a real server.
            await call.pause(ttft, shared=True)
            prefill.done()
            await call.pause(pace * tokens, shared=True)

    def _prefill(self, answer: ChatAnswer | ResponsesAnswer) -> Prefill:
        """How much of the prompt the prefix cache holds; the usage reports it, if there is one."""
        request = answer.request
        cache = self._prefix_cache
        if cache is None:
            return Prefill(request.prompt_tokens)
        prefill = cache.look_up(request.prefix_tokens())
        answer.cached_tokens = prefill.cached_tokens
        return prefill

    def _generating(self) -> contextlib.AbstractContextManager[None]:
        """Count the call on the accelerator (if any) while it generates."""
        if self._accelerator is None:
            return contextlib.nullcontext()
        return self._accelerator.occupy()

    def _count_tokens(self, answer: ChatAnswer | ResponsesAnswer, prefill: Prefill) -> None:
        self._stats.count_tokens(answer.request.prompt_tokens, prefill.cached_tokens, answer.tokens)

    # --- /v1/embeddings -------------------------------------------------------

    async def _embeddings(self, scope: Scope, receive: Receive, send: Send) -> None:
        with self._call(receive) as call:
            self._authorize(scope)
            request = parse_embeddings(await self._read_json(scope, receive), self._models)
            headers = self._admit(request.tokens)
            await self._inject_faults(call)
            await call.pause(self._embed_delay(len(request.inputs)))
            body = embeddings_body(request, request.dimensions or self._config.embedding_dim)
            self._stats.prompt_tokens += request.tokens
            self._stats.embedding_inputs += len(request.inputs)
            await self._respond(send, 200, body, headers)

    # --- /v1/messages (Anthropic's API: see sim/_messages.py) ------------------

    async def _messages(self, scope: Scope, receive: Receive, send: Send) -> None:
        with self._call(receive) as call, anthropic_errors():
            authorize_api_key(scope, self._config.api_key)
            request = parse_messages(await self._read_json(scope, receive), self._models)
            headers = limit_headers(self._admit(request.prompt_tokens + request.max_tokens))
            await self._inject_faults(call)
            answer = MessagesAnswer(request, self._prompt_cache)
            # Its explicit cache_control cache was settled above; a read skips prefill too.
            prefill = Prefill(answer.input_tokens, answer.usage["cache_read_input_tokens"])
            count = functools.partial(self._count_message, answer, prefill)
            if request.stream:
                await self._stream_events(send, call, answer, headers, prefill, count)
                return
            await self._generate(call, prefill, answer.tokens)
            count()
            await self._respond(send, 200, answer.message(), headers)

    def _count_message(self, answer: MessagesAnswer, prefill: Prefill) -> None:
        self._stats.count_tokens(answer.input_tokens, prefill.cached_tokens, answer.tokens)

    async def _count_message_tokens(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Not charged to the rpm/tpm buckets: Anthropic limits counting apart.
        with anthropic_errors():
            authorize_api_key(scope, self._config.api_key)
            request = parse_count_tokens(await self._read_json(scope, receive), self._models)
            await self._respond(send, 200, count_tokens_body(request), [])

    # --- /v1/responses (the request and its answer: sim/_responses.py) --------

    async def _responses(self, scope: Scope, receive: Receive, send: Send) -> None:
        with self._call(receive) as call:
            self._authorize(scope)
            request = parse_responses(await self._read_json(scope, receive), self._models)
            budget = request.max_output_tokens
            answer = ResponsesAnswer(request, budget or self._config.default_max_tokens)
            headers = self._admit(request.prompt_tokens + (budget or answer.tokens))
            await self._inject_faults(call)
            prefill = self._prefill(answer)
            count = functools.partial(self._count_tokens, answer, prefill)
            if request.stream:
                await self._stream_events(send, call, answer, headers, prefill, count)
                return
            await self._generate(call, prefill, answer.tokens)
            count()
            await self._respond(send, 200, answer.body(), headers)

    async def _stream_events(
        self,
        send: Send,
        call: SimCall,
        answer: EventAnswer,
        headers: Headers,
        prefill: Prefill,
        count: Callable[[], None],
    ) -> None:
        """A Responses or Messages stream: typed events at the decode pace, then its closing."""
        self._stats.count_response(200)
        start = {"type": "http.response.start", "status": 200, "headers": _SSE_HEADERS + headers}
        await send(start)
        ttft, pace = self._ttft(prefill), self._decode_pace()  # drawn in _generate's order
        try:
            with self._generating():
                await call.pause(ttft, shared=True)
                prefill.done()
                await _more(send, answer.opening())
                for delta in answer.deltas():
                    await call.pause(pace, shared=True)
                    await _more(send, delta)
        except ApiError as error:  # shutting down: the status is sent; an error event ends it
            await send({"type": "http.response.body", "body": answer.error_event(error)})
            return
        count()
        await send({"type": "http.response.body", "body": answer.closing()})

    # --- /v1/models, /stats, /sim/* --------------------------------------------

    async def _list_models(self, scope: Scope, receive: Receive, send: Send) -> None:
        self._authorize(scope)
        await self._respond(send, 200, self._models_body, [])

    async def _get_stats(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._respond(send, 200, dumps(self.stats()), [])

    async def _post_reset(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.reset()
        await self._respond(send, 200, b'{"reset":true}', [])

    async def _get_faults(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._respond(send, 200, dumps(self.faults), [])

    async def _post_faults(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = await self._read_json(scope, receive)
        if not isinstance(body, dict):
            raise invalid(None, "the request body must be a JSON object")
        unknown = sorted(set(body) - _FAULT_FIELDS)
        if unknown:
            raise invalid(unknown[0], f"unknown fault; known: {sorted(_FAULT_FIELDS)}")
        try:
            faults = self.set_faults(**body)
        except ConfigError as error:
            raise invalid(error.field, error.problem) from None
        await self._respond(send, 200, dumps(faults), [])

    # --- shared steps ---------------------------------------------------------

    def _authorize(self, scope: Scope) -> None:
        if self._auth is None:
            return
        given = header(scope, b"authorization")
        if given is None or not secrets.compare_digest(given, self._auth):
            raise ApiError(401, "Incorrect API key provided.", code="invalid_api_key")

    async def _read_json(self, scope: Scope, receive: Receive) -> Any:
        body = await _read_body(scope, receive, self._config.max_body_bytes)
        try:
            return loads(body)
        except JSONDecodeError:
            raise invalid(None, "We could not parse the JSON body of your request.") from None

    def _admit(self, tokens: int) -> Headers:
        """Charge the rate buckets, or refuse with 429 before any latency is spent."""
        limiter = self._limiter
        if limiter is None:
            return []
        rejection = limiter.admit(tokens)
        if rejection is not None:
            self._stats.rate_limited += 1
            message = rate_limit_message(rejection, limiter.capacity(rejection.kind))
            headers = rejection.retry_headers() + limiter.headers()
            raise ApiError(
                429, message, kind=rejection.kind, code="rate_limit_exceeded", headers=headers
            )
        return limiter.headers()

    async def _inject_faults(self, call: SimCall) -> None:
        faults = self._faults
        if faults.error_rate and self._fault_rng.random() < faults.error_rate:
            self._stats.errors_injected += 1
            message = "The server had an error while processing your request."
            raise ApiError(500, message, kind="server_error", code="server_error")
        if faults.hang_rate and self._fault_rng.random() < faults.hang_rate:
            self._stats.hung += 1
            await call.pause(self._config.hang_s)

    def _ttft(self, prefill: Prefill) -> float:
        """To the first token: the fixed part, then reading every prompt token not cached.

        With ``prefill_shared``, also the wait for the prompts read before it.
        """
        config = self._config
        reading = config.prefill_per_token_s * prefill.uncached_tokens
        ttft = self._delay(config.ttft_s + reading)
        if not config.prefill_shared:
            return ttft
        now = self._clock.now()
        waiting = max(0.0, self._prefill_free_at - now)
        self._prefill_free_at = now + waiting + reading
        return ttft + waiting

    def _decode_pace(self) -> float:
        """Seconds per token for one answer: one jitter draw per request, not per token."""
        return self._delay(self._config.per_token_s)

    def _embed_delay(self, items: int) -> float:
        # A fixed cost per call plus a small one per item: batching pays, as upstream.
        return self._delay(self._config.embed_base_s + self._config.embed_per_item_s * items)

    def _delay(self, seconds: float) -> float:
        if seconds <= 0.0:
            return 0.0
        sigma = self._config.jitter
        scale = self._faults.slow_factor
        if sigma:
            # mu = -sigma²/2 makes the multiplier's mean exactly 1.
            scale *= self._jitter_rng.lognormvariate(-sigma * sigma / 2, sigma)
        return seconds * scale

    def __repr__(self) -> str:
        stats = self._stats
        accelerator = "" if self._accelerator is None else f", {self._accelerator!r}"
        prefixes = "" if self._prefix_cache is None else f", {self._prefix_cache!r}"
        return (
            f"SimApp(in_flight={stats.in_flight}, limiter={self._limiter!r}, "
            f"{self._faults!r}{accelerator}{prefixes})"
        )


async def _more(send: Send, events: bytes) -> None:
    """Send already framed SSE ``events`` now, the body still open."""
    await send({"type": "http.response.body", "body": events, "more_body": True})


async def _event(send: Send, payload: bytes) -> None:
    # One ASGI message per event, so each chunk leaves the server when produced.
    await send(
        {"type": "http.response.body", "body": b"data: " + payload + b"\n\n", "more_body": True}
    )


async def _read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    try:
        return await read_body(scope, receive, limit)
    except BodyTooLarge:
        raise _too_large(limit) from None


def _too_large(limit: int) -> ApiError:
    message = f"The request body is larger than the {limit} bytes this server accepts."
    return ApiError(413, message, code="request_too_large")


def _not_allowed(method: str, path: str, methods: dict[str, Handler]) -> ApiError:
    allow = ", ".join(sorted(methods)).encode()
    message = f"Method {method} is not allowed on {path}; use {allow.decode()}."
    return ApiError(405, message, code="method_not_allowed", headers=[(b"allow", allow)])


def _prefix_cache(config: SimConfig) -> PrefixCache | None:
    if config.prefix_cache_tokens is None:
        return None
    return PrefixCache(
        config.prefix_cache_tokens,
        block_tokens=config.prefix_block_tokens,
        min_tokens=config.prefix_min_tokens,
    )


def _limiter(config: SimConfig, clock: Clock) -> RateLimiter | None:
    if config.rpm is None and config.tpm is None:
        return None
    return RateLimiter(config.rpm, config.tpm, config.burst_s, clock, config.charge_rejected)


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def _unknown_url(path: str) -> ApiError:
    """The 404 for ``path``, in Anthropic's shape under ``/messages`` as the real API answers."""
    error = ApiError(404, f"Unknown request URL: {path}", code="unknown_url")
    return as_anthropic(error) if "/messages" in path else error
