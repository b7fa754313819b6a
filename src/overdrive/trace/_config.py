"""``[tracing]``: OpenTelemetry traces of every call, exported over OTLP/HTTP.

Every field left unset falls back to the standard ``OTEL_*`` variables, read
by the OpenTelemetry SDK itself where it reads them (the exporter's endpoint
and headers, the resource's service name); the sampler variables are read
here (see :func:`sampling`), since overdrive samples before it touches the SDK.
"""

from __future__ import annotations

from pydantic import Field, field_validator

from .._section import _Section

__all__ = ["DEFAULT_SAMPLE_RATIO", "TracingConfig"]

# The share of calls traced when neither the config nor OTEL_TRACES_SAMPLER
# says: a sampled call costs ~100x an unsampled one (its spans are built and
# encoded), so at this ratio a busy gateway keeps >= 0.9x its throughput.
DEFAULT_SAMPLE_RATIO = 0.01


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
    """

    enabled: bool = False
    endpoint: str | None = None
    service_name: str | None = Field(default=None, min_length=1)
    sample_ratio: float | None = Field(default=None, ge=0.0, le=1.0)
    capture_content: bool = False
    headers: dict[str, str] = Field(default_factory=dict)

    @field_validator("endpoint")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value and not value.startswith(("http://", "https://")):
            raise ValueError(f"expected an http:// or https:// OTLP/HTTP URL, got {value!r}")
        return value or None
