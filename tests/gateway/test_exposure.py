"""Without keys, the gateway stays on loopback unless the operator allows more."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from overdrive import ConfigError
from overdrive.cli import main
from overdrive.config import load_config
from overdrive.gateway._exposure import check_exposure, is_loopback

UPSTREAM = {"name": "a", "base_url": "http://127.0.0.1:9/v1", "models": ["m"]}
KEY = {"name": "team", "key_sha256": "0" * 64}


def config(**gateway: Any) -> Any:
    return load_config({"upstreams": [UPSTREAM], "gateway": gateway})


@pytest.mark.parametrize("host", ["127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost"])
def test_loopback_hosts_are_recognised(host: str) -> None:
    assert is_loopback(host)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "", "10.1.2.3", "no-such-host.invalid"])
def test_other_hosts_are_not_loopback(host: str) -> None:
    assert not is_loopback(host)


def test_keyless_gateway_refuses_a_public_address() -> None:
    with pytest.raises(ConfigError) as caught:
        check_exposure(config(), "0.0.0.0")
    assert caught.value.field == "gateway.keys"
    assert "allow_anonymous" in str(caught.value)


def test_keys_or_an_explicit_allowance_open_it() -> None:
    check_exposure(config(keys=[KEY]), "0.0.0.0")
    check_exposure(config(allow_anonymous=True), "0.0.0.0")
    check_exposure(config(), "0.0.0.0", allow_anonymous=True)
    check_exposure(config(), "127.0.0.1")


def test_the_command_refuses_before_listening(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text(
        '[[upstreams]]\nname = "a"\nbase_url = "http://127.0.0.1:9/v1"\nmodels = ["m"]\n'
    )
    assert main(["gateway", "--config", str(path), "--host", "0.0.0.0", "--port", "0"]) == 2
    assert "allow_anonymous" in capsys.readouterr().err
