"""Hybrid logical clock timestamps (the algorithm of the TS and Rust cores).

Ordering is (millis, counter, node_id), node ids compared as plain strings.
The wall clock is passed in (``now_ms``), so this module never reads time itself.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, NamedTuple

__all__ = ["Timestamp", "HLC", "MAX_DRIFT_MS"]

MAX_DRIFT_MS = 60_000


class Timestamp(NamedTuple):
    """An HLC timestamp; tuples compare in the protocol's order."""

    millis: int
    counter: int
    node_id: str

    def to_wire(self) -> Dict[str, Any]:
        return {"millis": self.millis, "counter": self.counter, "nodeId": self.node_id}

    @classmethod
    def from_wire(cls, d: Dict[str, Any]) -> "Timestamp":
        return cls(int(d["millis"]), int(d["counter"]), str(d["nodeId"]))

    def __str__(self) -> str:
        return f"{self.millis}:{self.counter}:{self.node_id}"

    @classmethod
    def parse(cls, text: str) -> "Timestamp":
        millis, counter, node_id = text.split(":", 2)
        return cls(int(millis), int(counter), node_id)


class HLC:
    """Issues strictly increasing timestamps for one node."""

    def __init__(self, node_id: str, now_ms: Callable[[], int]) -> None:
        if ":" in node_id:
            raise ValueError("an HLC node id must not contain ':'")
        self.node_id = node_id
        self._now_ms = now_ms
        self.last_millis = 0
        self.counter = 0
        self.drift_warnings = 0

    def now(self) -> Timestamp:
        wall = self._now_ms()
        if wall > self.last_millis:
            self.last_millis, self.counter = wall, 0
        else:
            self.counter += 1
        return Timestamp(self.last_millis, self.counter, self.node_id)

    def now_range(self, n: int) -> int:
        """Issue ``n`` timestamps at once: ``(last_millis, first + i, node_id)`` for i in 0..n-1,
        where ``first`` is returned; the same values ``n`` calls of :meth:`now` within one
        millisecond give (later ones come after all of them)."""
        first = self.now().counter
        self.counter += n - 1
        return first

    def update(self, remote: Timestamp) -> None:
        """Merge a timestamp seen from elsewhere, so later ``now()`` values are after it."""
        wall = self._now_ms()
        if remote.millis - wall > MAX_DRIFT_MS:
            self.drift_warnings += 1
        top = max(self.last_millis, wall, remote.millis)
        if top == self.last_millis and top == remote.millis:
            self.counter = max(self.counter, remote.counter) + 1
        elif top == self.last_millis:
            self.counter += 1
        elif top == remote.millis:
            self.counter = remote.counter + 1
        else:
            self.counter = 0
        self.last_millis = top

    def __repr__(self) -> str:
        return f"<HLC {self.node_id} {self.last_millis}:{self.counter}>"
