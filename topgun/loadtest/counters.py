"""The ``counter`` scenario's workload: users increment a few shared PN counters, then every
counter is checked against the increments that were acknowledged.

Each call is one ``counter.increment(1)`` on the counter ``<name>-<user % counters>``, so several
users (and, through the shared client, one actor) hit each counter concurrently. ``attempted``
and ``acked`` count calls per counter. After the run a fresh client reads each counter: the
value must be at least the acknowledged increments (``lost`` counts those short) and at most
the attempted ones (``overcounted`` counts those above: a resend counted twice). An increment
that timed out may still be counted, since the client keeps its totals and sends them again.

Not here: running users (``runner.py``), the scenario around it (``scenarios.py``).
"""
from __future__ import annotations

from typing import Any, Dict

from .runner import User

__all__ = ["CounterWorkload", "verify_counters"]


class CounterWorkload:
    """Users increment ``counters`` shared counters named ``<name>-<i>``."""

    def __init__(self, client: Any, *, name: str, users: int, counters: int = 8) -> None:
        self.names = [f"{name}-{i}" for i in range(max(1, min(counters, users)))]
        self.handles = [client.counter(n) for n in self.names]
        self.attempted: Dict[str, int] = dict.fromkeys(self.names, 0)
        self.acked: Dict[str, int] = dict.fromkeys(self.names, 0)

    def task(self, user: User) -> None:
        i = user.index % len(self.names)
        name = self.names[i]
        self.attempted[name] += 1
        self.handles[i].increment(1)
        self.acked[name] += 1


def verify_counters(client: Any, workload: CounterWorkload, *, timeout: float = 10.0) -> Dict[str, Any]:
    """Read every counter with ``client`` (a fresh one) and compare with the counts."""
    lost = over = errors = 0
    values: Dict[str, Any] = {}
    for name in workload.names:
        try:
            value = client.counter(name).get(timeout=timeout)
        except Exception as exc:
            values[name] = f"{type(exc).__name__}: {exc}"
            errors += 1
            continue
        values[name] = value
        lost += value < workload.acked[name]
        over += value > workload.attempted[name]
    return {"counters": values, "increments_acked": sum(workload.acked.values()),
            "increments_attempted": sum(workload.attempted.values()),
            "lost": lost, "overcounted": over, "read_errors": errors,
            "verified_keys": len(workload.names) - lost - over - errors, "checked_keys": len(workload.names)}
