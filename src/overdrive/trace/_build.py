"""Build the tracer and metrics exporter of ``[tracing]``, importing OpenTelemetry only then."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from .._clock import Clock
from .._errors import ConfigError
from ._config import TracingConfig
from ._metrics_settings import metrics_settings
from ._sampling import sampling
from ._tracing import MetricsExport, Tracing

if TYPE_CHECKING:
    from ..monitor import Metrics

__all__ = ["build_metrics_exporter", "build_tracer"]


def build_tracer(
    config: TracingConfig, clock: Clock, base_urls: Mapping[str, str] | None = None
) -> Tracing | None:
    """The tracer for ``config``, or None while tracing is off (or ``OTEL_SDK_DISABLED``).

    ``base_urls`` maps each upstream's name to its URL (its host is ``server.address``).

    >>> from overdrive._clock import SystemClock
    >>> build_tracer(TracingConfig(), SystemClock()) is None
    True
    """
    if not config.enabled or _sdk_disabled():
        return None
    try:
        from ._otel import OtelTracer
    except ImportError as exc:
        raise ConfigError(
            "tracing.enabled",
            f"tracing needs the OpenTelemetry SDK ({exc.name} is missing): "
            "pip install 'overdrive[otel]'",
        ) from None
    hosts = {name: urlsplit(url).hostname or name for name, url in (base_urls or {}).items()}
    return OtelTracer(config, clock, sampling(config), hosts)


def build_metrics_exporter(
    config: TracingConfig, clock: Clock
) -> Callable[[Metrics], MetricsExport] | None:
    """The maker of a registry's exporter; None while ``metrics`` is off (or ``OTEL_SDK_DISABLED``).

    Two steps, so a wrong variable or a missing extra fails before the engine
    builds the parts the registry comes with. It works with spans off
    (``enabled = false``); nothing is sent until the exporter is started.

    >>> from overdrive._clock import SystemClock
    >>> build_metrics_exporter(TracingConfig(), SystemClock()) is None
    True
    """
    if not config.metrics or _sdk_disabled():
        return None
    settings = metrics_settings(config)
    try:
        from ._metrics_export import OtlpMetricsExporter
    except ImportError as exc:
        raise ConfigError(
            "tracing.metrics",
            f"metrics export needs opentelemetry-proto ({exc.name} is missing): "
            "pip install 'overdrive[otel]'",
        ) from None
    return lambda metrics: OtlpMetricsExporter(metrics, settings, clock)


def _sdk_disabled() -> bool:
    # The specification's switch for every OpenTelemetry SDK in the process.
    return os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true"
