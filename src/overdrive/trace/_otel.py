"""The tracer on the OpenTelemetry SDK: a span per sampled call, exported over OTLP/HTTP.

Imported only when ``[tracing]`` is on. The SDK reads its own variables
(``OTEL_EXPORTER_OTLP_*``, ``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``,
``OTEL_BSP_*``, ``OTEL_PROPAGATORS``); a span's children are made when it
ends, from the clock readings its record kept, so a call pays for the SDK
once, and only when sampled.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from contextvars import ContextVar
from typing import TypeVar

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ALWAYS_ON
from opentelemetry.trace import Span, SpanContext, SpanKind, Status, StatusCode

from .._calls import Call
from .._clock import Clock
from ._attributes import attributes, error_type, operation
from ._config import TracingConfig
from ._sampling import Sampling
from ._span import CallSpan, Reply

__all__ = ["OtelTracer"]

T = TypeVar("T")
R = TypeVar("R", bound=Reply)

_SCOPE = "overdrive"
# Set while a door serves a request: the call's span is then the server side.
_SERVING: ContextVar[bool] = ContextVar("overdrive_serving", default=False)


class OtelTracer:
    """Spans for calls on a tracer provider of the engine's own (the global one is the app's).

    >>> OtelTracer(TracingConfig(enabled=True), SystemClock(), Sampling(1.0), {})  # doctest: +SKIP
    OtelTracer(ratio=1.0, capture_content=False)
    """

    __slots__ = (
        "_capture",
        "_clock",
        "_closed",
        "_hosts",
        "_provider",
        "_random",
        "_sampling",
        "_tracer",
    )

    def __init__(
        self, config: TracingConfig, clock: Clock, sampling: Sampling, hosts: dict[str, str]
    ) -> None:
        self._clock = clock
        self._sampling = sampling
        self._hosts = hosts
        self._capture = config.capture_content
        self._closed = False
        self._random = random.random
        # overdrive sampled already: the SDK keeps whatever it is handed.
        self._provider = TracerProvider(sampler=ALWAYS_ON, resource=_resource(config))
        exporter = OTLPSpanExporter(endpoint=config.endpoint, headers=config.headers or None)
        self._provider.add_span_processor(BatchSpanProcessor(exporter))
        self._tracer = self._provider.get_tracer(_SCOPE)

    def start(self, call: Call, started: float) -> CallSpan | None:
        parent = trace.get_current_span().get_span_context()
        if not self._sampled(parent):
            return None
        # The server side is the door's call, not one it makes on the way (an embedding).
        served = _SERVING.get() and (parent.is_remote or not parent.is_valid)
        kind = SpanKind.SERVER if served else SpanKind.CLIENT
        name = f"{operation(call.op)} {call.model}"
        wall_ns = time.time_ns()
        span = self._tracer.start_span(name, kind=kind, start_time=wall_ns)
        return _OtelSpan(self, call, started, span, wall_ns)

    def _sampled(self, parent: SpanContext) -> bool:
        """Whether a call starting now is traced: its caller's trace says, else the ratio."""
        sampling = self._sampling
        if parent.is_valid and sampling.parent_based:
            return parent.trace_flags.sampled
        return sampling.ratio >= 1.0 or self._random() < sampling.ratio

    async def stream(self, call: Call, open: Callable[[Call], Awaitable[R]]) -> R:
        span = self.start(call, self._clock.now())
        if span is None:
            return await open(call)
        try:
            reply = await open(call)
        except BaseException as exc:
            span.fail(exc)
            raise
        else:
            span.opened(reply)
            return reply
        finally:
            span.end()

    async def serving(self, work: Awaitable[T], headers: Mapping[str, str]) -> T:
        # The global propagator: OTEL_PROPAGATORS (W3C tracecontext and baggage unless set).
        carried = "traceparent" in headers
        token = otel_context.attach(propagate.extract(headers)) if carried else None
        serving = _SERVING.set(True)
        try:
            return await work
        finally:
            _SERVING.reset(serving)
            if token is not None:
                otel_context.detach(token)

    def force_flush(self, timeout_s: float = 10.0) -> bool:
        return self._provider.force_flush(int(timeout_s * 1000))

    async def aclose(self) -> None:
        if self._closed:  # the SDK warns about a second shutdown
            return
        self._closed = True
        # shutdown() joins the export thread after a last export: not on the event loop.
        await asyncio.to_thread(self._provider.shutdown)

    def emit(self, record: _OtelSpan, now: float) -> None:
        """End a call's span: its attributes, status and stage children, stamped after the fact."""
        span = record.span
        wall_ns, started = record.wall_ns, record.started
        span.set_attributes(attributes(record, self._hosts, self._capture))
        failed = error_type(record)
        if failed is not None:
            span.set_attribute("error.type", failed)
            span.set_status(Status(StatusCode.ERROR, failed))
        parent = trace.set_span_in_context(span)
        for name, begun, ended, stage_attributes in record.stages:
            child = self._tracer.start_span(
                name,
                parent,
                attributes=stage_attributes,
                start_time=_epoch(wall_ns, started, begun),
            )
            child.end(end_time=_epoch(wall_ns, started, ended))
        span.end(end_time=_epoch(wall_ns, started, now))

    def __repr__(self) -> str:
        return f"OtelTracer(ratio={self._sampling.ratio}, capture_content={self._capture})"


class _OtelSpan(CallSpan):
    """A call's record beside its SDK span, current while the call runs (nested calls join it)."""

    __slots__ = ("_context", "_owner", "span", "wall_ns")

    def __init__(
        self, owner: OtelTracer, call: Call, started: float, span: Span, wall_ns: int
    ) -> None:
        super().__init__(call, owner._clock, started)
        self._owner = owner
        self.span = span
        self.wall_ns = wall_ns  # the epoch time of ``started``
        self._context = otel_context.attach(trace.set_span_in_context(span))

    def _finish(self, now: float) -> None:
        otel_context.detach(self._context)
        self._owner.emit(self, now)


def _epoch(wall_ns: int, started: float, at: float) -> int:
    """Engine-clock seconds ``at`` in epoch nanoseconds (a float of those would lose ~256 ns)."""
    return wall_ns + round((at - started) * 1e9)


def _resource(config: TracingConfig) -> Resource:
    """The SDK's resource (OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES) named as configured."""
    resource = Resource.create()
    if config.service_name is not None:
        return resource.merge(Resource({SERVICE_NAME: config.service_name}))
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        return resource.merge(Resource({SERVICE_NAME: "overdrive"}))
    return resource
