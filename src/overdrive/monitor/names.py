"""Metric names: the catalogue of what overdrive reports, and the rules a name must follow.

Every series the pipeline reports is named by a constant here, and described
once in :data:`METRIC_HELP`, the text :class:`~overdrive.monitor.Metrics` gives a
family nobody described otherwise. Code reports to ``REQUESTS``, never to
the string it stands for, so a name is spelt (and can be renamed) in one place.

>>> REQUESTS, METRIC_HELP[REQUESTS]
('overdrive_requests_total', 'Calls entering the pipeline.')

The naming rules (Prometheus conventions) are checked once when a series is
first created.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Literal

from .._errors import ConfigError

__all__ = [
    "ALERT_NOTIFICATIONS",
    "BATCH_SIZE",
    "BUDGET_DECISIONS",
    "CACHED_TOKENS",
    "CACHE_HITS",
    "CACHE_MISSES",
    "CACHE_TIER_ERRORS",
    "COALESCED",
    "COLD_RACES",
    "COST",
    "DISTRIBUTE_RETRIES",
    "DISTRIBUTE_TASKS",
    "DISTRIBUTE_TASK_DURATION",
    "FALLBACKS",
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
    "SEMANTIC_DURATION",
    "SEMANTIC_LOOKUPS",
    "STREAMS_NOT_STORED",
    "TOKENS",
    "TOOL_CALLS",
    "TOOL_DURATION",
    "TOOL_ERRORS",
    "TOOL_QUEUE_WAIT",
    "TOOL_RETRIES",
    "TUNABLE_VALUE",
    "UPSTREAM_DURATION",
    "UPSTREAM_ERRORS",
    "UPSTREAM_RATE_LIMITED",
    "UPSTREAM_REQUESTS",
    "UPSTREAM_RESPONSES",
]

# -- the catalogue (labels in braces) ---------------------------------------------

# The pipeline, per call: {op}; tokens also {kind}: prompt or completion.
REQUESTS = "overdrive_requests_total"
REQUEST_DURATION = "overdrive_request_duration_seconds"
CACHE_HITS = "overdrive_cache_hits_total"
CACHE_MISSES = "overdrive_cache_misses_total"
COALESCED = "overdrive_coalesced_total"
TOKENS = "overdrive_tokens_total"
# What answers cost at [[prices]] / the shipped list prices: {op, model, upstream}.
COST = "overdrive_cost_usd_total"
# Calls a spent budget refused or moved to its fallback: {scope, outcome}.
BUDGET_DECISIONS = "overdrive_budget_decisions_total"
# Prompt tokens the provider read from its prompt cache: {op} (a part of kind="prompt").
CACHED_TOKENS = "overdrive_cached_prompt_tokens_total"
BATCH_SIZE = "overdrive_batch_size"
HEDGES = "overdrive_hedges_total"
COLD_RACES = "overdrive_cold_races_total"
STREAMS_NOT_STORED = "overdrive_streams_not_stored_total"
REVALIDATION_ERRORS = "overdrive_revalidation_errors_total"
# Model fallbacks ([[models]] fallbacks): {op, from_model, to_model}.
FALLBACKS = "overdrive_fallbacks_total"
# The semantic tier ([cache.semantic]): {op}; lookups also {outcome}: hit or miss.
SEMANTIC_LOOKUPS = "overdrive_semantic_lookups_total"
SEMANTIC_DURATION = "overdrive_semantic_lookup_seconds"
# The cache tiers: {tier, op}.
CACHE_TIER_ERRORS = "overdrive_cache_tier_errors_total"
# The upstreams: {upstream}; requests, durations and queue waits also {op}, responses {status}.
UPSTREAM_REQUESTS = "overdrive_upstream_requests_total"
UPSTREAM_RESPONSES = "overdrive_upstream_responses_total"
UPSTREAM_DURATION = "overdrive_upstream_duration_seconds"
UPSTREAM_RATE_LIMITED = "overdrive_upstream_rate_limited_total"
UPSTREAM_ERRORS = "overdrive_upstream_errors_total"
QUEUE_WAIT = "overdrive_queue_wait_seconds"
RETRIES = "overdrive_retries_total"
RETRY_BUDGET_SPENT = "overdrive_retry_budget_spent_total"
# Tools (@od.tool): {tool}; calls also {outcome}, errors {error}: the exception's type.
TOOL_CALLS = "overdrive_tool_calls_total"
TOOL_ERRORS = "overdrive_tool_errors_total"
TOOL_RETRIES = "overdrive_tool_retries_total"
TOOL_QUEUE_WAIT = "overdrive_tool_queue_seconds"
TOOL_DURATION = "overdrive_tool_duration_seconds"
# The gateway: {key, code}.
GATEWAY_REQUESTS = "overdrive_gateway_requests_total"
# Distributed runs: {backend}; tasks also {outcome}, retries {reason}.
DISTRIBUTE_TASKS = "overdrive_distribute_tasks_total"
DISTRIBUTE_TASK_DURATION = "overdrive_distribute_task_seconds"
DISTRIBUTE_RETRIES = "overdrive_distribute_retries_total"
# The optimizer ({outcome}, {tunable}) and the alerts ({sink, outcome}).
OPTIMIZER_DECISIONS = "overdrive_optimizer_decisions_total"
TUNABLE_VALUE = "overdrive_tunable_value"
ALERT_NOTIFICATIONS = "overdrive_alert_notifications_total"

METRIC_HELP: Mapping[str, str] = {
    REQUESTS: "Calls entering the pipeline.",
    REQUEST_DURATION: "Time from entering the pipeline to the result.",
    CACHE_HITS: "Calls answered from the cache.",
    CACHE_MISSES: "Calls the cache could not answer.",
    COALESCED: "Calls that shared an identical call already in flight.",
    TOKENS: "Tokens reported by upstreams.",
    COST: "USD the answers cost, by their usage at the model's price.",
    BUDGET_DECISIONS: "Calls a spent budget refused, or moved to its fallback model.",
    CACHED_TOKENS: "Prompt tokens upstreams read from their prompt cache (part of the prompt).",
    BATCH_SIZE: "Items per upstream batch.",
    HEDGES: "Second requests sent to another deployment when the first was slow to answer.",
    COLD_RACES: "Calls sent to two deployments at once because one had not answered yet.",
    SEMANTIC_LOOKUPS: "Lookups of the semantic tier after an exact miss, by outcome: hit or miss.",
    SEMANTIC_DURATION: "Time a semantic lookup took: reading shared entries, embedding, guard.",
    STREAMS_NOT_STORED: "Streams that ended but were not cached: truncated or an error event.",
    REVALIDATION_ERRORS: "Background refreshes of stale cache entries that failed.",
    FALLBACKS: "Calls sent on to their next model once the previous model's attempts were spent.",
    CACHE_TIER_ERRORS: "Cache tier operations that failed (the tier is skipped).",
    UPSTREAM_REQUESTS: "Requests sent to an upstream once admitted, every attempt counted.",
    UPSTREAM_RESPONSES: "Answers from an upstream, by HTTP status.",
    UPSTREAM_DURATION: "Time an upstream took to answer an attempt, from sending it (no queue).",
    UPSTREAM_RATE_LIMITED: "Answers of 429 from an upstream, waited out and retried.",
    UPSTREAM_ERRORS: "Upstream attempts that failed: a retryable status or no answer.",
    QUEUE_WAIT: "Time an attempt waited for its upstream's rate limit and a concurrency slot.",
    RETRIES: "Upstream attempts retried.",
    RETRY_BUDGET_SPENT: "Failed attempts not retried because the retry budget was spent.",
    TOOL_CALLS: "Tool calls finished, by outcome: ok, error, cached or coalesced.",
    TOOL_ERRORS: "Tool attempts that raised or timed out, by exception type.",
    TOOL_RETRIES: "Tool attempts retried.",
    TOOL_QUEUE_WAIT: "Time a tool attempt waited for its rate limit and a concurrency slot.",
    TOOL_DURATION: "Time a tool function ran, per attempt (its queue wait excluded).",
    GATEWAY_REQUESTS: "Gateway API requests answered, by API key and HTTP status.",
    DISTRIBUTE_TASKS: "Distributed tasks finished, by outcome.",
    DISTRIBUTE_TASK_DURATION: "Time a distributed task took, retries included.",
    DISTRIBUTE_RETRIES: "Distributed task attempts retried, after an error or a worker crash.",
    OPTIMIZER_DECISIONS: "Optimizer decisions, by outcome.",
    TUNABLE_VALUE: "The current value of each tunable.",
    ALERT_NOTIFICATIONS: "Alert notifications sent to a sink, by outcome.",
}

# -- the rules --------------------------------------------------------------------

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
