"""OpenTelemetry traces of every call (``[tracing]``, extra ``otel``).

A sampled call gets a span named after the GenAI semantic conventions
(``chat gpt-4o-mini``) with its stages as child spans: ``cache.lookup``,
``semantic.lookup``, ``coalesce.wait``, then per attempt ``queue.wait`` and
``upstream.attempt`` (retries included). A gateway request continues the
caller's ``traceparent``. ``[tracing] metrics`` sends the metrics registry
over OTLP/HTTP too, with or without spans. With both off nothing from
OpenTelemetry is imported. See docs/tracing.md.

>>> from overdrive.trace import TracingConfig
>>> TracingConfig(enabled=True, endpoint="http://127.0.0.1:4318/v1/traces").enabled
True
"""

from __future__ import annotations

from ._build import build_metrics_exporter, build_tracer
from ._config import DEFAULT_SAMPLE_RATIO, TracingConfig
from ._metrics_settings import MetricsSettings, metrics_settings
from ._sampling import Sampling, sampling
from ._span import TRACE_HEADERS, CallSpan, trace_attempt
from ._tracing import MetricsExport, Tracing

__all__ = [
    "DEFAULT_SAMPLE_RATIO",
    "TRACE_HEADERS",
    "CallSpan",
    "MetricsExport",
    "MetricsSettings",
    "Sampling",
    "Tracing",
    "TracingConfig",
    "build_metrics_exporter",
    "build_tracer",
    "metrics_settings",
    "sampling",
    "trace_attempt",
]
