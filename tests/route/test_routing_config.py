from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from overdrive import ConfigError, load_config

BASE: dict[str, Any] = {"name": "a", "base_url": "http://127.0.0.1:8080/v1", "models": ["m"]}


def test_defaults() -> None:
    config = load_config({"upstreams": [BASE]})
    routing = config.routing
    assert (routing.balancer, routing.decay) == ("peak_ewma", 10.0)
    health = routing.health
    assert (health.eject_after, health.ejection, health.max_ejection) == (5, 30.0, 300.0)
    assert (health.max_ejected_share, health.probes, health.probe_path) == (0.5, None, "/models")
    assert config.upstreams[0].weight == 1.0


def test_toml_shape(tmp_path: Path) -> None:
    path = tmp_path / "overdrive.toml"
    path.write_text(
        '[[upstreams]]\nname = "a"\nbase_url = "http://h/v1"\nmodels = ["m"]\nweight = 3\n'
        '[routing]\nbalancer = "least_load"\ndecay = "5s"\n'
        '[routing.health]\neject_after = 2\nejection = "10s"\nprobes = false\n'
    )
    config = load_config(path)
    assert config.upstreams[0].weight == 3.0
    assert (config.routing.balancer, config.routing.decay) == ("least_load", 5.0)
    assert (config.routing.health.eject_after, config.routing.health.probes) == (2, False)


@pytest.mark.parametrize(
    ("routing", "upstream", "field", "words"),
    [
        ({"balancer": "random"}, {}, "routing.balancer", "peak_ewma"),
        ({"decay": "0s"}, {}, "routing.decay", "greater than 0"),
        (
            {"health": {"eject_after": 0}},
            {},
            "routing.health.eject_after",
            "greater than or equal to 1",
        ),
        (
            {"health": {"max_ejected_share": 1.5}},
            {},
            "routing.health.max_ejected_share",
            "less than or equal to 1",
        ),
        ({"health": {"probe_path": "models"}}, {}, "routing.health.probe_path", "'/'"),
        ({"health": {"probe_interval": "often"}}, {}, "routing.health.probe_interval", "duration"),
        (
            {"health": {"ejection": "60s", "max_ejection": "30s"}},
            {},
            "routing.health.max_ejection",
            "at least ejection=60s",
        ),
        ({"surprise": 1}, {}, "routing.surprise", "Extra"),
        ({}, {"weight": 0}, "upstreams[0].weight", "greater than 0"),
    ],
)
def test_bad_values_name_the_field(
    routing: dict[str, Any], upstream: dict[str, Any], field: str, words: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_config({"upstreams": [{**BASE, **upstream}], "routing": routing})
    assert info.value.field == field
    assert words in str(info.value)
