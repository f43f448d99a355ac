"""Unit tests of the load tester's pieces: histogram, stats windows, pacing, thresholds, report."""
from __future__ import annotations

import pytest

from topgun.errors import ConfigurationError
from topgun.loadtest import (
    LatencyHistogram,
    Stats,
    between,
    constant,
    constant_rate,
    evaluate_thresholds,
    format_table,
    no_wait,
    parse_pacing,
    parse_threshold,
)
from topgun.loadtest.report import DEFAULT_THRESHOLDS, progress_line


def test_histogram_percentiles_within_two_percent() -> None:
    hist = LatencyHistogram()
    for i in range(1, 10_001):          # 0.1 ms .. 1000 ms, uniform
        hist.record(i / 10_000)
    for q, expected in ((50, 0.5), (95, 0.95), (99, 0.99)):
        assert hist.percentile(q) == pytest.approx(expected, rel=0.02)
    assert hist.count == 10_000
    assert hist.max_s == 1.0 and hist.min_s == 0.0001
    assert hist.mean_s == pytest.approx(0.50005, rel=1e-6)


def test_histogram_empty_and_clamped() -> None:
    hist = LatencyHistogram()
    assert hist.percentile(99) == 0.0
    hist.record(0.003)
    assert hist.percentile(50) == 0.003 and hist.percentile(100) == 0.003   # clamped to what was seen
    other = LatencyHistogram()
    other.record(0.010, times=3)
    hist.merge(other)
    assert hist.count == 4 and hist.percentile(99) == pytest.approx(0.010, rel=0.02)
    assert hist.summary_ms()["max_ms"] == 10.0


def test_stats_counts_ops_per_call_windows_and_errors() -> None:
    stats = Stats(start=100.0)
    stats.success(0.002, now=100.5, ops=10)
    stats.success(0.004, now=100.9, ops=10)
    stats.failure(TimeoutError("slow"), now=101.2, ops=10)
    stats.success(0.001, now=102.1, ops=10)
    assert stats.ops == 30 and stats.calls == 3 and stats.failed_ops == 10 and stats.errors == 1
    assert stats.success_rate == pytest.approx(0.75)
    assert stats.errors_by_type == {"TimeoutError": 1}
    timeline = stats.timeline()
    assert [row["ops_per_s"] for row in timeline] == [20.0, 0.0, 10.0]
    assert [row["errors"] for row in timeline] == [0, 1, 0]
    assert stats.peak_ops_per_s() == 20.0
    interval = stats.interval()
    assert interval["ops"] == 30 and interval["errors"] == 1
    assert stats.interval()["ops"] == 0           # reset after reading
    summary = stats.summary(elapsed_s=3.0)
    for key in ("ops_per_s", "success_rate", "p50_ms", "p95_ms", "p99_ms", "errors", "errors_by_type"):
        assert key in summary
    assert summary["ops_per_s"] == 10.0
    assert summary["first_errors"] == {"TimeoutError": "slow"}


def test_pacings() -> None:
    assert no_wait()(0.0, 5.0) == 0.0
    assert constant(0.25)(0.0, 5.0) == 0.25
    assert between(0.1, 0.2, rng=lambda a, b: (a + b) / 2)(0.0, 0.0) == pytest.approx(0.15)
    pace = constant_rate(10)                      # one call per 100 ms per user
    assert pace(1.0, 1.03) == pytest.approx(0.07)
    assert pace(1.0, 1.5) == 0.0                  # a slow call is not followed by a pause
    assert parse_pacing("rate:10")(1.0, 1.03) == pytest.approx(0.07)
    assert parse_pacing("none")(0.0, 1.0) == 0.0
    for bad in ("rate", "rate:x", "between:1", "sometimes:1", "rate:0"):
        with pytest.raises(ConfigurationError):
            parse_pacing(bad)


def test_thresholds() -> None:
    assert parse_threshold("ops_per_s>50000") == ("ops_per_s", ">", 50000.0)
    assert parse_threshold(" p95_ms <= 2.5 ") == ("p95_ms", "<=", 2.5)
    doc = {"ops_per_s": 1200.0, "p95_ms": 3.0, "lost": 0, "recovery_p95_s": None}
    results = evaluate_thresholds(["ops_per_s>1000", "ops_per_s>50000", "lost==0", "recovery_p95_s<5",
                                   "missing<1"], doc)
    assert [r["ok"] for r in results] == [True, False, True, False, False]
    assert results[1] == {"threshold": "ops_per_s>50000", "value": 1200.0, "ok": False}
    for bad in ("ops_per_s", "ops_per_s >> 3", "1<2", "p95_ms<fast"):
        with pytest.raises(ConfigurationError):
            parse_threshold(bad)
    for scenario in ("throughput", "failover", "rebalance", "single"):
        assert DEFAULT_THRESHOLDS[scenario]


def test_progress_line_and_table() -> None:
    line = progress_line(3.0, {"ops": 52_000, "errors": 1, "p50_ms": 1.0, "p95_ms": 2.0, "p99_ms": 3.0},
                         1.0, 4, "3/3 up")
    assert "52,000 ops/s" in line and "nodes 3/3 up" in line and "total 4" in line
    doc = {"scenario": "failover", "target": {"kind": "embedded-processes"}, "ops_per_s": 1000.0,
           "recovery_s": [0.5, None], "recovery_p95_s": 0.5, "checked_keys": 10, "lost": 0,
           "events": [{"t": 1.0, "name": "killed n2"}],
           "thresholds": [{"threshold": "lost==0", "value": 0, "ok": True}]}
    table = format_table(doc)
    assert "recovery s per kill" in table and "0.500, -" in table
    assert "PASS  lost==0" in table and "killed n2" in table


def test_cpu_figures_leave_out_processes_that_changed() -> None:
    from topgun.loadtest.machine import cpu_figures, process_cpu_s
    before = {("client", None): 10.0, ("n1", 100): 5.0, ("n2", 200): 5.0}
    after = {("client", None): 14.0, ("n1", 100): 7.0, ("n2", 300): 0.5}   # n2 was restarted: new pid
    figures = cpu_figures(before, after, elapsed_s=4.0)
    assert figures["cpu_cores"] == {"client": 1.0, "n1": 0.5}
    assert process_cpu_s() is not None and process_cpu_s(pid=2 ** 22 + 12345) is None
