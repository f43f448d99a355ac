"""Metrics hooks: what the client counts and times, reported to any metrics system.

Pass ``TopGunClient(..., metrics=sink)`` an object with three methods (the :class:`Metrics`
protocol); the client calls them as things happen:

- ``count(name, n, **labels)``: a counter went up by ``n``;
- ``observe(name, seconds, **labels)``: one duration;
- ``gauge(name, value, **labels)``: a level, as it is now.

The names, their kinds and labels are in :data:`METRICS` (and in ``docs/reference.md``). Label
values are short strings from a small set (an operation type, an error class name), never a
key, a value or a token. Hooks sit where the work is done once per request, per OP_BATCH, per
connect or per map: never once per write; without ``metrics=`` each is one ``is None`` test.
A sink's exception is logged (once per metric name, at WARNING) and swallowed: a broken
metrics system must not break writes.

Ready-made sinks: :class:`RecordingMetrics` (in memory, for tests), and as extras
``topgun.contrib.otel.OpenTelemetryMetrics`` (``topgun[otel]``) and
``topgun.contrib.prometheus.PrometheusMetrics`` (``topgun[prometheus]``).

Not in here: exporting or aggregating (the metrics system does that), the hook call sites
(the engine, the request runner, the providers).
"""
from __future__ import annotations

import logging
from typing import Dict, List, Optional, Protocol, Set, Tuple, runtime_checkable

log = logging.getLogger(__name__)

__all__ = ["Metrics", "METRICS", "RecordingMetrics", "guarded", "COUNTER", "HISTOGRAM", "GAUGE"]

COUNTER, HISTOGRAM, GAUGE = "counter", "histogram", "gauge"

#: name -> (kind, labels, what it measures). Durations are seconds.
METRICS: Dict[str, Tuple[str, Tuple[str, ...], str]] = {
    "topgun.requests": (COUNTER, ("op", "outcome"),
                        "requests (reads, queries, pings) finished; outcome is ok or the error class name"),
    "topgun.request.duration": (HISTOGRAM, ("op",), "seconds from a request's call to its answer, retries included"),
    "topgun.retries": (COUNTER, ("error",), "request attempts retried after a retryable error, both modes"),
    "topgun.writes.acked": (COUNTER, (), "writes acknowledged by the server"),
    "topgun.writes.failed": (COUNTER, ("error",), "writes that ended in an error (deadline, closed, rejected)"),
    "topgun.writes.resent": (COUNTER, (), "writes sent again after a lost connection, overload or lost frame"),
    "topgun.writes.in_flight": (GAUGE, (), "writes sent and not yet acknowledged"),
    "topgun.write.batch.duration": (HISTOGRAM, (), "seconds from sending one OP_BATCH to its OP_ACK"),
    "topgun.connects": (COUNTER, (), "connections opened (handshake and authentication done)"),
    "topgun.reconnects": (COUNTER, (), "connections opened again after one was lost"),
    "topgun.connect.failures": (COUNTER, ("error",), "connection attempts that failed, by error class"),
    "topgun.auth.refusals": (COUNTER, (), "tokens the server refused (AUTH_FAIL, or no token)"),
    "topgun.map.version": (GAUGE, (), "the version of the partition map the client routes with (cluster mode)"),
}


@runtime_checkable
class Metrics(Protocol):
    """What ``metrics=`` takes. Calls come from the client's hub: keep them quick, never blocking."""

    def count(self, name: str, n: int = 1, **labels: str) -> None: ...

    def observe(self, name: str, seconds: float, **labels: str) -> None: ...

    def gauge(self, name: str, value: float, **labels: str) -> None: ...


LabelKey = Tuple[str, Tuple[Tuple[str, str], ...]]


def _key(name: str, labels: Dict[str, str]) -> LabelKey:
    return name, tuple(sorted(labels.items()))


class RecordingMetrics:
    """A sink that keeps everything in memory: counters summed, durations listed, gauges' last values.

    ``counter(name, **labels)``, ``observations(name, **labels)`` and ``last(name, **labels)`` read
    them back; with no labels given they add up (or list) over every label set.
    """

    def __init__(self) -> None:
        self.counts: Dict[LabelKey, int] = {}
        self.durations: Dict[LabelKey, List[float]] = {}
        self.gauges: Dict[LabelKey, float] = {}

    def count(self, name: str, n: int = 1, **labels: str) -> None:
        key = _key(name, labels)
        self.counts[key] = self.counts.get(key, 0) + n

    def observe(self, name: str, seconds: float, **labels: str) -> None:
        self.durations.setdefault(_key(name, labels), []).append(seconds)

    def gauge(self, name: str, value: float, **labels: str) -> None:
        self.gauges[_key(name, labels)] = value

    def counter(self, name: str, **labels: str) -> int:
        return sum(v for k, v in self.counts.items() if _matches(k, name, labels))

    def observations(self, name: str, **labels: str) -> List[float]:
        return [x for k, v in self.durations.items() if _matches(k, name, labels) for x in v]

    def last(self, name: str, **labels: str) -> Optional[float]:
        found = [v for k, v in self.gauges.items() if _matches(k, name, labels)]
        return found[-1] if found else None

    def names(self) -> Set[str]:
        return {k[0] for k in (*self.counts, *self.durations, *self.gauges)}

    def __repr__(self) -> str:
        return (f"<RecordingMetrics {len(self.counts)} counters {len(self.durations)} histograms "
                f"{len(self.gauges)} gauges>")


def _matches(key: LabelKey, name: str, labels: Dict[str, str]) -> bool:
    return key[0] == name and all(dict(key[1]).get(k) == v for k, v in labels.items())


class _Guarded:
    """A user's sink whose exceptions are logged once per metric name and swallowed."""

    def __init__(self, inner: Metrics) -> None:
        self.inner = inner
        self._failed: Set[str] = set()

    def count(self, name: str, n: int = 1, **labels: str) -> None:
        try:
            self.inner.count(name, n, **labels)
        except Exception:
            self._failure(name)

    def observe(self, name: str, seconds: float, **labels: str) -> None:
        try:
            self.inner.observe(name, seconds, **labels)
        except Exception:
            self._failure(name)

    def gauge(self, name: str, value: float, **labels: str) -> None:
        try:
            self.inner.gauge(name, value, **labels)
        except Exception:
            self._failure(name)

    def _failure(self, name: str) -> None:
        if name not in self._failed:
            self._failed.add(name)
            log.warning("the metrics sink %r failed on %s; ignoring its errors for this name", self.inner, name,
                        exc_info=True)

    def __repr__(self) -> str:
        return f"<guarded {self.inner!r}>"


def guarded(metrics: Optional[Metrics]) -> Optional[Metrics]:
    """``metrics`` wrapped so that its exceptions never reach the client (None stays None)."""
    if metrics is None or isinstance(metrics, _Guarded):
        return metrics
    return _Guarded(metrics)
