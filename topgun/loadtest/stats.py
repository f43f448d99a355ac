"""Load-test statistics: a latency histogram, per-second ops windows and error counts.

The contract: :class:`Stats` is fed by the runner (``success``/``failure`` with the call's
latency and the number of ops it carried) and read by reporters (``interval()`` for live
progress, ``summary()`` for the final figures). It never reads a clock itself: callers pass
``now`` (seconds on the runner's monotonic clock), so tests can drive it by hand.

Not in here: printing, thresholds (see :mod:`topgun.loadtest.report`).
"""
from __future__ import annotations

import math
from collections import Counter
from typing import Any, Dict, List, Optional

__all__ = ["LatencyHistogram", "Stats", "bucket_of"]

# Log-spaced buckets: 2% relative width, from 1 us up. Recording is one log() and a dict bump.
_GROWTH = 1.02
_LOG_GROWTH = math.log(_GROWTH)
_MIN_S = 1e-6


def bucket_of(seconds: float) -> int:
    """The histogram bucket of a latency."""
    return int(math.log(max(seconds, _MIN_S) / _MIN_S) / _LOG_GROWTH)


class LatencyHistogram:
    """Latencies in log-spaced buckets (about 1% error on any percentile)."""

    __slots__ = ("_buckets", "count", "total_s", "min_s", "max_s")

    def __init__(self) -> None:
        self._buckets: Dict[int, int] = {}
        self.count = 0
        self.total_s = 0.0
        self.min_s = math.inf
        self.max_s = 0.0

    def record(self, seconds: float, times: int = 1) -> None:
        self.add(bucket_of(seconds), seconds, times)

    def add(self, index: int, seconds: float, times: int = 1) -> None:
        """Record into a bucket computed once with :func:`bucket_of` (one log() for several histograms)."""
        self._buckets[index] = self._buckets.get(index, 0) + times
        self.count += times
        self.total_s += seconds * times
        if seconds < self.min_s:
            self.min_s = seconds
        if seconds > self.max_s:
            self.max_s = seconds

    def merge(self, other: "LatencyHistogram") -> None:
        for index, n in other._buckets.items():
            self._buckets[index] = self._buckets.get(index, 0) + n
        self.count += other.count
        self.total_s += other.total_s
        self.min_s = min(self.min_s, other.min_s)
        self.max_s = max(self.max_s, other.max_s)

    def percentile(self, q: float) -> float:
        """The latency (seconds) at or below which ``q`` percent of recorded calls fall; 0.0 if empty."""
        if not self.count:
            return 0.0
        rank = max(1, math.ceil(self.count * q / 100.0))
        seen = 0
        for index in sorted(self._buckets):
            seen += self._buckets[index]
            if seen >= rank:
                # The bucket's geometric middle, clamped to what was really seen.
                mid = _MIN_S * _GROWTH ** (index + 0.5)
                return min(max(mid, self.min_s), self.max_s)
        return self.max_s

    @property
    def mean_s(self) -> float:
        return self.total_s / self.count if self.count else 0.0

    def summary_ms(self) -> Dict[str, float]:
        """p50/p95/p99/max/mean in milliseconds, rounded to microseconds."""
        def ms(s: float) -> float:
            return round(s * 1000.0, 3)
        return {"p50_ms": ms(self.percentile(50)), "p95_ms": ms(self.percentile(95)),
                "p99_ms": ms(self.percentile(99)), "max_ms": ms(self.max_s if self.count else 0.0),
                "mean_ms": ms(self.mean_s)}

    def __repr__(self) -> str:
        return f"<LatencyHistogram n={self.count} p50={self.percentile(50) * 1000:.2f}ms>"


class _Window:
    __slots__ = ("ops", "calls", "failed_ops", "errors", "latency")

    def __init__(self) -> None:
        self.ops = 0
        self.calls = 0
        self.failed_ops = 0
        self.errors = 0
        self.latency = LatencyHistogram()


class Stats:
    """Counters for one load-test run.

    Args:
        start: the run's start on the caller's monotonic clock; window and timeline
            offsets are measured from it.
        window_s: width of the timeline buckets (ops/s windows).
    """

    def __init__(self, start: float = 0.0, window_s: float = 1.0) -> None:
        self.start = start
        self.window_s = window_s
        self.latency = LatencyHistogram()
        self.ops = 0            # acknowledged ops
        self.calls = 0          # successful calls
        self.failed_ops = 0     # ops in calls that raised
        self.failed_calls = 0
        self.errors_by_type: Counter[str] = Counter()
        self.first_errors: Dict[str, str] = {}
        self._timeline: Dict[int, _Window] = {}
        self._interval = _Window()

    def _window(self, now: float) -> _Window:
        index = int((now - self.start) / self.window_s) if now > self.start else 0
        window = self._timeline.get(index)
        if window is None:
            window = self._timeline[index] = _Window()
        return window

    def success(self, latency_s: float, now: float, ops: int = 1) -> None:
        """One call that was acknowledged; it carried ``ops`` writes."""
        # Three histograms get this latency: compute its bucket once (the harness's own cost
        # is part of the client process's CPU, so it is kept small).
        index = bucket_of(latency_s)
        self.latency.add(index, latency_s)
        self.ops += ops
        self.calls += 1
        for window in (self._window(now), self._interval):
            window.ops += ops
            window.calls += 1
            window.latency.add(index, latency_s)

    def failure(self, error: BaseException, now: float, ops: int = 1) -> None:
        """One call that raised; its ``ops`` count as failed (not acknowledged)."""
        name = type(error).__name__
        self.errors_by_type[name] += 1
        self.first_errors.setdefault(name, str(error)[:300])
        self.failed_ops += ops
        self.failed_calls += 1
        for window in (self._window(now), self._interval):
            window.failed_ops += ops
            window.errors += 1

    @property
    def errors(self) -> int:
        return self.failed_calls

    @property
    def attempted_ops(self) -> int:
        return self.ops + self.failed_ops

    @property
    def success_rate(self) -> float:
        """Acknowledged ops over attempted ops (1.0 when nothing was attempted)."""
        attempted = self.attempted_ops
        return self.ops / attempted if attempted else 1.0

    def interval(self) -> Dict[str, float]:
        """Figures since the previous ``interval()`` call (for live progress), then reset."""
        window, self._interval = self._interval, _Window()
        out: Dict[str, float] = {"ops": window.ops, "calls": window.calls, "errors": window.errors,
                                 "failed_ops": window.failed_ops}
        out.update(window.latency.summary_ms())
        return out

    def timeline(self) -> List[Dict[str, Any]]:
        """One row per window: t (s from start), ops_per_s, errors, p50/p95/p99 ms."""
        if not self._timeline:
            return []
        rows = []
        for index in range(max(self._timeline) + 1):
            window = self._timeline.get(index) or _Window()
            row: Dict[str, Any] = {"t": round(index * self.window_s, 3),
                                   "ops_per_s": round(window.ops / self.window_s, 1),
                                   "errors": window.errors, "failed_ops": window.failed_ops}
            lat = window.latency.summary_ms()
            row.update({k: lat[k] for k in ("p50_ms", "p95_ms", "p99_ms")})
            rows.append(row)
        return rows

    def summary(self, elapsed_s: float) -> Dict[str, Any]:
        """The run's figures over ``elapsed_s`` seconds (the JSON report's core keys)."""
        out: Dict[str, Any] = {
            "duration_s": round(elapsed_s, 3),
            "ops": self.ops,
            "ops_per_s": round(self.ops / elapsed_s, 1) if elapsed_s > 0 else 0.0,
            "calls": self.calls,
            "calls_per_s": round(self.calls / elapsed_s, 1) if elapsed_s > 0 else 0.0,
            "attempted_ops": self.attempted_ops,
            "failed_ops": self.failed_ops,
            "success_rate": round(self.success_rate, 6),
            "errors": self.errors,
            "errors_by_type": dict(self.errors_by_type),
            "first_errors": dict(self.first_errors),
        }
        out.update(self.latency.summary_ms())
        return out

    def peak_ops_per_s(self, skip_last: bool = True) -> Optional[float]:
        """The best full window's ops/s (the last, partial window is skipped)."""
        rows = self.timeline()
        if skip_last and len(rows) > 1:
            rows = rows[:-1]
        return max((r["ops_per_s"] for r in rows), default=None)

    def __repr__(self) -> str:
        return f"<Stats ops={self.ops} errors={self.errors} p95={self.latency.percentile(95) * 1000:.2f}ms>"
