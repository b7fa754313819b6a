"""Monitoring: what every pipeline stage reports, windows over it, and its exposition.

>>> from overdrive.monitor import Metrics, prometheus_text
>>> metrics = Metrics()
>>> with metrics.measure("overdrive_tool_call", tool="search"):
...     pass
>>> "overdrive_tool_call_seconds_bucket" in prometheus_text(metrics)
True
"""

from __future__ import annotations

from ._alert_parse import parse_rule
from ._alert_rules import (
    BinaryOp,
    Increase,
    Number,
    Percentile,
    Rate,
    Rule,
    Selector,
    Value,
)
from ._alert_sinks import (
    AlertEvent,
    AlertSink,
    AlertState,
    CallbackSink,
    LogSink,
    WebhookSink,
)
from ._alert_source import MetricSource, MetricsSource
from ._alerts import Alerts
from ._default import default_metrics, measure, metrics_text
from ._faults import LogThrottle, TierFaults
from ._measure import Measure
from ._metrics import Family, Metrics
from ._names import (
    ALERT_NOTIFICATIONS,
    BATCH_SIZE,
    CACHE_HITS,
    CACHE_MISSES,
    CACHE_TIER_ERRORS,
    COALESCED,
    DISTRIBUTE_RETRIES,
    DISTRIBUTE_TASK_DURATION,
    DISTRIBUTE_TASKS,
    GATEWAY_REQUESTS,
    HEDGES,
    METRIC_HELP,
    OPTIMIZER_DECISIONS,
    QUEUE_WAIT,
    REQUEST_DURATION,
    REQUESTS,
    RETRIES,
    RETRY_BUDGET_SPENT,
    REVALIDATION_ERRORS,
    STREAMS_NOT_STORED,
    TOKENS,
    TUNABLE_VALUE,
    UPSTREAM_DURATION,
    UPSTREAM_ERRORS,
    UPSTREAM_RATE_LIMITED,
    UPSTREAM_REQUESTS,
    UPSTREAM_RESPONSES,
)
from ._op_meters import OpMeterBook, OpMeters
from ._prometheus import CONTENT_TYPE, SECONDS_BUCKETS, SIZE_BUCKETS, prometheus_text
from ._series import Counter, Gauge, Histogram
from ._window import Window

__all__ = [
    "ALERT_NOTIFICATIONS",
    "BATCH_SIZE",
    "CACHE_HITS",
    "CACHE_MISSES",
    "CACHE_TIER_ERRORS",
    "COALESCED",
    "CONTENT_TYPE",
    "DISTRIBUTE_RETRIES",
    "DISTRIBUTE_TASKS",
    "DISTRIBUTE_TASK_DURATION",
    "GATEWAY_REQUESTS",
    "HEDGES",
    "METRIC_HELP",
    "OPTIMIZER_DECISIONS",
    "QUEUE_WAIT",
    "REQUESTS",
    "REQUEST_DURATION",
    "RETRIES",
    "RETRY_BUDGET_SPENT",
    "REVALIDATION_ERRORS",
    "SECONDS_BUCKETS",
    "SIZE_BUCKETS",
    "STREAMS_NOT_STORED",
    "TOKENS",
    "TUNABLE_VALUE",
    "UPSTREAM_DURATION",
    "UPSTREAM_ERRORS",
    "UPSTREAM_RATE_LIMITED",
    "UPSTREAM_REQUESTS",
    "UPSTREAM_RESPONSES",
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
    "OpMeterBook",
    "OpMeters",
    "Percentile",
    "Rate",
    "Rule",
    "Selector",
    "TierFaults",
    "Value",
    "WebhookSink",
    "Window",
    "default_metrics",
    "measure",
    "metrics_text",
    "parse_rule",
    "prometheus_text",
]
