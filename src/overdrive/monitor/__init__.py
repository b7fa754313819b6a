"""Monitoring: what every pipeline stage reports, windows over it, and its exposition.

>>> from overdrive.monitor import Metrics, prometheus_text
>>> metrics = Metrics()
>>> with metrics.measure("overdrive_tool_call", tool="search"):
...     pass
>>> "overdrive_tool_call_seconds_bucket" in prometheus_text(metrics)
True
"""

from __future__ import annotations

from . import names
from ._alert_config import AlertsConfig, build_alerts
from ._alert_sinks import (
    AlertEvent,
    AlertSink,
    CallbackSink,
    FilteredSink,
    LogSink,
    WebhookSink,
)
from ._alerts import Alerts
from ._default import measure, metrics_text
from ._faults import TierFaults
from ._measure import Measure
from ._metrics import Metrics, sum_by
from ._op_meters import OpMeterBook
from ._prometheus import CONTENT_TYPE, prometheus_text
from ._series import Counter, Gauge, Histogram

__all__ = [
    "CONTENT_TYPE",
    "AlertEvent",
    "AlertSink",
    "Alerts",
    "AlertsConfig",
    "CallbackSink",
    "Counter",
    "FilteredSink",
    "Gauge",
    "Histogram",
    "LogSink",
    "Measure",
    "Metrics",
    "OpMeterBook",
    "TierFaults",
    "WebhookSink",
    "build_alerts",
    "measure",
    "metrics_text",
    "names",
    "prometheus_text",
    "sum_by",
]
