"""Prometheus metrics for topgun: ``TopGunClient(..., metrics=PrometheusMetrics())``.

Install the extra: ``pip install topgun[prometheus]`` (``prometheus-client``). Every name of
:data:`topgun.metrics.METRICS` is registered up front, with its label names, in one
``CollectorRegistry`` (the default registry unless ``registry=`` is given), so ``/metrics``
lists them before the first event. Names follow Prometheus conventions: dots become
underscores, counters are exposed with ``_total``, durations as histograms in seconds
(``topgun_request_duration_seconds``). Serve them with ``prometheus_client.generate_latest``
(see ``examples/flask_app.py``) or ``start_http_server``.

One instance per registry: a second one on the same registry raises ``ValueError`` (Prometheus
refuses duplicate names); share it between the clients of a process. Under gunicorn each worker
process has its own registry (prometheus-client's multiprocess mode is not set up here).

Not in here: serving the registry over HTTP, multiprocess aggregation.
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

from topgun.metrics import COUNTER, HISTOGRAM, METRICS

__all__ = ["PrometheusMetrics", "prometheus_name"]

#: Histogram buckets in seconds: from a fast local ack to a request that waited out a failover.
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def prometheus_name(name: str, kind: str) -> str:
    """``topgun.request.duration`` -> ``topgun_request_duration_seconds`` (histograms get the unit)."""
    base = name.replace(".", "_")
    return base + "_seconds" if kind == HISTOGRAM else base


class PrometheusMetrics:
    """A :class:`topgun.metrics.Metrics` sink that keeps prometheus-client metrics in ``registry``.

    Args:
        registry: where to register (default: prometheus-client's global ``REGISTRY``).
    """

    def __init__(self, registry: Optional[CollectorRegistry] = None) -> None:
        self.registry = registry if registry is not None else REGISTRY
        self._metrics: Dict[str, Tuple[Any, Tuple[str, ...]]] = {}
        for name, (kind, labels, description) in METRICS.items():
            self._create(name, kind, labels, description)

    def _create(self, name: str, kind: str, labels: Tuple[str, ...], description: str) -> Tuple[Any, Tuple[str, ...]]:
        full = prometheus_name(name, kind)
        metric: Any
        if kind == COUNTER:
            metric = Counter(full, description or name, labels, registry=self.registry)
        elif kind == HISTOGRAM:
            metric = Histogram(full, description or name, labels, registry=self.registry, buckets=BUCKETS)
        else:
            metric = Gauge(full, description or name, labels, registry=self.registry)
        self._metrics[name] = (metric, labels)
        return metric, labels

    def _child(self, name: str, kind: str, labels: Dict[str, str]) -> Any:
        entry = self._metrics.get(name)
        if entry is None:  # a name this version does not list: registered on first use
            entry = self._create(name, kind, tuple(sorted(labels)), "")
        metric, names = entry
        return metric.labels(**{k: labels.get(k, "") for k in names}) if names else metric

    def count(self, name: str, n: int = 1, **labels: str) -> None:
        self._child(name, COUNTER, labels).inc(n)

    def observe(self, name: str, seconds: float, **labels: str) -> None:
        self._child(name, HISTOGRAM, labels).observe(seconds)

    def gauge(self, name: str, value: float, **labels: str) -> None:
        self._child(name, "gauge", labels).set(value)

    def __repr__(self) -> str:
        return f"<PrometheusMetrics {len(self._metrics)} metrics>"
