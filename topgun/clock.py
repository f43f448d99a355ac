"""Time, in one place.

Only this module reads the wall clock, the monotonic clock or sleeps. Everything else is
handed a :class:`Clock`, so tests can pass a :class:`FakeClock` and move time by hand.
"""
from __future__ import annotations

import time
from typing import Protocol

import gevent

__all__ = ["Clock", "GeventClock", "FakeClock"]


class Clock(Protocol):
    def monotonic(self) -> float: ...
    def now_ms(self) -> int: ...
    def sleep(self, seconds: float) -> None: ...


class GeventClock:
    """The real clock; sleeping yields to other greenlets."""

    def monotonic(self) -> float:
        return time.monotonic()

    def now_ms(self) -> int:
        return int(time.time() * 1000)

    def sleep(self, seconds: float) -> None:
        gevent.sleep(seconds)

    def __repr__(self) -> str:
        return "<GeventClock>"


class FakeClock:
    """Time moves only when the test says so (``sleep`` or ``advance``)."""

    def __init__(self, start_ms: int = 1_700_000_000_000) -> None:
        self.t = 0.0
        self.start_ms = start_ms

    def monotonic(self) -> float:
        return self.t

    def now_ms(self) -> int:
        return self.start_ms + int(self.t * 1000)

    def sleep(self, seconds: float) -> None:
        self.t += max(0.0, seconds)

    advance = sleep

    def __repr__(self) -> str:
        return f"<FakeClock t={self.t:.3f}>"
