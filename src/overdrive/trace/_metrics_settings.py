"""Where, how often and with what metrics go out: ``[tracing]`` over the ``OTEL_*`` variables.

Read here rather than by the OpenTelemetry SDK, which metrics export does not
use (it needs only opentelemetry-proto and httpx). Each setting follows the
specification: a field set in the config wins, then the signal's own
variable (``OTEL_EXPORTER_OTLP_METRICS_*``), then the generic one.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import unquote

from .._errors import ConfigError
from ._config import MAX_METRICS_INTERVAL, MIN_METRICS_INTERVAL, TracingConfig

__all__ = [
    "DEFAULT_METRICS_ENDPOINT",
    "DEFAULT_METRICS_INTERVAL",
    "EXPORT_TIMEOUT",
    "MetricsSettings",
    "metrics_endpoint",
    "metrics_interval",
    "metrics_settings",
    "otlp_headers",
    "parse_pairs",
]

logger = logging.getLogger("overdrive.trace")

DEFAULT_METRICS_ENDPOINT = "http://localhost:4318/v1/metrics"
DEFAULT_METRICS_INTERVAL = 60.0  # OTEL_METRIC_EXPORT_INTERVAL's default
# The OTLP exporters' default timeout; an export never outlasts its interval.
EXPORT_TIMEOUT = 10.0
_TRACES, _METRICS = "/v1/traces", "/v1/metrics"
# An HTTP header name (RFC 9110 token): anything else would fail every export.
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9a-zA-Z]+$")


@dataclass(frozen=True, slots=True)
class MetricsSettings:
    """Everything an exporter needs, resolved once when the engine is built."""

    endpoint: str = DEFAULT_METRICS_ENDPOINT
    interval: float = DEFAULT_METRICS_INTERVAL
    headers: dict[str, str] = field(default_factory=dict)
    resource: dict[str, str] = field(default_factory=lambda: {"service.name": "overdrive"})
    gzip: bool = False

    @property
    def timeout(self) -> float:
        return min(EXPORT_TIMEOUT, self.interval)


def metrics_settings(
    config: TracingConfig, environ: Mapping[str, str] | None = None
) -> MetricsSettings:
    """The settings ``config`` and the variables (``os.environ`` unless given) make.

    >>> metrics_settings(TracingConfig(metrics=True), {}).endpoint
    'http://localhost:4318/v1/metrics'
    """
    env = os.environ if environ is None else environ
    return MetricsSettings(
        endpoint=metrics_endpoint(config, env),
        interval=metrics_interval(config, env),
        headers=otlp_headers(config, env),
        resource=resource_attributes(config, env),
        gzip=_variable(env, "COMPRESSION").lower() == "gzip",
    )


def metrics_endpoint(config: TracingConfig, environ: Mapping[str, str]) -> str:
    """``metrics_endpoint``, else the variables, else ``endpoint`` with ``/v1/metrics``.

    >>> metrics_endpoint(TracingConfig(endpoint="http://c:4318/v1/traces"), {})
    'http://c:4318/v1/metrics'
    """
    if config.metrics_endpoint is not None:
        return config.metrics_endpoint
    if specific := environ.get("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "").strip():
        return _checked_url("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", specific)
    if base := environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip():
        # The generic variable names the collector's base: each signal adds its path.
        return _checked_url("OTEL_EXPORTER_OTLP_ENDPOINT", base.rstrip("/") + _METRICS)
    if config.endpoint is None:
        return DEFAULT_METRICS_ENDPOINT
    traces = config.endpoint.rstrip("/")
    if not traces.endswith(_TRACES):
        # Guessing would send metrics somewhere the collector may not listen.
        raise ConfigError(
            "tracing.metrics_endpoint",
            f"tracing.endpoint {config.endpoint!r} does not end in {_TRACES}, so the metrics "
            "URL cannot be derived from it: set metrics_endpoint",
        )
    return traces.removesuffix(_TRACES) + _METRICS


def metrics_interval(config: TracingConfig, environ: Mapping[str, str]) -> float:
    """``metrics_interval``, else ``OTEL_METRIC_EXPORT_INTERVAL`` (milliseconds), else 60 s."""
    if config.metrics_interval is not None:
        return config.metrics_interval
    raw = environ.get("OTEL_METRIC_EXPORT_INTERVAL", "").strip()
    if not raw:
        return DEFAULT_METRICS_INTERVAL
    try:
        seconds = float(raw) / 1000
    except ValueError:
        seconds = -1.0
    if not MIN_METRICS_INTERVAL <= seconds <= MAX_METRICS_INTERVAL:  # NaN too
        raise ConfigError(
            "tracing.metrics_interval",
            f"OTEL_METRIC_EXPORT_INTERVAL={raw!r} is not a number of milliseconds between "
            f"{MIN_METRICS_INTERVAL * 1000:g} and {MAX_METRICS_INTERVAL * 1000:g}",
        )
    return seconds


def otlp_headers(config: TracingConfig, environ: Mapping[str, str]) -> dict[str, str]:
    """The variables' headers (the signal's own over the generic), ``headers`` over them.

    Merged, not replaced: the file holds the plain ones, the variables the secrets.

    >>> env = {"OTEL_EXPORTER_OTLP_HEADERS": "api-key=s%3Dcret,x-team=a"}
    >>> otlp_headers(TracingConfig(headers={"X-Team": "b"}), env)
    {'api-key': 's=cret', 'x-team': 'b'}
    """
    merged: dict[str, str] = {}
    pairs = parse_pairs(_variable(environ, "HEADERS"), "OTEL_EXPORTER_OTLP_HEADERS")
    for name, value in [*pairs.items(), *config.headers.items()]:
        if _TOKEN.match(name):
            merged[name.lower()] = value
        else:
            logger.warning("OTLP header %r is not a valid header name: left out", name)
    return merged


def resource_attributes(config: TracingConfig, environ: Mapping[str, str]) -> dict[str, str]:
    """``OTEL_RESOURCE_ATTRIBUTES`` with ``service.name`` as the tracer's resource names it."""
    attributes = parse_pairs(environ.get("OTEL_RESOURCE_ATTRIBUTES", ""), "resource attribute")
    named = attributes.get("service.name", "")
    service = config.service_name or environ.get("OTEL_SERVICE_NAME", "").strip() or named
    attributes["service.name"] = service or "overdrive"
    return attributes


def parse_pairs(text: str, what: str) -> dict[str, str]:
    """``key=value,key=value`` as the OTLP variables spell it (W3C baggage, percent-encoded).

    A malformed pair is left out with a warning, as the SDK does.

    >>> parse_pairs(" a = 1 ,b=%2C, broken", "test")
    {'a': '1', 'b': ','}
    """
    pairs: dict[str, str] = {}
    for item in text.split(","):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        key = unquote(key).strip()
        if not sep or not key:
            logger.warning("%s %r is not key=value: left out", what, item.strip())
            continue
        pairs[key] = unquote(value).strip()
    return pairs


def _variable(environ: Mapping[str, str], name: str) -> str:
    """``OTEL_EXPORTER_OTLP_METRICS_<name>``, else (unset or empty) ``OTEL_EXPORTER_OTLP_<name>``.

    As the SDK's span exporter reads them, so traces and metrics agree.
    """
    specific = environ.get(f"OTEL_EXPORTER_OTLP_METRICS_{name}", "").strip()
    return specific or environ.get(f"OTEL_EXPORTER_OTLP_{name}", "").strip()


def _checked_url(variable: str, url: str) -> str:
    if not url.startswith(("http://", "https://")):
        raise ConfigError(
            "tracing.metrics_endpoint",
            f"{variable}={url!r} is not an http:// or https:// OTLP/HTTP URL",
        )
    return url
