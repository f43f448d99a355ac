"""OpenTelemetry metrics for topgun: ``TopGunClient(..., metrics=OpenTelemetryMetrics())``.

Install the extra: ``pip install topgun[otel]`` (``opentelemetry-api``; add the SDK and an
exporter of your choice to send the numbers anywhere). Each name of
:data:`topgun.metrics.METRICS` becomes one instrument of the meter, created on first use:
counters as ``Counter``, durations as ``Histogram`` (unit ``s``), levels as ``Gauge``; the
labels become attributes. Without a configured ``MeterProvider`` the API's no-op meter is used
and nothing is recorded.

Not in here: configuring the SDK, readers or exporters (the application does that once).
"""
from __future__ import annotations

from typing import Any, Dict, Optional

from opentelemetry import metrics as otel_metrics

from topgun import __version__
from topgun.metrics import METRICS

__all__ = ["OpenTelemetryMetrics"]


class OpenTelemetryMetrics:
    """A :class:`topgun.metrics.Metrics` sink over an OpenTelemetry ``Meter``.

    Args:
        meter: the meter to create instruments on; default: ``get_meter("topgun")`` of
            ``meter_provider`` (or of the global provider).
        meter_provider: used only when ``meter`` is not given.
    """

    def __init__(self, meter: Optional[Any] = None, *, meter_provider: Optional[Any] = None) -> None:
        self.meter = meter if meter is not None else otel_metrics.get_meter(
            "topgun", __version__, meter_provider=meter_provider)
        self._instruments: Dict[str, Any] = {}

    def _instrument(self, name: str, kind: str) -> Any:
        instrument = self._instruments.get(name)
        if instrument is None:
            description = METRICS[name][2] if name in METRICS else ""
            if kind == "counter":
                instrument = self.meter.create_counter(name, description=description)
            elif kind == "histogram":
                instrument = self.meter.create_histogram(name, unit="s", description=description)
            else:
                instrument = self.meter.create_gauge(name, description=description)
            self._instruments[name] = instrument
        return instrument

    def count(self, name: str, n: int = 1, **labels: str) -> None:
        self._instrument(name, "counter").add(n, labels or None)

    def observe(self, name: str, seconds: float, **labels: str) -> None:
        self._instrument(name, "histogram").record(seconds, labels or None)

    def gauge(self, name: str, value: float, **labels: str) -> None:
        self._instrument(name, "gauge").set(value, labels or None)

    def __repr__(self) -> str:
        return f"<OpenTelemetryMetrics instruments={len(self._instruments)}>"
