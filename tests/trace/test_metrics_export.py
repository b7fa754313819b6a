"""``[tracing] metrics``: the registry of real calls, received by a real OTLP/HTTP receiver."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.metrics.v1.metrics_pb2 import Metric

from overdrive import ConfigError, Overdrive
from overdrive._clock import Clock, SystemClock
from overdrive.config import load_config
from overdrive.monitor import Histogram, Metrics
from overdrive.monitor._prometheus import SECONDS_BUCKETS, SIZE_BUCKETS
from overdrive.sim import SimServer
from overdrive.testing import FakeClock
from overdrive.trace import (
    MetricsExport,
    MetricsSettings,
    TracingConfig,
    build_metrics_exporter,
    metrics_settings,
)
from overdrive.trace._metrics_settings import metrics_endpoint, metrics_interval
from overdrive.trace._otlp_metrics import MAX_BOUNDS, SECONDS_BOUNDS, SIZE_BOUNDS
from tests.fakes import refusing_url
from tests.trace.python_child import run_python
from tests.trace.receiver import Receiver, attributes_of

MODEL = "gpt-4o-mini"
HELLO: Any = [{"role": "user", "content": "hello metrics"}]
UPSTREAMS = [{"name": "a", "base_url": "http://127.0.0.1:1/v1", "models": ["m"]}]
CUMULATIVE = 2  # AGGREGATION_TEMPORALITY_CUMULATIVE


def exporting(base_url: str, **tracing: Any) -> dict[str, Any]:
    """One upstream, spans off; metrics as ``tracing`` says (an hour apart: no tick in a test)."""
    return {
        "upstreams": [{"name": "sim", "base_url": base_url, "models": [MODEL]}],
        "tracing": {"metrics_interval": "1h", **tracing},
    }


@pytest.fixture
async def od(sim: SimServer) -> AsyncIterator[Overdrive]:
    """An engine whose registry the tests export themselves (its own exporter is off)."""
    async with Overdrive.from_config(exporting(sim.base_url)) as engine:
        yield engine


def exporter_of(metrics: Metrics, endpoint: str, clock: Clock | None = None) -> MetricsExport:
    config = TracingConfig(metrics=True, metrics_endpoint=endpoint, metrics_interval=5)
    make = build_metrics_exporter(config, clock or SystemClock())
    assert make is not None
    return make(metrics)


def metric(export: ExportMetricsServiceRequest, name: str) -> Metric:
    (resource,) = export.resource_metrics
    found: list[Metric] = [
        m for scope in resource.scope_metrics for m in scope.metrics if m.name == name
    ]
    assert len(found) == 1, [m.name for s in resource.scope_metrics for m in s.metrics]
    return found[0]


def histogram(registry: Metrics, name: str) -> Histogram:
    (family,) = [f for f in registry.collect() if f.name == name]
    ((_, series),) = family.series
    assert isinstance(series, Histogram)
    return series


def counted(export: ExportMetricsServiceRequest, name: str) -> dict[tuple[Any, ...], float]:
    points = metric(export, name).sum.data_points
    return {tuple(sorted(attributes_of(p.attributes).items())): p.as_double for p in points}


async def test_closing_the_engine_exports_the_registry(sim: SimServer, otlp: Receiver) -> None:
    config = exporting(sim.base_url, metrics=True, metrics_endpoint=otlp.metrics_endpoint)
    async with Overdrive.from_config(config) as od:
        await od.chat(model=MODEL, messages=HELLO)
        await od.chat(model=MODEL, messages=HELLO)  # a hit
        od.metrics.gauge("overdrive_tunable_value", tunable="batch.max_wait").set(0.25)
    (export,) = otlp.exports  # the flush on close, and nothing before it
    registry = od.metrics
    (resource,) = export.resource_metrics
    assert attributes_of(resource.resource.attributes)["service.name"] == "overdrive"
    requests = metric(export, "overdrive_requests_total")
    assert requests.sum.is_monotonic
    assert requests.sum.aggregation_temporality == CUMULATIVE
    assert counted(export, "overdrive_requests_total") == {(("op", "chat"),): 2.0}
    assert registry.value("overdrive_requests_total", op="chat") == 2.0
    assert counted(export, "overdrive_cache_hits_total") == {(("op", "chat"),): 1.0}
    (point,) = metric(export, "overdrive_request_duration_seconds").histogram.data_points
    mine = histogram(registry, "overdrive_request_duration_seconds")
    assert (point.count, point.sum) == (mine.count, mine.sum)
    assert point.count == 2
    assert (point.min, point.max) == (mine.min, mine.max)
    assert list(point.explicit_bounds) == list(SECONDS_BOUNDS)
    assert sum(point.bucket_counts) == 2
    assert len(point.bucket_counts) == len(SECONDS_BOUNDS) + 1
    gauge = metric(export, "overdrive_tunable_value").gauge.data_points
    assert [(attributes_of(p.attributes), p.as_double) for p in gauge] == [
        ({"tunable": "batch.max_wait"}, 0.25)
    ]
    assert metric(export, "overdrive_request_duration_seconds").unit == "s"


async def test_metrics_on_needs_no_spans(sim: SimServer, otlp: Receiver) -> None:
    config = exporting(sim.base_url, metrics=True, metrics_endpoint=otlp.metrics_endpoint)
    async with Overdrive.from_config(config) as od:
        assert od.tracer is None
        await od.chat(model=MODEL, messages=HELLO, max_tokens=3)
    assert len(otlp.exports) == 1


async def test_a_collector_that_is_down_fails_no_call(
    od: Overdrive, otlp: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    exporter = exporter_of(od.metrics, otlp.metrics_endpoint)
    otlp.down = True
    await od.chat(model=MODEL, messages=HELLO, max_tokens=4)
    with caplog.at_level(logging.INFO, logger="overdrive.trace"):
        assert await exporter.export_once() is False
        assert await exporter.export_once() is False
        await od.chat(model=MODEL, messages=HELLO, max_tokens=5)  # still served
        otlp.down = False
        assert await exporter.export_once() is True
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1  # once per outage
    assert "HTTP 503" in warnings[0].getMessage()
    assert "works again" in caplog.records[-1].getMessage()
    (export,) = otlp.exports
    assert counted(export, "overdrive_requests_total") == {(("op", "chat"),): 2.0}  # cumulative
    await exporter.aclose()


async def test_a_collector_that_refuses_connections_raises_nothing(od: Overdrive) -> None:
    await od.chat(model=MODEL, messages=HELLO, max_tokens=6)
    with refusing_url() as url:
        exporter = exporter_of(od.metrics, url.removesuffix("/v1") + "/v1/metrics")
        assert await exporter.export_once() is False
        await exporter.aclose()  # its final export fails quietly too
    assert "failures=2" in repr(exporter)


async def test_one_export_is_in_flight_at_most(od: Overdrive, otlp: Receiver) -> None:
    exporter = exporter_of(od.metrics, otlp.metrics_endpoint)
    sent = await asyncio.gather(exporter.export_once(), exporter.export_once())
    assert sorted(sent) == [False, True]
    assert len(otlp.exports) == 1
    assert "exports=1" in repr(exporter)
    await exporter.aclose()


async def test_it_exports_every_interval_on_the_engines_clock(
    sim: SimServer, otlp: Receiver
) -> None:
    clock = FakeClock()
    config = exporting(
        sim.base_url, metrics=True, metrics_endpoint=otlp.metrics_endpoint, metrics_interval=30
    )
    od = Overdrive.from_config(config, clock=clock)
    async with od:  # entering starts the exporter on this loop
        await od.chat(model=MODEL, messages=HELLO, max_tokens=7)
        assert clock.sleepers > 0  # the exporter waits for its first tick
        clock.advance(29)
        await asyncio.sleep(0)
        assert otlp.exports == []
        clock.advance(1)
        assert await arrived(otlp, 1)
        clock.advance(30)
        assert await arrived(otlp, 2)
    assert len(otlp.exports) == 3  # and the flush on close


def test_it_starts_again_when_the_engine_moves_to_a_new_loop(
    sim: SimServer, otlp: Receiver
) -> None:
    clock = FakeClock()
    config = exporting(
        sim.base_url, metrics=True, metrics_endpoint=otlp.metrics_endpoint, metrics_interval=30
    )
    od = Overdrive.from_config(config, clock=clock)  # outside a loop: started at first use

    async def call_and_tick(count: int) -> None:
        await od.chat(model=MODEL, messages=HELLO, max_tokens=count)
        clock.advance(30)
        assert await arrived(otlp, count)

    asyncio.run(call_and_tick(1))  # its loop ends: the exporter stops and closes its pool
    asyncio.run(call_and_tick(2))  # home moves to this loop, and the exporter with it
    od.close()
    assert len(otlp.exports) == 3  # a tick on each loop, then the flush on close
    assert counted(otlp.exports[-1], "overdrive_requests_total") == {(("op", "chat"),): 2.0}


async def arrived(otlp: Receiver, count: int) -> bool:
    """Whether ``count`` exports reached the receiver's thread (real I/O; the clock is fake)."""
    return await asyncio.to_thread(otlp.wait_for_exports, count)


async def test_headers_and_compression_follow_the_variables(
    od: Overdrive, otlp: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "ignored=1")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_HEADERS", "api-key=s%3Dcret, x-team=env")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "agent-7")
    config = TracingConfig(
        metrics=True, metrics_endpoint=otlp.metrics_endpoint, headers={"X-Team": "file"}
    )
    make = build_metrics_exporter(config, SystemClock())
    assert make is not None
    exporter = make(od.metrics)
    await od.chat(model=MODEL, messages=HELLO, max_tokens=8)
    assert await exporter.export_once()
    (headers,) = otlp.export_headers
    assert headers["api-key"] == "s=cret"
    assert headers["x-team"] == "file"  # the config's over the variable's
    assert "ignored" not in headers  # the signal's own variable replaces the generic one
    assert headers["content-encoding"] == "gzip"
    assert headers["content-type"] == "application/x-protobuf"
    (resource,) = otlp.exports[0].resource_metrics
    assert attributes_of(resource.resource.attributes)["service.name"] == "agent-7"
    await exporter.aclose()


async def test_a_failing_gauge_is_left_out() -> None:
    metrics = Metrics()
    metrics.gauge("overdrive_tunable_value", tunable="ok").set(1)
    metrics.gauge("overdrive_tunable_value", tunable="broken").set_function(lambda: 1 / 0)
    with Receiver() as otlp:
        exporter = exporter_of(metrics, otlp.metrics_endpoint)
        assert await exporter.export_once()
        await exporter.aclose()
    points = metric(otlp.exports[0], "overdrive_tunable_value").gauge.data_points
    assert [attributes_of(p.attributes) for p in points] == [{"tunable": "ok"}]


async def test_many_described_buckets_are_merged_and_counts_kept() -> None:
    metrics = Metrics()
    metrics.describe("job_seconds", "jobs", buckets=[float(b) for b in range(1, 1001)])
    for value in (0.5, 3.0, 999.0, 5000.0):
        metrics.histogram("job_seconds").observe(value)
    with Receiver() as otlp:
        exporter = exporter_of(metrics, otlp.metrics_endpoint)
        assert await exporter.export_once()
        await exporter.aclose()
    (point,) = metric(otlp.exports[0], "job_seconds").histogram.data_points
    assert len(point.explicit_bounds) <= MAX_BOUNDS
    assert point.explicit_bounds[-1] == 1000.0
    assert sum(point.bucket_counts) == point.count == 4
    assert point.bucket_counts[-1] == 1  # 5000 is above every bound


def test_the_default_bounds_are_the_prometheus_ones() -> None:
    assert (SECONDS_BOUNDS, SIZE_BOUNDS) == (SECONDS_BUCKETS, SIZE_BUCKETS)


# -- config ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tracing", "field"),
    [
        ({"metrics": "sometimes"}, "tracing.metrics"),
        ({"metrics_interval": "500ms"}, "tracing.metrics_interval"),
        ({"metrics_interval": "2d"}, "tracing.metrics_interval"),
        ({"metrics_interval": "soon"}, "tracing.metrics_interval"),
        ({"metrics_endpoint": "collector:4318"}, "tracing.metrics_endpoint"),
    ],
)
def test_a_bad_value_names_its_field(tracing: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config({"upstreams": UPSTREAMS, "tracing": tracing})
    assert caught.value.field == field


@pytest.mark.parametrize(
    ("environ", "config", "field"),
    [
        ({"OTEL_METRIC_EXPORT_INTERVAL": "often"}, {}, "tracing.metrics_interval"),
        ({"OTEL_METRIC_EXPORT_INTERVAL": "500"}, {}, "tracing.metrics_interval"),
        ({"OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "c:4318"}, {}, "tracing.metrics_endpoint"),
        ({}, {"endpoint": "http://c:4318/traces"}, "tracing.metrics_endpoint"),
    ],
)
def test_a_bad_variable_names_the_field_to_set(
    environ: dict[str, str], config: dict[str, Any], field: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        metrics_settings(TracingConfig(metrics=True, **config), environ)
    assert caught.value.field == field


@pytest.mark.parametrize(
    ("environ", "config", "expected"),
    [
        ({}, {}, "http://localhost:4318/v1/metrics"),
        ({}, {"endpoint": "http://c:4318/v1/traces"}, "http://c:4318/v1/metrics"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://g:4318/"}, {}, "http://g:4318/v1/metrics"),
        (
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": "http://g:4318",
                "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "http://m:9/custom",
            },
            {"endpoint": "http://c:4318/v1/traces"},
            "http://m:9/custom",
        ),
        (
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://g:4318"},
            {"endpoint": "http://c:4318/v1/traces"},
            "http://g:4318/v1/metrics",
        ),
        (
            {"OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "http://m:9/custom"},
            {"metrics_endpoint": "https://mine:443/v1/metrics"},
            "https://mine:443/v1/metrics",
        ),
    ],
)
def test_the_endpoint_is_derived_as_the_spec_says(
    environ: dict[str, str], config: dict[str, Any], expected: str
) -> None:
    assert metrics_endpoint(TracingConfig(metrics=True, **config), environ) == expected


@pytest.mark.parametrize(
    ("environ", "config", "expected"),
    [
        ({}, {}, 60.0),
        ({"OTEL_METRIC_EXPORT_INTERVAL": "15000"}, {}, 15.0),
        ({"OTEL_METRIC_EXPORT_INTERVAL": "15000"}, {"metrics_interval": "2m"}, 120.0),
    ],
)
def test_the_interval_honours_the_variable_when_unset(
    environ: dict[str, str], config: dict[str, Any], expected: float
) -> None:
    assert metrics_interval(TracingConfig(metrics=True, **config), environ) == expected


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"OTEL_EXPORTER_OTLP_HEADERS": "a=1"}, {"a": "1", "x-team": "file"}),
        (
            {"OTEL_EXPORTER_OTLP_HEADERS": "a=1", "OTEL_EXPORTER_OTLP_METRICS_HEADERS": ""},
            {"a": "1", "x-team": "file"},  # an empty variable is an unset one, as in the SDK
        ),
        ({"OTEL_EXPORTER_OTLP_HEADERS": "bad header=1,=2,c"}, {"x-team": "file"}),
    ],
)
def test_the_headers_variables_are_read_as_the_sdk_reads_them(
    environ: dict[str, str], expected: dict[str, str]
) -> None:
    config = TracingConfig(metrics=True, headers={"X-Team": "file"})
    assert metrics_settings(config, environ).headers == expected


def test_an_export_times_out_within_its_interval() -> None:
    assert MetricsSettings(interval=3.0).timeout == 3.0
    assert MetricsSettings(interval=60.0).timeout == 10.0


def test_off_by_default_and_under_otel_sdk_disabled(monkeypatch: pytest.MonkeyPatch) -> None:
    assert build_metrics_exporter(TracingConfig(), SystemClock()) is None
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    assert build_metrics_exporter(TracingConfig(metrics=True), SystemClock()) is None


def test_metrics_alone_import_no_opentelemetry_sdk() -> None:
    done = run_python(
        """
        import sys
        from overdrive import Overdrive
        Overdrive.from_config({"upstreams": [{"name": "a",
            "base_url": "http://127.0.0.1:1/v1", "models": ["m"]}],
            "tracing": {"metrics": True}})
        print(sorted({m.split(".")[1] for m in sys.modules if m.startswith("opentelemetry.")}))
        """
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "['proto']"
