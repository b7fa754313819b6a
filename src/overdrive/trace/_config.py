"""``[tracing]``: OpenTelemetry traces of every call, exported over OTLP/HTTP.

Every field left unset falls back to the standard ``OTEL_*`` variables, read
by the OpenTelemetry SDK itself where it reads them (the exporter's endpoint
and headers, the resource's service name); the sampler variables are read
here (see :func:`sampling`), since overdrive samples before it touches the SDK,
and so are the metrics ones (``_metrics_settings.py``: metrics need no SDK).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BeforeValidator, Field, field_validator

from .._section import _Section
from .._units import parse_duration

__all__ = ["DEFAULT_SAMPLE_RATIO", "MAX_METRICS_INTERVAL", "MIN_METRICS_INTERVAL", "TracingConfig"]

# The share of calls traced when neither the config nor OTEL_TRACES_SAMPLER
# says: a sampled call costs ~100x an unsampled one (its spans are built and
# encoded), so at this ratio a busy gateway keeps >= 0.9x its throughput.
DEFAULT_SAMPLE_RATIO = 0.01

# An export reads every series on the engine's loop: more often than once a
# second would cost the calls it measures; rarer than daily is no monitoring.
MIN_METRICS_INTERVAL = 1.0
MAX_METRICS_INTERVAL = 86_400.0

Interval = Annotated[
    float,
    BeforeValidator(parse_duration),
    Field(ge=MIN_METRICS_INTERVAL, le=MAX_METRICS_INTERVAL),
]


class TracingConfig(_Section):
    """``[tracing]``: a span per call, after the GenAI semantic conventions.

    >>> TracingConfig(enabled=True, sample_ratio=0.5).sample_ratio
    0.5

    ``endpoint`` is the OTLP/HTTP traces URL (``http://collector:4318/v1/traces``);
    unset, ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_ENDPOINT``.
    ``headers`` go with every export, over ``OTEL_EXPORTER_OTLP_HEADERS`` (put
    secrets there: the file holds none). ``sample_ratio`` is the share of
    calls that start a trace (a caller's ``traceparent`` decides for its own);
    unset, ``OTEL_TRACES_SAMPLER``/``_ARG``, else :data:`DEFAULT_SAMPLE_RATIO`.
    ``capture_content`` records the messages and answers (opt-in, as the
    conventions ask: they may hold personal data).

    ``metrics`` sends the metrics registry too, every ``metrics_interval``
    (unset: ``OTEL_METRIC_EXPORT_INTERVAL``, else 60 s), to ``metrics_endpoint``
    (unset: derived from the variables or ``endpoint``, see docs/tracing.md).
    It does not need ``enabled``: metrics go out with spans off.

    >>> TracingConfig(metrics=True, metrics_interval="30s").metrics_interval
    30.0
    """

    enabled: bool = False
    endpoint: str | None = None
    service_name: str | None = Field(default=None, min_length=1)
    sample_ratio: float | None = Field(default=None, ge=0.0, le=1.0)
    capture_content: bool = False
    headers: dict[str, str] = Field(default_factory=dict)
    metrics: bool = False
    metrics_interval: Interval | None = None
    metrics_endpoint: str | None = None

    @field_validator("endpoint", "metrics_endpoint")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value and not value.startswith(("http://", "https://")):
            raise ValueError(f"expected an http:// or https:// OTLP/HTTP URL, got {value!r}")
        return value or None
