"""Build the tracer ``[tracing]`` asks for, importing OpenTelemetry only then."""

from __future__ import annotations

import os
from collections.abc import Mapping
from urllib.parse import urlsplit

from .._clock import Clock
from .._errors import ConfigError
from ._config import TracingConfig
from ._sampling import sampling
from ._tracing import Tracing

__all__ = ["build_tracer"]


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


def _sdk_disabled() -> bool:
    # The specification's switch for every OpenTelemetry SDK in the process.
    return os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true"
