from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from overdrive import ConfigError, load_config

BASE: dict[str, Any] = {"name": "a", "base_url": "http://127.0.0.1:8080/v1/", "models": ["m"]}


def cfg(**upstream: Any) -> dict[str, Any]:
    return {"upstreams": [{**BASE, **upstream}]}


def test_dict_form_builds_typed_config() -> None:
    config = load_config({**cfg(rpm=600, timeout="30s"), "cache": {"memory": "1MiB", "ttl": "5m"}})
    upstream = config.upstreams[0]
    assert upstream.rpm == 600
    assert upstream.timeout == 30.0
    assert upstream.base_url == "http://127.0.0.1:8080/v1"
    assert config.cache.memory == 1024 * 1024
    assert config.cache.ttl == 300.0


def test_toml_file_and_env_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "overdrive.toml"
    path.write_text(
        '[[upstreams]]\nname = "p"\nbase_url = "http://h/v1"\nmodels = ["x"]\ntpm = 1000\n'
        "[cache]\nenabled = false\n"
    )
    assert load_config(path).upstreams[0].tpm == 1000
    monkeypatch.setenv("OVERDRIVE_CONFIG", str(path))
    assert load_config().cache.enabled is False


@pytest.mark.parametrize(
    ("config", "field", "words"),
    [
        (cfg(rpm=-5), "upstreams[0].rpm", "greater than 0"),
        (cfg(rpm="many"), "upstreams[0].rpm", "integer"),
        (cfg(base_url="ftp://x"), "upstreams[0].base_url", "http://"),
        (cfg(models=[]), "upstreams[0].models", "at least 1"),
        (cfg(timeout="soon"), "upstreams[0].timeout", "duration"),
        (cfg(concurrency=0), "upstreams[0].concurrency", ""),
        (cfg(surprise=1), "upstreams[0].surprise", "Extra"),
        ({"upstreams": []}, "upstreams", "at least 1"),
        ({}, "upstreams", "required"),
        ({**cfg(), "cache": {"memory": "lots"}}, "cache.memory", "size"),
        ({"upstreams": [BASE, BASE]}, "upstreams[1].name", "duplicate"),
    ],
)
def test_bad_values_name_the_field(config: dict[str, Any], field: str, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(config)
    assert info.value.field == field
    assert words in str(info.value)


def test_missing_api_key_variable_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OD_TEST_KEY", raising=False)
    with pytest.raises(ConfigError, match="OD_TEST_KEY") as info:
        load_config(cfg(api_key_env="OD_TEST_KEY"))
    assert info.value.field == "upstreams[0].api_key_env"
    monkeypatch.setenv("OD_TEST_KEY", "sk-test")
    assert load_config(cfg(api_key_env="OD_TEST_KEY")).upstreams[0].api_key() == "sk-test"


def test_unreadable_and_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[[upstreams]\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)
