"""Settings of the simulated upstream, checked once when built."""

from __future__ import annotations

from dataclasses import dataclass

from .._errors import ConfigError
from .._validate import check_duration, check_float, check_int

__all__ = ["Faults", "SimConfig", "check_faults"]

_MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class SimConfig:
    """How the simulated OpenAI-compatible upstream behaves.

    Latencies are in seconds; ``jitter`` is the sigma of a lognormal multiplier
    with mean 1 (0 turns it off). ``rpm``/``tpm`` of ``None`` mean unlimited; the
    buckets hold ``burst_s`` seconds' worth of their rate; with
    ``charge_rejected`` a 429 still costs a request, as providers document. An empty ``models``
    accepts any model name. Answers run 16..63 words (one token each), cut to
    the request's ``max_tokens``, or to ``default_max_tokens`` when it has none.

    ``capacity`` hides a knee in the upstream: that many chat completions
    generate at once at full speed; with ``n > capacity`` of them each runs at
    ``(capacity / n) ** overload_exponent`` of full speed, so its latency is
    stretched by ``(n / capacity) ** overload_exponent``. The default exponent
    1.5 makes total throughput fall past the knee (``capacity`` is the best
    concurrency to run at), like a real inference server thrashing; 1 keeps it
    flat. ``None`` means unlimited: latency does not depend on load.

    ``prefix_cache_tokens`` turns on the deployment's automatic prompt prefix
    cache (chat completions and Responses), holding that many tokens: prompts
    of ``prefix_min_tokens`` or more are cached in blocks of
    ``prefix_block_tokens``, least recently used evicted first, and a later
    prompt sharing a cached prefix reports it as ``cached_tokens`` in its
    usage (see :mod:`overdrive.sim._prefix_cache`). ``None`` turns it off.
    ``prefill_per_token_s`` is the time to read each prompt token not found
    cached, before the first output token: the time to first token is
    ``ttft_s + prefill_per_token_s * uncached_prompt_tokens`` (jittered as a
    whole), so a long fresh prompt is slow and a cached one fast. Messages
    calls count their ``cache_control`` reads as cached, automatic cache or not.
    With ``prefill_shared`` the deployment reads one prompt at a time, in
    arrival order, as an inference server's prefill compute is shared: a
    prompt also waits for the uncached tokens of the prompts ahead of it, so
    work a cache would have saved slows every caller.

    >>> SimConfig(ttft_s=0.0, per_token_s=0.0, rpm=600).rpm
    600
    """

    seed: int = 0
    ttft_s: float = 0.25
    per_token_s: float = 0.004
    jitter: float = 0.2
    embed_base_s: float = 0.03
    embed_per_item_s: float = 0.003
    rpm: int | None = None
    tpm: int | None = None
    burst_s: float = 1.0
    charge_rejected: bool = False
    models: tuple[str, ...] = ()
    embedding_dim: int = 256
    api_key: str | None = None
    error_rate: float = 0.0
    hang_rate: float = 0.0
    hang_s: float = 600.0
    slow_factor: float = 1.0
    max_body_bytes: int = 8 * _MIB
    default_max_tokens: int | None = None
    capacity: int | None = None
    overload_exponent: float = 1.5
    prefix_cache_tokens: int | None = None
    prefill_per_token_s: float = 0.0
    prefix_min_tokens: int = 1024
    prefix_block_tokens: int = 128
    prefill_shared: bool = False

    def __post_init__(self) -> None:
        check_int("seed", self.seed, None)
        for name in (
            "ttft_s",
            "per_token_s",
            "embed_base_s",
            "embed_per_item_s",
            "prefill_per_token_s",
        ):
            check_duration(name, getattr(self, name))
        check_float("jitter", self.jitter, 0.0, finite=True)
        for name in ("rpm", "tpm", "default_max_tokens", "capacity"):
            if getattr(self, name) is not None:
                check_int(name, getattr(self, name), 1)
        check_duration("burst_s", self.burst_s, positive=True)
        check_duration("hang_s", self.hang_s, positive=True)
        _positive("overload_exponent", self.overload_exponent)
        check_int("embedding_dim", self.embedding_dim, 1)
        check_int("max_body_bytes", self.max_body_bytes, 1)
        _models(self.models)
        if not isinstance(self.prefill_shared, bool):
            raise ConfigError(
                "prefill_shared", f"must be true or false, got {self.prefill_shared!r}"
            )
        if not isinstance(self.charge_rejected, bool):
            raise ConfigError(
                "charge_rejected", f"must be true or false, got {self.charge_rejected!r}"
            )
        if self.api_key is not None and (not isinstance(self.api_key, str) or not self.api_key):
            raise ConfigError("api_key", "must be a non-empty string or None")
        check_faults(self.error_rate, self.hang_rate, self.slow_factor)
        _prefix_cache(self.prefix_cache_tokens, self.prefix_block_tokens, self.prefix_min_tokens)


class Faults:
    """The fault knobs that may change while the server runs."""

    __slots__ = ("error_rate", "hang_rate", "slow_factor")

    def __init__(self, error_rate: float, hang_rate: float, slow_factor: float) -> None:
        check_faults(error_rate, hang_rate, slow_factor)
        self.error_rate = float(error_rate)
        self.hang_rate = float(hang_rate)
        self.slow_factor = float(slow_factor)

    def as_dict(self) -> dict[str, float]:
        return {
            "error_rate": self.error_rate,
            "hang_rate": self.hang_rate,
            "slow_factor": self.slow_factor,
        }

    def __repr__(self) -> str:
        return (
            f"Faults(error_rate={self.error_rate}, hang_rate={self.hang_rate}, "
            f"slow_factor={self.slow_factor})"
        )


def check_faults(error_rate: object, hang_rate: object, slow_factor: object) -> None:
    """Raise :class:`ConfigError` naming the first fault knob that is out of range."""
    check_float("error_rate", error_rate, 0.0, 1.0)
    check_float("hang_rate", hang_rate, 0.0, 1.0)
    _positive("slow_factor", slow_factor)


def _positive(name: str, value: object) -> None:
    check_float(name, value, 0.0, open_low=True, finite=True)


def _prefix_cache(capacity: object, block: object, minimum: object) -> None:
    blocks = check_int("prefix_block_tokens", block, 1)
    check_int("prefix_min_tokens", minimum, 0)
    if capacity is None:
        return
    if check_int("prefix_cache_tokens", capacity, 1) < blocks:
        # The cache holds whole blocks: less than one could hold nothing at all.
        raise ConfigError(
            "prefix_cache_tokens",
            f"must be at least prefix_block_tokens ({blocks}), got {capacity!r}",
        )


def _models(models: object) -> None:
    if not isinstance(models, tuple):
        raise ConfigError("models", f"must be a tuple of model names, got {models!r}")
    for index, model in enumerate(models):
        if not isinstance(model, str) or not model:
            raise ConfigError(f"models[{index}]", f"must be a non-empty string, got {model!r}")
