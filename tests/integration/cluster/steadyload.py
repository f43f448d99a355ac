"""A steady, pipelined write load for failover tests, and the measurements taken from it.

``SteadyLoad(client, keys)`` runs one greenlet per key. Each writes ``{"seq": n}`` for n = 1, 2, ...
with ``set_async``, keeping up to ``window`` writes of its key in flight and pacing submissions
``interval`` seconds apart. Every write's submit and ack times are kept, so a test can check that
every write was acknowledged (``failures`` is empty), that each key's acks came in sequence
order, read back the last value, and measure how long after a kill the keys of the killed node
took to accept writes again (:meth:`failover_times`).

Shared by tests/integration/cluster (EmbeddedCluster), tests/system/cluster (processes) and
benchmarks/failover.py.
"""
from __future__ import annotations

import time
from collections import deque
from typing import Any, Deque, Dict, Iterable, List, Optional, Tuple

import gevent
from gevent.event import AsyncResult, Event

Ack = Tuple[int, float, float]          # (seq, submitted at, acknowledged at), time.monotonic()


class SteadyLoad:
    def __init__(self, client: Any, keys: Iterable[str], *, map_name: str = "load", window: int = 3,
                 interval: float = 0.01, timeout: float = 30.0) -> None:
        self.client = client
        self.keys = list(keys)
        self.map = client.map(map_name)
        self.window = window
        self.interval = interval
        self.timeout = timeout
        self.acks: Dict[str, List[Ack]] = {k: [] for k in self.keys}
        self.last_seq: Dict[str, int] = {k: 0 for k in self.keys}
        self.failures: List[Tuple[str, int, BaseException]] = []
        self._stop = Event()
        self._greenlets: List[gevent.Greenlet] = []

    def start(self) -> "SteadyLoad":
        self._greenlets = [gevent.spawn(self._run, k) for k in self.keys]
        return self

    def _run(self, key: str) -> None:
        pending: Deque[Tuple[int, float, AsyncResult]] = deque()
        seq = 0
        while not self._stop.is_set():
            while len(pending) >= self.window:
                self._settle(key, pending.popleft())
            seq += 1
            pending.append((seq, time.monotonic(), self.map.set_async(key, {"seq": seq}, timeout=self.timeout)))
            self.last_seq[key] = seq
            self._stop.wait(self.interval)
        while pending:
            self._settle(key, pending.popleft())

    def _settle(self, key: str, item: Tuple[int, float, AsyncResult]) -> None:
        seq, submitted, result = item
        try:
            result.get(timeout=self.timeout + 5.0)
        except BaseException as exc:  # every failure is a lost write: the test reports it
            self.failures.append((key, seq, exc))
            return
        self.acks[key].append((seq, submitted, time.monotonic()))

    def stop(self, timeout: Optional[float] = None) -> None:
        """Stop submitting and wait until every submitted write is acknowledged or failed."""
        self._stop.set()
        gevent.joinall(self._greenlets, timeout=timeout if timeout is not None else self.timeout + 10.0)

    @property
    def total_acked(self) -> int:
        return sum(len(a) for a in self.acks.values())

    def acked_since(self, t: float) -> int:
        return sum(1 for a in self.acks.values() for _, _, at in a if at >= t)

    def out_of_order(self) -> List[str]:
        """Keys whose acknowledgements did not arrive in sequence order."""
        bad = []
        for key, acks in self.acks.items():
            seqs = [s for s, _, _ in sorted(acks, key=lambda a: a[2])]
            if seqs != sorted(seqs):
                bad.append(key)
        return bad

    def failover_times(self, keys: Iterable[str], killed_at: float) -> Dict[str, float]:
        """For each key: seconds from ``killed_at`` to the first ack of a write submitted after it."""
        out = {}
        for key in keys:
            later = [at for _, sub, at in self.acks[key] if sub >= killed_at]
            if later:
                out[key] = min(later) - killed_at
        return out


def percentile(values: List[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, int(round(p / 100.0 * (len(ordered) - 1)))))
    return ordered[index]


def wait_for(check: Any, timeout: float = 10.0, interval: float = 0.01, what: str = "condition") -> None:
    """Poll ``check()`` until it is true; AssertionError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout}s")
        gevent.sleep(interval)
