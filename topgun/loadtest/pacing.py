"""How long a simulated user waits between calls (the ``wait_time`` of Locust, k6's ``sleep``).

A pacing is a callable ``pace(call_started, now) -> seconds``: given when the last call started
and the time now (both on the runner's monotonic clock), it returns how long to wait before the
next call. Pacings hold no per-user state, so one object serves every user.

- :func:`no_wait` (default): call again at once; throughput is then bounded by latency.
- :func:`constant`: a fixed pause after each call.
- :func:`between`: a uniformly random pause in ``[low, high]``.
- :func:`constant_rate`: at most ``per_second`` calls per user per second (the pause shrinks
  by the call's own duration, like Locust's ``constant_throughput``).
"""
from __future__ import annotations

import random
from typing import Callable

from ..errors import ConfigurationError

__all__ = ["Pacing", "no_wait", "constant", "between", "constant_rate", "parse_pacing"]

Pacing = Callable[[float, float], float]


def no_wait() -> Pacing:
    def pace(call_started: float, now: float) -> float:
        return 0.0
    return pace


def constant(seconds: float) -> Pacing:
    if seconds < 0:
        raise ConfigurationError(f"pause must be >= 0 s, got {seconds!r}")

    def pace(call_started: float, now: float) -> float:
        return seconds
    return pace


def between(low: float, high: float, rng: Callable[[float, float], float] = random.uniform) -> Pacing:
    if not 0 <= low <= high:
        raise ConfigurationError(f"between() needs 0 <= low <= high, got {low!r}, {high!r}")

    def pace(call_started: float, now: float) -> float:
        return rng(low, high)
    return pace


def constant_rate(per_second: float) -> Pacing:
    if per_second <= 0:
        raise ConfigurationError(f"rate must be > 0 calls/s, got {per_second!r}")
    interval = 1.0 / per_second

    def pace(call_started: float, now: float) -> float:
        return max(0.0, interval - (now - call_started))
    return pace


def parse_pacing(text: str) -> Pacing:
    """``none``, ``constant:0.01``, ``between:0.01:0.05`` or ``rate:100`` (calls/s per user)."""
    kind, _, rest = text.partition(":")
    args = [a for a in rest.split(":") if a]
    try:
        values = [float(a) for a in args]
    except ValueError:
        raise ConfigurationError(f"bad pacing {text!r}: arguments must be numbers") from None
    makers = {"none": (no_wait, 0), "constant": (constant, 1), "between": (between, 2), "rate": (constant_rate, 1)}
    if kind not in makers or len(values) != makers[kind][1]:
        raise ConfigurationError(f"bad pacing {text!r}: use none, constant:S, between:LOW:HIGH or rate:N")
    return makers[kind][0](*values)  # type: ignore[operator]
