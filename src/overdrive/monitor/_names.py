"""Prometheus naming rules, checked once when a series is first created."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Literal

from .._errors import ConfigError

__all__ = ["Kind", "check_kind", "check_labels", "check_name"]

Kind = Literal["counter", "gauge", "histogram"]

_METRIC = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
# Suffixes the exposition itself appends; a family of another kind must not end in them.
_RESERVED_SUFFIXES = ("_total", "_bucket", "_count", "_sum", "_created")
_RESERVED_LABELS = {"histogram": ("le",), "counter": (), "gauge": ()}


def check_name(name: str, kind: Kind) -> None:
    """Raise :class:`ConfigError` unless ``name`` is a valid name for a ``kind`` family.

    >>> check_name("overdrive_requests_total", "counter")
    >>> check_name("overdrive_requests", "counter")
    Traceback (most recent call last):
    ...
    overdrive._errors.ConfigError: config field `metrics.overdrive_requests`: a counter's name must end in `_total` (Prometheus convention)
    """  # noqa: E501
    if not isinstance(name, str) or not _METRIC.fullmatch(name):
        raise ConfigError(f"metrics.{name}", "a metric name must match [a-zA-Z_:][a-zA-Z0-9_:]*")
    if kind == "counter" and not name.endswith("_total"):
        raise ConfigError(
            f"metrics.{name}", "a counter's name must end in `_total` (Prometheus convention)"
        )
    if kind != "counter" and name.endswith(_RESERVED_SUFFIXES):
        raise ConfigError(
            f"metrics.{name}",
            f"a {kind}'s name must not end in one of {', '.join(_RESERVED_SUFFIXES)}",
        )


def check_labels(name: str, kind: Kind, labels: Iterable[str]) -> None:
    """Raise :class:`ConfigError` for a malformed or reserved label name."""
    for label in labels:
        where = f"metrics.{name}{{{label}}}"
        if not _LABEL.fullmatch(label) or label.startswith("__"):
            raise ConfigError(
                where, "a label name must match [a-zA-Z_][a-zA-Z0-9_]* and not start with __"
            )
        if label in _RESERVED_LABELS[kind]:
            raise ConfigError(where, f"`{label}` is reserved in a {kind}")


def check_kind(name: str, kind: Kind, known: Kind | None) -> None:
    """Raise :class:`ConfigError` when ``name`` is already a family of another kind."""
    if known is not None and known != kind:
        raise ConfigError(f"metrics.{name}", f"already registered as a {known}, not a {kind}")
