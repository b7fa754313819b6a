"""Monitoring: what every pipeline stage reports, windows over it, and its exposition.

>>> from overdrive.monitor import Metrics, prometheus_text
>>> metrics = Metrics()
>>> with metrics.measure("overdrive_tool_call", tool="search"):
...     pass
>>> "overdrive_tool_call_seconds_bucket" in prometheus_text(metrics)
True
"""

from __future__ import annotations

from ._alert_rules import (
    BinaryOp,
    Increase,
    Number,
    Percentile,
    Rate,
    Rule,
    Selector,
    Value,
    parse_rule,
)
from ._alert_sinks import (
    AlertEvent,
    AlertSink,
    AlertState,
    CallbackSink,
    LogSink,
    WebhookDeliveryError,
    WebhookSink,
)
from ._alerts import Alerts, MetricSource, MetricsSource
from ._default import default_metrics, measure, metrics_text
from ._faults import LogThrottle, TierFaults
from ._measure import Measure
from ._metrics import Family, Metrics
from ._prometheus import CONTENT_TYPE, SECONDS_BUCKETS, SIZE_BUCKETS, prometheus_text
from ._series import Counter, Gauge, Histogram
from ._window import Window

__all__ = [
    "CONTENT_TYPE",
    "SECONDS_BUCKETS",
    "SIZE_BUCKETS",
    "AlertEvent",
    "AlertSink",
    "AlertState",
    "Alerts",
    "BinaryOp",
    "CallbackSink",
    "Counter",
    "Family",
    "Gauge",
    "Histogram",
    "Increase",
    "LogSink",
    "LogThrottle",
    "Measure",
    "MetricSource",
    "Metrics",
    "MetricsSource",
    "Number",
    "Percentile",
    "Rate",
    "Rule",
    "Selector",
    "TierFaults",
    "Value",
    "WebhookDeliveryError",
    "WebhookSink",
    "Window",
    "default_metrics",
    "measure",
    "metrics_text",
    "parse_rule",
    "prometheus_text",
]
