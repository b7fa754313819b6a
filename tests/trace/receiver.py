"""A real OTLP/HTTP receiver for tests: POST /v1/traces and /v1/metrics, protobuf decoded.

It runs ``http.server`` on a thread of its own (the exporter posts from the
SDK's export thread), keeps every span and metrics export it was sent, and
answers as a collector does: 200 with an empty export response. While
``down`` is set it answers 503 to metrics, as a collector restarting does.
"""

from __future__ import annotations

import gzip
import threading
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

__all__ = ["Received", "Receiver", "attributes_of"]

# A bound on what one test may send: a receiver that keeps everything is a buffer too.
MAX_SPANS = 10_000
MAX_EXPORTS = 1_000


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    return None if kind is None else getattr(value, kind)


def attributes_of(pairs: Iterator[KeyValue] | Any) -> dict[str, Any]:
    """A protobuf attribute list as a plain dict."""
    return {pair.key: _value(pair.value) for pair in pairs}


class Received:
    """One span as received, with its resource's attributes beside it."""

    __slots__ = ("attributes", "resource", "span")

    def __init__(self, span: Span, resource: dict[str, Any]) -> None:
        self.span = span
        self.resource = resource
        self.attributes = attributes_of(span.attributes)

    @property
    def name(self) -> str:
        return self.span.name

    def __repr__(self) -> str:
        return f"Received({self.name!r}, {self.attributes})"


class Receiver:
    """``with Receiver() as otlp:`` then ``[tracing] endpoint = otlp.endpoint``."""

    def __init__(self) -> None:
        self.spans: list[Received] = []
        self.paths: list[str] = []
        # Every span counted by name, kept or not (the overhead run sends millions).
        self.counts: Counter[str] = Counter()
        # Metrics exports as received, with the headers each came with.
        self.exports: list[ExportMetricsServiceRequest] = []
        self.export_headers: list[dict[str, str]] = []
        self.down = False
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        # A short poll: shutdown() waits for the serving loop to look up once.
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.01,), daemon=True
        )

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1/traces"

    @property
    def metrics_endpoint(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1/metrics"

    def take_metrics(self, body: bytes, headers: dict[str, str]) -> bool:
        """Keep one metrics export; False (answer 503) while ``down``."""
        request = ExportMetricsServiceRequest()
        request.ParseFromString(body)
        with self._lock:
            if self.down:
                return False
            if len(self.exports) < MAX_EXPORTS:
                self.exports.append(request)
                self.export_headers.append(headers)
            self._arrived.notify_all()
            return True

    def wait_for_exports(self, count: int, timeout: float = 10.0) -> bool:
        """Block until ``count`` metrics exports arrived (run it in a thread from async code)."""
        with self._arrived:
            return self._arrived.wait_for(lambda: len(self.exports) >= count, timeout)

    def named(self, name: str) -> list[Received]:
        with self._lock:
            return [s for s in self.spans if s.name == name]

    def children_of(self, parent: Received) -> list[Received]:
        with self._lock:
            return [s for s in self.spans if s.span.parent_span_id == parent.span.span_id]

    def take(self, request: ExportTraceServiceRequest, path: str) -> None:
        with self._lock:
            self.paths.append(path)
            for resource_spans in request.resource_spans:
                resource = attributes_of(resource_spans.resource.attributes)
                for scope in resource_spans.scope_spans:
                    for span in scope.spans:
                        self.counts[span.name] += 1
                        if len(self.spans) < MAX_SPANS:
                            self.spans.append(Received(span, resource))

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                if self.headers.get("content-encoding") == "gzip":
                    body = gzip.decompress(body)
                if self.path == "/v1/metrics":
                    self.metrics(body)
                    return
                if self.path != "/v1/traces":
                    self.send_error(404)
                    return
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                receiver.take(request, self.path)
                self.answer(ExportTraceServiceResponse().SerializeToString())

            def metrics(self, body: bytes) -> None:
                headers = {name.lower(): value for name, value in self.headers.items()}
                if not receiver.take_metrics(body, headers):
                    self.send_error(503)
                    return
                self.answer(ExportMetricsServiceResponse().SerializeToString())

            def answer(self, answer: bytes) -> None:
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # quiet: the tests read the spans, not the log

        return Handler

    def __enter__(self) -> Receiver:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
