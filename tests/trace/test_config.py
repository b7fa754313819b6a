"""``[tracing]``: errors naming the field, the sampler variables, nothing imported while off."""

from __future__ import annotations

from typing import Any

import pytest

from overdrive import ConfigError
from overdrive._clock import SystemClock
from overdrive.config import load_config
from overdrive.trace import DEFAULT_SAMPLE_RATIO, Sampling, TracingConfig, build_tracer, sampling
from tests.trace.python_child import run_python

UPSTREAMS = [{"name": "a", "base_url": "http://127.0.0.1:1/v1", "models": ["m"]}]


def config_with(tracing: dict[str, Any]) -> dict[str, Any]:
    return {"upstreams": UPSTREAMS, "tracing": tracing}


@pytest.mark.parametrize(
    ("tracing", "field"),
    [
        ({"sample_ratio": 1.5}, "tracing.sample_ratio"),
        ({"sample_ratio": -0.1}, "tracing.sample_ratio"),
        ({"endpoint": "collector:4318"}, "tracing.endpoint"),
        ({"enabled": "sometimes"}, "tracing.enabled"),
        ({"headers": {"x-team": 3}}, "tracing.headers.x-team"),
        ({"service_name": ""}, "tracing.service_name"),
        ({"colour": "blue"}, "tracing.colour"),
    ],
)
def test_a_bad_value_names_its_field(tracing: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(config_with(tracing))
    assert caught.value.field == field


def test_tracing_is_off_by_default() -> None:
    config = load_config({"upstreams": UPSTREAMS})
    assert config.tracing == TracingConfig()
    assert build_tracer(config.tracing, SystemClock()) is None


def test_otel_sdk_disabled_turns_it_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    assert build_tracer(TracingConfig(enabled=True), SystemClock()) is None


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, Sampling(DEFAULT_SAMPLE_RATIO)),
        ({"OTEL_TRACES_SAMPLER": "always_on"}, Sampling(1.0, parent_based=False)),
        ({"OTEL_TRACES_SAMPLER": "parentbased_always_off"}, Sampling(0.0)),
        (
            {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.2"},
            Sampling(0.2),
        ),
        (
            {"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "2"},
            Sampling(1.0, False),
        ),
        ({"OTEL_TRACES_SAMPLER": "jaeger_remote"}, Sampling(DEFAULT_SAMPLE_RATIO)),
    ],
)
def test_the_sampler_variables_mean_what_the_spec_says(
    environ: dict[str, str], expected: Sampling
) -> None:
    assert sampling(TracingConfig(), environ) == expected


def test_the_config_ratio_wins_over_the_variables() -> None:
    environ = {"OTEL_TRACES_SAMPLER": "always_on"}
    assert sampling(TracingConfig(sample_ratio=0.3), environ) == Sampling(0.3)


def test_tracing_off_imports_no_opentelemetry() -> None:
    done = run_python(
        """
        import asyncio, sys
        from overdrive import Overdrive
        import overdrive.gateway
        async def main():
            od = Overdrive.from_config({"upstreams": [{"name": "a",
                "base_url": "http://127.0.0.1:1/v1", "models": ["m"]}]})
            await od.aclose()
        asyncio.run(main())
        print(sorted(m for m in sys.modules if m.startswith("opentelemetry")))
        """
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize("field", ["enabled", "metrics"])
def test_tracing_or_metrics_on_without_the_extra_says_how_to_install_it(field: str) -> None:
    done = run_python(
        f"""
        import sys
        sys.modules["opentelemetry"] = None  # as if the otel extra were not installed
        from overdrive import ConfigError, Overdrive
        try:
            Overdrive.from_config({{"upstreams": [{{"name": "a",
                "base_url": "http://127.0.0.1:1/v1", "models": ["m"]}}],
                "tracing": {{"{field}": True}}}})
        except ConfigError as exc:
            print(exc.field)
            print(exc)
        """
    )
    assert done.returncode == 0, done.stderr
    named, message = done.stdout.strip().splitlines()
    assert named == f"tracing.{field}"
    assert "pip install 'overdrive[otel]'" in message
