"""Settings of the simulated upstream, checked once when built."""

from __future__ import annotations

import math
from dataclasses import dataclass

from overdrive._errors import ConfigError

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

    def __post_init__(self) -> None:
        _int("seed", self.seed, minimum=None)
        for name in ("ttft_s", "per_token_s", "jitter", "embed_base_s", "embed_per_item_s"):
            _seconds(name, getattr(self, name))
        for name in ("rpm", "tpm", "default_max_tokens", "capacity"):
            _optional_int(name, getattr(self, name))
        _positive("burst_s", self.burst_s)
        _positive("hang_s", self.hang_s)
        _positive("overload_exponent", self.overload_exponent)
        _int("embedding_dim", self.embedding_dim, minimum=1)
        _int("max_body_bytes", self.max_body_bytes, minimum=1)
        _models(self.models)
        if not isinstance(self.charge_rejected, bool):
            raise ConfigError(
                "charge_rejected", f"must be true or false, got {self.charge_rejected!r}"
            )
        if self.api_key is not None and (not isinstance(self.api_key, str) or not self.api_key):
            raise ConfigError("api_key", "must be a non-empty string or None")
        check_faults(self.error_rate, self.hang_rate, self.slow_factor)


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
    _share("error_rate", error_rate)
    _share("hang_rate", hang_rate)
    _positive("slow_factor", slow_factor)


def _number(name: str, value: object) -> float:
    # bool is an int subclass; True as a latency is a bug, not 1 second.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(name, f"must be a number, got {value!r}")
    if not math.isfinite(value):
        raise ConfigError(name, f"must be finite, got {value!r}")
    return float(value)


def _seconds(name: str, value: object) -> None:
    if _number(name, value) < 0:
        raise ConfigError(name, f"must be >= 0, got {value!r}")


def _positive(name: str, value: object) -> None:
    if _number(name, value) <= 0:
        raise ConfigError(name, f"must be > 0, got {value!r}")


def _share(name: str, value: object) -> None:
    if not 0.0 <= _number(name, value) <= 1.0:
        raise ConfigError(name, f"must be between 0 and 1, got {value!r}")


def _int(name: str, value: object, *, minimum: int | None) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(name, f"must be an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise ConfigError(name, f"must be >= {minimum}, got {value!r}")


def _optional_int(name: str, value: object) -> None:
    if value is not None:
        _int(name, value, minimum=1)


def _models(models: object) -> None:
    if not isinstance(models, tuple):
        raise ConfigError("models", f"must be a tuple of model names, got {models!r}")
    for index, model in enumerate(models):
        if not isinstance(model, str) or not model:
            raise ConfigError(f"models[{index}]", f"must be a non-empty string, got {model!r}")
