"""Which calls start a trace: ``[tracing] sample_ratio``, else ``OTEL_TRACES_SAMPLER``.

overdrive decides before it touches the OpenTelemetry SDK, so an unsampled
call costs one random number; the SDK then samples everything it is given.
The variables mean what the OpenTelemetry specification says they mean.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass

from ._config import DEFAULT_SAMPLE_RATIO, TracingConfig

__all__ = ["Sampling", "sampling"]

_log = logging.getLogger("overdrive.trace")

# OTEL_TRACES_SAMPLER's values: (takes a ratio from _ARG, follows the parent, ratio without arg).
_SAMPLERS = {
    "always_on": (False, False, 1.0),
    "always_off": (False, False, 0.0),
    "traceidratio": (True, False, 1.0),
    "parentbased_always_on": (False, True, 1.0),
    "parentbased_always_off": (False, True, 0.0),
    "parentbased_traceidratio": (True, True, 1.0),
}


@dataclass(frozen=True, slots=True)
class Sampling:
    """``ratio`` of root calls traced; with ``parent_based`` a caller's trace decides its own."""

    ratio: float
    parent_based: bool = True


def sampling(config: TracingConfig, environ: Mapping[str, str] = os.environ) -> Sampling:
    """The sampling in effect: the config's ratio, else the OTEL_ variables, else the default.

    >>> sampling(TracingConfig(sample_ratio=0.25)).ratio
    0.25
    >>> sampling(TracingConfig(), {"OTEL_TRACES_SAMPLER": "traceidratio",
    ...                            "OTEL_TRACES_SAMPLER_ARG": "0.5"})
    Sampling(ratio=0.5, parent_based=False)
    """
    if config.sample_ratio is not None:
        return Sampling(config.sample_ratio)
    name = environ.get("OTEL_TRACES_SAMPLER", "").strip().lower()
    if not name:
        return Sampling(DEFAULT_SAMPLE_RATIO)
    if name not in _SAMPLERS:
        _log.warning("OTEL_TRACES_SAMPLER=%r is not a sampler overdrive knows: ignored", name)
        return Sampling(DEFAULT_SAMPLE_RATIO)
    takes_arg, parent_based, ratio = _SAMPLERS[name]
    if takes_arg:
        ratio = _ratio(environ.get("OTEL_TRACES_SAMPLER_ARG"), ratio)
    return Sampling(ratio, parent_based)


def _ratio(arg: str | None, default: float) -> float:
    """The sampler argument as a ratio; the specification's default when it is not one."""
    try:
        ratio = float(arg) if arg else default
    except ValueError:
        ratio = -1.0
    if not 0.0 <= ratio <= 1.0:
        _log.warning("OTEL_TRACES_SAMPLER_ARG=%r is not a ratio in [0, 1]: %s used", arg, default)
        return default
    return ratio
