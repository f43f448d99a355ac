"""The metrics hook API (issue 12, item 5): what a workload reports through ``metrics=``, in both
modes, and the OpenTelemetry and Prometheus sinks, against the embedded dev cluster.
"""
from __future__ import annotations

import json
import logging
import subprocess
import sys
from typing import Any, Callable, Dict, List

import gevent
import pytest

import topgun
from topgun.metrics import METRICS, RecordingMetrics

pytestmark = pytest.mark.integration

N = 30


@pytest.fixture(params=["url", "cluster"])
def connect(request: pytest.FixtureRequest, topgun_cluster_factory: Callable[..., Any],
            topgun_url_client_factory: Callable[..., Any], topgun_client_factory: Callable[..., Any]) -> Any:
    """``connect(**client_kw)``: a direct-mode client of a fresh dev cluster, in the mode of the param."""
    def make(**kw: Any) -> topgun.TopGunClient:
        if request.param == "url":
            make.cluster = topgun_cluster_factory(1)  # type: ignore[attr-defined]
            return topgun_url_client_factory(make.cluster.urls[0], thread_mode="direct", **kw)  # type: ignore
        make.cluster = cluster = topgun_cluster_factory(3)  # type: ignore[attr-defined]
        return topgun_client_factory(cluster.urls, thread_mode="direct", **kw)
    make.mode = request.param  # type: ignore[attr-defined]
    return make


def workload(client: topgun.TopGunClient) -> None:
    users = client.map("users")
    for i in range(N):
        users.set(f"u{i}", {"n": i})
    assert users.get("u1") == {"n": 1}
    assert len(users.query()) == N
    client.ping()


def wait_for(check: Callable[[], Any], timeout: float = 10.0) -> None:
    with gevent.Timeout(timeout, AssertionError(f"not reached within {timeout}s")):
        while not check():
            gevent.sleep(0.01)


def test_a_workload_is_counted_and_timed(connect: Any) -> None:
    metrics = RecordingMetrics()
    client = connect(metrics=metrics)
    workload(client)
    assert metrics.counter("topgun.writes.acked") == N
    assert metrics.counter("topgun.requests", op="get", outcome="ok") == 1
    assert metrics.counter("topgun.requests", op="query", outcome="ok") == 1
    assert metrics.counter("topgun.requests", op="PING", outcome="ok") == 1
    assert len(metrics.observations("topgun.request.duration", op="get")) == 1
    assert all(0 < s < 5 for s in metrics.observations("topgun.write.batch.duration"))
    assert metrics.last("topgun.writes.in_flight") == 0
    assert metrics.counter("topgun.connects") >= 1
    assert metrics.names() <= set(METRICS), f"unlisted names: {metrics.names() - set(METRICS)}"
    if connect.mode == "cluster":
        assert metrics.last("topgun.map.version") == client.cluster.map_version


def test_reconnects_and_failures_are_counted(connect: Any) -> None:
    metrics = RecordingMetrics()
    client = connect(metrics=metrics)
    client.map("m").set("k", 1)
    for conn in client.runtime.provider.open_connections():
        conn.close()
    wait_for(lambda: metrics.counter("topgun.reconnects") >= 1 and client.connected)
    client.map("m").set("k", 2)
    connect.cluster.stop()                          # every node gone: nothing can be acknowledged
    wait_for(lambda: not client.connected)
    with pytest.raises(topgun.OperationTimeout):
        client.map("m").set("late", 1, timeout=0.3)
    assert metrics.counter("topgun.writes.failed", error="OperationTimeout") == 1
    with pytest.raises(topgun.OperationTimeout):
        client.map("m").get("k", timeout=0.3)
    assert metrics.counter("topgun.requests", op="get", outcome="OperationTimeout") == 1
    assert metrics.counter("topgun.connect.failures") >= 1
    assert metrics.counter("topgun.retries") >= 1


class Broken:
    def count(self, name: str, n: int = 1, **labels: str) -> None:
        raise RuntimeError("the metrics backend is down")

    observe = gauge = count  # type: ignore[assignment]


def test_a_sink_that_raises_never_breaks_the_client(connect: Any, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="topgun.metrics"):
        client = connect(metrics=Broken())
        workload(client)
    warned = [r for r in caplog.records if r.name == "topgun.metrics"]
    assert warned and len(warned) == len({r.args[1] for r in warned})  # once per metric name  # type: ignore[index]


def test_a_sink_without_the_three_methods_is_a_configuration_error() -> None:
    with pytest.raises(topgun.ConfigurationError, match="metrics="):
        topgun.ClientConfig(url="ws://127.0.0.1:1/ws", metrics=object())


def test_without_metrics_no_sink_is_built_or_imported(connect: Any) -> None:
    client = connect()
    workload(client)
    runtime = client.runtime
    assert runtime.engine.metrics is None and runtime.requests.metrics is None
    probe = ("import topgun, sys, json\nc = topgun.ClientConfig(url='ws://127.0.0.1:1/ws')\n"
             "import topgun.client, topgun.cluster.provider\n"
             "print(json.dumps(sorted(m for m in sys.modules if m.startswith(('opentelemetry', 'prometheus')))))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    assert json.loads(out.stdout) == []


# -- the sinks of the extras ----------------------------------------------------------------------


def test_opentelemetry_metrics_reach_an_sdk_reader(connect: Any) -> None:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    from topgun.contrib.otel import OpenTelemetryMetrics

    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    client = connect(metrics=OpenTelemetryMetrics(meter_provider=provider))
    workload(client)
    points: Dict[str, List[Any]] = {}
    data = reader.get_metrics_data()
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                points.setdefault(metric.name, []).extend(metric.data.data_points)
    assert sum(p.value for p in points["topgun.writes.acked"]) == N
    gets = [p for p in points["topgun.request.duration"] if p.attributes.get("op") == "get"]
    assert sum(p.count for p in gets) == 1
    assert [p.value for p in points["topgun.writes.in_flight"]] == [0]
    provider.shutdown()


def test_prometheus_metrics_are_exposed_from_a_registry(connect: Any) -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from topgun.contrib.prometheus import PrometheusMetrics

    registry = CollectorRegistry()
    client = connect(metrics=PrometheusMetrics(registry))
    workload(client)
    assert registry.get_sample_value("topgun_writes_acked_total") == N
    assert registry.get_sample_value("topgun_requests_total", {"op": "get", "outcome": "ok"}) == 1
    assert registry.get_sample_value("topgun_request_duration_seconds_count", {"op": "get"}) == 1
    assert registry.get_sample_value("topgun_writes_in_flight") == 0
    text = generate_latest(registry).decode()
    assert "# TYPE topgun_write_batch_duration_seconds histogram" in text
    with pytest.raises(ValueError):            # one sink per registry: Prometheus refuses duplicates
        PrometheusMetrics(registry)
