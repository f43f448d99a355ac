"""A mixed load whose every operation goes into a topgun.testing.history.History, for chaos tests.

``ChaosLoad(writer_client, reader_client, keys)`` runs one writer greenlet per key (unique values
``key#n`` through ``set_async``, up to ``window`` writes of its key in flight, one every
``interval`` seconds; keys in ``hot`` as fast as the window allows, so several frames of one
key are in flight at once) and ``readers`` reader greenlets (``get`` of a random key). Keys in
``frozen`` stop being written at :meth:`freeze` (call it just before the fault): nothing
rewrites them afterwards, so their last acknowledged write must be what the final read finds.
:meth:`finish` stops the load, waits (bounded) for every write to settle, reads every key once
more and returns the checker's summary.

Each op's outcome is taken when its AsyncResult is set (``History.track``), so the summary's
"reordered" check sees the real acknowledgement order.
"""
from __future__ import annotations

import random
import time
from collections import deque
from typing import Any, Deque, Iterable, List, Optional, Set

import gevent
from gevent.event import AsyncResult, Event

from topgun.errors import ConfigurationError
from topgun.testing.history import OK, History, Op, Summary, check


class ChaosLoad:
    def __init__(self, writer: Any, reader: Any, keys: Iterable[str], *, frozen: Iterable[str] = (),
                 hot: Iterable[str] = (), map_name: str = "chaos", window: int = 3, interval: float = 0.02,
                 readers: int = 2,
                 read_interval: float = 0.005, timeout: float = 20.0) -> None:
        self.history = History()
        self.keys = list(keys)
        self.frozen: Set[str] = set(frozen)
        self.hot: Set[str] = set(hot)
        self.writes = writer.map(map_name)
        self.reads = reader.map(map_name)
        self.window, self.interval, self.timeout = window, interval, timeout
        self.readers, self.read_interval = readers, read_interval
        self._stop = Event()
        self._freeze = Event()
        self._greenlets: List[gevent.Greenlet] = []
        self._rng = random.Random(17)

    def start(self) -> "ChaosLoad":
        self._greenlets = [gevent.spawn(self._write, k) for k in self.keys]
        self._greenlets += [gevent.spawn(self._read, f"reader-{i}") for i in range(self.readers)]
        return self

    def _write(self, key: str) -> None:
        pending: Deque[AsyncResult] = deque()
        while not self._stop.is_set() and not (key in self.frozen and self._freeze.is_set()):
            while len(pending) >= self.window:
                self._settle(pending.popleft())
            op = self.history.invoke(f"writer:{key}", "write", key, self.history.next_value(key))
            pending.append(self.history.track(op, self.writes.set_async(key, op.value, timeout=self.timeout),
                                              fail_on=(ConfigurationError,)))
            self._stop.wait(0.0 if key in self.hot else self.interval)
        while pending:
            self._settle(pending.popleft())

    def _settle(self, result: AsyncResult) -> None:
        result.wait(self.timeout + 5.0)   # the outcome is recorded by History.track

    def _read(self, name: str) -> None:
        while not self._stop.is_set():
            key = self._rng.choice(self.keys)
            self.history.call(name, "read", key, lambda: self.reads.get(key, timeout=5.0))
            self._stop.wait(self.read_interval)

    def freeze(self) -> float:
        """Stop writing the frozen keys; returns the time (monotonic) it happened."""
        self._freeze.set()
        return time.monotonic()

    def acked_after(self, t: float, keys: Optional[Iterable[str]] = None) -> Set[str]:
        """Keys with an acknowledged write invoked after ``t``."""
        wanted = set(self.keys if keys is None else keys)
        return {op.key for op in self.history.ops
                if op.kind == "write" and op.status == OK and op.start > t and op.key in wanted}

    def wait_acked_after(self, t: float, keys: Iterable[str], timeout: float = 30.0, what: str = "") -> float:
        """Block until every key in ``keys`` has an acked write invoked after ``t``; returns how long after ``t``."""
        keys = set(keys)
        deadline = time.monotonic() + timeout
        while not keys <= self.acked_after(t, keys):
            if time.monotonic() > deadline:
                missing = sorted(keys - self.acked_after(t, keys))
                raise AssertionError(f"{what or 'writes'}: no acked write after the fault for {missing[:10]} "
                                     f"within {timeout}s\n{check(self.history)}")
            gevent.sleep(0.02)
        return time.monotonic() - t

    def finish(self, final_reader: Any = None) -> Summary:
        """Stop, let every write settle, read every key once more, and check the history."""
        self.stop()
        self.final_reads(final_reader)
        return check(self.history)

    def stop(self) -> None:
        """Stop the load and wait (bounded) for every write in flight to settle."""
        self._stop.set()
        gevent.joinall(self._greenlets, timeout=self.timeout + 10.0)

    def final_reads(self, final_reader: Any = None) -> None:
        """Read every key once more (process ``final``), through ``final_reader`` if given."""
        reads = final_reader.map(self.reads.name) if final_reader is not None else self.reads
        for key in self.keys:
            self.history.call("final", "read", key, lambda: reads.get(key, timeout=10.0))

    def op_count(self) -> int:
        return len(self.history)

    def ops_for(self, key: str) -> List[Op]:
        return [op for op in self.history.ops if op.key == key]
