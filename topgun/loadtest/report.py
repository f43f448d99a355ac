"""Thresholds (k6 style), the live progress line and the final table.

A threshold is ``NAME OP NUMBER`` over a top-level figure of the result document, for example
``ops_per_s>50000``, ``p95_ms<50``, ``success_rate>=0.99``, ``lost==0``. A threshold on a figure
that is missing or ``None`` fails (a scenario that could not measure something has not met it).
"""
from __future__ import annotations

import operator
import re
from typing import Any, Callable, Dict, Iterable, List, Tuple

from ..errors import ConfigurationError

__all__ = ["DEFAULT_THRESHOLDS", "parse_threshold", "evaluate_thresholds", "progress_line", "format_table"]

# The reference project's k6 budgets, per scenario.
DEFAULT_THRESHOLDS: Dict[str, Tuple[str, ...]] = {
    "throughput": ("success_rate>=0.99", "p95_ms<50"),
    "single": ("success_rate>=0.99", "p95_ms<50"),
    "failover": ("success_rate>=0.95", "recovery_p95_s<5", "unrecovered_kills==0", "lost==0", "read_errors==0"),
    "rebalance": ("success_rate>=0.98", "p95_ms<100", "lost==0", "read_errors==0"),
    "counter": ("success_rate>=0.99", "lost==0", "overcounted==0", "read_errors==0"),
}

_OPS: Dict[str, Callable[[Any, Any], bool]] = {
    "<=": operator.le, ">=": operator.ge, "==": operator.eq, "!=": operator.ne, "<": operator.lt, ">": operator.gt}
_PATTERN = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(<=|>=|==|!=|<|>)\s*([-+0-9.eE_]+)\s*$")


def parse_threshold(text: str) -> Tuple[str, str, float]:
    """``"p95_ms<50"`` -> ``("p95_ms", "<", 50.0)``.

    Raises:
        ConfigurationError: not of the form NAME OP NUMBER.
    """
    match = _PATTERN.match(text)
    if not match:
        raise ConfigurationError(f"bad threshold {text!r}: write NAME OP NUMBER, e.g. 'ops_per_s>50000'")
    name, op, number = match.groups()
    try:
        value = float(number.replace("_", ""))
    except ValueError:
        raise ConfigurationError(f"bad threshold {text!r}: {number!r} is not a number") from None
    return name, op, value


def evaluate_thresholds(thresholds: Iterable[str], doc: Dict[str, Any]) -> List[Dict[str, Any]]:
    """One ``{"threshold", "value", "ok"}`` per threshold, in order."""
    results = []
    for text in thresholds:
        name, op, limit = parse_threshold(text)
        value = doc.get(name)
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and _OPS[op](value, limit)
        results.append({"threshold": text.strip(), "value": value, "ok": bool(ok)})
    return results


def progress_line(elapsed: float, figures: Dict[str, float], tick: float, total_errors: int, nodes: str) -> str:
    rate = figures["ops"] / tick if tick else 0.0
    return (f"[{elapsed:6.1f}s] {rate:>10,.0f} ops/s  errors {int(figures['errors']):>4} (total {total_errors})"
            f"  p50 {figures['p50_ms']:7.2f}  p95 {figures['p95_ms']:7.2f}  p99 {figures['p99_ms']:7.2f} ms"
            f"  nodes {nodes}")


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 100 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def format_table(doc: Dict[str, Any]) -> str:
    """The final summary, one figure per line, then the thresholds."""
    rows: List[Tuple[str, Any]] = [
        ("scenario", doc.get("scenario")),
        ("target", doc.get("target", {}).get("kind")),
        ("duration s", doc.get("duration_s")),
        ("acknowledged ops", doc.get("ops")),
        ("ops/s", doc.get("ops_per_s")),
        ("peak ops/s (1 s window)", doc.get("peak_ops_per_s")),
        ("calls/s", doc.get("calls_per_s")),
        ("success rate", doc.get("success_rate")),
        ("errors (failed calls)", doc.get("errors")),
        ("latency p50 ms", doc.get("p50_ms")),
        ("latency p95 ms", doc.get("p95_ms")),
        ("latency p99 ms", doc.get("p99_ms")),
        ("latency max ms", doc.get("max_ms")),
    ]
    cpu = doc.get("cpu", {})
    if cpu.get("cpu_cores"):
        rows.append(("CPU cores used", ", ".join(f"{k} {v:.2f}" for k, v in cpu["cpu_cores"].items())))
    if cpu.get("cpu_us_per_op"):
        rows.append(("CPU us per op", ", ".join(f"{k} {v:.1f}" for k, v in cpu["cpu_us_per_op"].items())
                     + f" (total {cpu['cpu_us_per_op_total']:.1f})"))
    if cpu.get("loadavg_end"):
        rows.append(("load average (end)", " ".join(str(x) for x in cpu["loadavg_end"])))
    if doc.get("errors_by_type"):
        rows.append(("errors by type", ", ".join(f"{k} {v}" for k, v in doc["errors_by_type"].items())))
    if "map_version_after" in doc:
        rows.append(("partition map version", f"{doc.get('map_version_before')} -> {doc.get('map_version_after')}"))
    if doc.get("scenario") == "failover":
        rows += [("recovery s per kill", ", ".join(_fmt(r) for r in doc.get("recovery_s", [])) or "-"),
                 ("recovery p50 s (users)", doc.get("recovery_p50_s")),
                 ("recovery p95 s (users)", doc.get("recovery_p95_s"))]
    if doc.get("checked_keys") is not None:
        rows += [("acknowledged keys checked", doc.get("checked_keys")), ("lost", doc.get("lost")),
                 ("read errors", doc.get("read_errors"))]
    for event in doc.get("events", []):
        rows.append((f"event at {event['t']:.1f}s", event.get("name") + ("" if event.get("ok", True) else
                                                                          f" FAILED: {event.get('error')}")))
    width = max(len(name) for name, _ in rows)
    lines = [f"  {name:<{width}}  {_fmt(value)}" for name, value in rows]
    for t in doc.get("thresholds", []):
        lines.append(f"  {'PASS' if t['ok'] else 'FAIL'}  {t['threshold']}  (got {_fmt(t['value'])})")
    return "\n".join(lines)
