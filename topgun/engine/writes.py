"""The engine's write records and its send queue.

``PendingWrite`` is one write on its way. It keeps the write's fields, not its wire dict: the
dicts (``topgun.protocol.fastpath``) are built when the frame is encoded and die straight
after, so the only objects a queued write keeps alive are itself and its key tuple. (With tens of thousands of writes
queued, every extra long-lived object per write shows up as garbage-collector time.) Its
``AsyncResult`` is made only when someone asks for one; a blocking caller waits on a gevent
``Waiter`` instead (:meth:`PendingWrite.wait_done`), the cheapest way to park a greenlet, and
the callers of every write finished in one turn of the event loop (all of an acknowledged
frame) are woken by one loop callback.

``WriteQueue`` holds the writes not yet sent, one FIFO per partition, visited round-robin.
Frames built from it touch few partitions, which is what the server's cost per write
depends on (it runs one task per partition a frame touches), and no sort is needed.
A key's writes share one FIFO, so they leave in the order they came.

Not in here: sending, acks and deadlines (``engine.py``).
"""
from __future__ import annotations

from bisect import bisect_left
from collections import deque
from typing import Any, Callable, Deque, Dict, Iterator, List, Optional, Tuple

from gevent.event import AsyncResult
from gevent.hub import Waiter

from ..protocol import fastpath
from ..protocol.hashing import PARTITION_COUNT, partition_id

__all__ = ["PendingWrite", "WriteQueue", "MapKey"]

MapKey = Tuple[str, str]


class PendingWrite:
    """One write: resolved with the achieved level, or an exception."""

    # No tuple fields: a queued write is one object for the garbage collector to track, not three
    # (``mk`` and ``ts`` are built when asked for).
    __slots__ = ("map_name", "key", "pid", "op_type", "value", "millis", "counter", "node_id", "ttl_ms", "id",
                 "deadline", "done", "level", "error", "_result", "_waiter")

    # Positional or keyword: the engine passes them by position (a keyword call costs more per write).
    def __init__(self, map_name: str, key: str, deadline: float, op_type: str = "PUT", value: Any = None,
                 ts: Tuple[int, int, str] = (0, 0, ""), ttl_ms: Optional[int] = None) -> None:
        self.map_name = map_name
        self.key = key
        self.pid = partition_id(key)
        self.op_type = op_type
        self.value = value
        self.millis, self.counter, self.node_id = ts
        self.ttl_ms = ttl_ms
        self.id = ""
        self.deadline = deadline
        self.done = False
        self.level: Any = None
        self.error: Optional[BaseException] = None
        self._result: Optional[AsyncResult] = None
        self._waiter: Optional[Waiter] = None

    @property
    def mk(self) -> MapKey:
        """``(map_name, key)``."""
        return (self.map_name, self.key)

    @property
    def ts(self) -> Tuple[int, int, str]:
        """The HLC timestamp ``(millis, counter, node_id)``."""
        return (self.millis, self.counter, self.node_id)

    def wire(self) -> Dict[str, Any]:
        """The op as it goes into OP_BATCH.payload.ops."""
        return fastpath.lww_op(self.id, self.map_name, self.key, self.op_type, self.value,
                               (self.millis, self.counter, self.node_id), self.ttl_ms)

    op = property(wire)  # read-only view for tests and logs

    @property
    def result(self) -> AsyncResult:
        result = self._result
        if result is None:
            result = self._result = AsyncResult()
            if self.done:
                self._settle(result)
        return result

    def _settle(self, result: AsyncResult) -> None:
        if self.error is None:
            result.set(self.level)
        else:
            result.set_exception(self.error)

    def finish(self, value: Any = None, exc: Optional[BaseException] = None) -> None:
        if self.done:
            return
        self.done = True
        self.level, self.error = value, exc
        if self._result is not None:
            self._settle(self._result)
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            _wake_soon(waiter)

    def wait_done(self) -> None:
        """Block this greenlet until the write is finished (no timer: the engine's reaper
        finishes every write by its deadline)."""
        while not self.done:
            if self._waiter is not None:    # another greenlet waits already: share the result
                try:
                    self.result.get()
                except BaseException:
                    if not self.done:
                        raise
                return
            waiter = self._waiter = Waiter()
            try:
                waiter.get()
            finally:
                if self._waiter is waiter:
                    self._waiter = None

    def outcome(self) -> Any:
        """The achieved level; raises the write's error (only call once done)."""
        if self.error is not None:
            raise self.error
        return self.level

    def __repr__(self) -> str:
        state = "done" if self.done else "pending"
        return f"<PendingWrite {self.map_name}/{self.key!r} id={self.id} p{self.pid} {state}>"


# hub -> waiters to wake in its next loop callback (one callback however many writes finish).
_wakeups: Dict[Any, List[Waiter]] = {}


def _wake_soon(waiter: Waiter) -> None:
    hub = waiter.hub
    waiters = _wakeups.get(hub)
    if waiters is None:
        waiters = _wakeups[hub] = []
        hub.loop.run_callback(_wake, hub)
    waiters.append(waiter)


def _wake(hub: Any) -> None:
    # Runs in the hub, as Waiter.switch requires.
    for waiter in _wakeups.pop(hub, ()):
        waiter.switch(None)


class WriteQueue:
    """Writes not yet sent: one FIFO per partition, taken round-robin from a moving cursor."""

    def __init__(self) -> None:
        self._buckets: Dict[int, Deque[PendingWrite]] = {}
        self._cursor = 0
        self.size = 0  # writes held, finished ones included until they are popped

    def __len__(self) -> int:
        return self.size

    def append(self, w: PendingWrite) -> None:
        bucket = self._buckets.get(w.pid)
        if bucket is None:
            bucket = self._buckets[w.pid] = deque()
        bucket.append(w)
        self.size += 1

    def extend(self, writes: List[PendingWrite]) -> None:
        """``append`` each write, in order."""
        buckets = self._buckets
        for w in writes:
            bucket = buckets.get(w.pid)
            if bucket is None:
                bucket = buckets[w.pid] = deque()
            bucket.append(w)
        self.size += len(writes)

    def push_front(self, writes: List[PendingWrite]) -> None:
        """Put writes back ahead of their partitions' queues, keeping their order."""
        for w in reversed(writes):
            bucket = self._buckets.get(w.pid)
            if bucket is None:
                bucket = self._buckets[w.pid] = deque()
            bucket.appendleft(w)
        self.size += len(writes)

    def partitions(self) -> Iterator[Tuple[int, Deque[PendingWrite]]]:
        """Non-empty partition queues, starting at the cursor and wrapping around."""
        # Ascending from the cursor, then wrapping: the order of (pid - cursor) % PARTITION_COUNT,
        # from one C-level sort of the ints instead of a Python key call per partition.
        order = sorted(self._buckets)
        split = bisect_left(order, self._cursor)
        for pid in order[split:] + order[:split]:
            bucket = self._buckets.get(pid)
            if bucket:
                yield pid, bucket

    def taken(self, pid: int, count: int, bucket: Deque[PendingWrite], stop_here: bool) -> None:
        """Account for ``count`` writes popped from ``pid``; move the cursor past drained queues."""
        self.size -= count
        if not bucket:
            del self._buckets[pid]
        self._cursor = pid if stop_here and bucket else (pid + 1) % PARTITION_COUNT

    def expire_fronts(self, now: float, expire: Callable[[PendingWrite], None]) -> None:
        """Pop finished writes and writes past their deadline from the front of every queue."""
        for pid in list(self._buckets):
            bucket = self._buckets[pid]
            while bucket and (bucket[0].done or bucket[0].deadline <= now):
                expire(bucket.popleft())
                self.size -= 1
            if not bucket:
                del self._buckets[pid]

    def drain(self) -> List[PendingWrite]:
        out = [w for bucket in self._buckets.values() for w in bucket]
        self._buckets.clear()
        self.size = 0
        return out

    def pending(self) -> int:
        return sum(1 for bucket in self._buckets.values() for w in bucket if not w.done)
