from __future__ import annotations

import math
from typing import Any

import pytest

import overdrive.sim
from overdrive._errors import ConfigError
from overdrive.sim import SimConfig
from overdrive.sim._config import Faults


def test_defaults_are_valid() -> None:
    config = SimConfig()
    assert config.ttft_s == 0.25
    assert config.max_body_bytes == 8 * 1024 * 1024
    assert config.models == ()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("ttft_s", -0.1),
        ("per_token_s", math.nan),
        ("jitter", "0.2"),
        ("embed_base_s", math.inf),
        ("rpm", 0),
        ("tpm", 1.5),
        ("burst_s", 0.0),
        ("models", ["gpt-4o"]),
        ("embedding_dim", 0),
        ("api_key", ""),
        ("error_rate", 1.5),
        ("hang_rate", -0.1),
        ("hang_s", 0),
        ("slow_factor", 0.0),
        ("max_body_bytes", True),
        ("default_max_tokens", 0),
        ("seed", 1.0),
        ("capacity", 0),
        ("capacity", 2.5),
        ("overload_exponent", 0.0),
        ("overload_exponent", math.inf),
    ],
)
def test_bad_values_name_the_field(field: str, value: Any) -> None:
    with pytest.raises(ValueError, match=f"`{field}") as raised:
        SimConfig(**{field: value})
    assert isinstance(raised.value, ConfigError)
    assert raised.value.field == field


def test_bad_model_entry_names_its_index() -> None:
    with pytest.raises(ConfigError) as raised:
        SimConfig(models=("ok", ""))
    assert raised.value.field == "models[1]"


def test_config_is_frozen() -> None:
    config = SimConfig()
    with pytest.raises(AttributeError):
        config.rpm = 5  # type: ignore[misc]


def test_faults_validate_like_config() -> None:
    faults = Faults(0.1, 0.2, 3.0)
    assert faults.as_dict() == {"error_rate": 0.1, "hang_rate": 0.2, "slow_factor": 3.0}
    assert "hang_rate=0.2" in repr(faults)
    with pytest.raises(ConfigError, match="slow_factor"):
        Faults(0.0, 0.0, -1.0)


def test_public_names_are_complete_and_sorted() -> None:
    exported = overdrive.sim.__all__
    assert exported == sorted(exported)
    public = {
        name
        for name, value in vars(overdrive.sim).items()
        if not name.startswith("_") and not isinstance(value, type(overdrive))
    }
    public.discard("annotations")
    assert public == set(exported)
    for name in ("SimApp", "SimConfig", "SimServer", "run_sim"):
        assert name in exported
