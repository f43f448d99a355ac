"""Property-based test of the WriteEngine's ack bookkeeping against a lossy fake server (issue 10).

Hypothesis generates a schedule: for each OP_BATCH frame that reaches the fake server, whether
the frame is lost on the way (never applied), applied but its ack lost, applied and acked
twice, applied and acked only after the next frame (acks out of order), delivered twice, or
simply acked. After the schedule runs out every frame is acked. Whatever the schedule:

- every write completes exactly once, by its deadline;
- no write is reported acknowledged unless the server acked a frame that carried it;
- for each key, the writes the server applied are in submission order (a resend never
  lands after a later write to the same key);
- the last write to each key is what the server holds.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

import gevent
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_engine import Rig

from topgun.engine.writes import PendingWrite
from topgun.protocol import codec
from topgun.protocol import messages as m
from topgun.transport.memory import MemoryTransport

pytestmark = pytest.mark.timeout(60)

ACTIONS = ("ack", "lose_frame", "lose_ack", "ack_twice", "ack_late", "deliver_twice")
TIMEOUT = 3.0


class LossyServer:
    """Applies OP_BATCH frames to a store and acks them as the schedule says."""

    def __init__(self, transport: MemoryTransport, schedule: List[str]) -> None:
        self.transport = transport
        self.schedule = list(schedule)
        self.applied: Dict[str, List[int]] = {}      # key -> counters of the writes applied, in order
        self.acked: set = set()                      # (key, counter) of every op in an acked frame
        self.store: Dict[str, int] = {}
        self.late: List[m.OpBatch] = []
        self.greenlet = gevent.spawn(self._run)

    def _ack(self, batch: m.OpBatch) -> None:
        for op in batch.ops:
            self.acked.add((op.key, op.record.timestamp.counter))
        self.transport.send(codec.encode(m.OpAck(last_id=batch.ops[-1].id, achieved_level="APPLIED")))

    def _apply(self, batch: m.OpBatch) -> None:
        for op in batch.ops:
            counter = op.record.timestamp.counter
            self.applied.setdefault(op.key, []).append(counter)
            if counter > self.store.get(op.key, -1):  # last writer wins, as the server does
                self.store[op.key] = counter

    def _run(self) -> None:
        while True:
            data = self.transport.recv()
            if data is None:
                return
            msg = codec.decode(data)
            if isinstance(msg, m.Ping):
                self.transport.send(codec.encode(m.Pong(msg.timestamp, server_time=msg.timestamp)))
                continue
            if not isinstance(msg, m.OpBatch):
                continue
            action = self.schedule.pop(0) if self.schedule else "ack"
            if action == "lose_frame":
                continue
            self._apply(msg)
            if action == "deliver_twice":
                self._apply(msg)
            if action in ("ack", "ack_twice", "deliver_twice"):
                self._ack(msg)
            if action in ("ack_twice", "deliver_twice"):
                self._ack(msg)
            # A held ack goes out behind the next frame's: acks out of order.
            held, self.late = self.late, ([msg] if action == "ack_late" else [])
            for batch in held:
                self._ack(batch)


class Finishes:
    """Counts every finish() that took effect, per write (patched onto PendingWrite)."""

    def __init__(self, monkeypatch: Any) -> None:
        self.calls: Dict[int, List[Tuple[Any, Optional[BaseException], float]]] = {}
        original = PendingWrite.finish
        finishes = self

        def finish(w: PendingWrite, value: Any = None, exc: Optional[BaseException] = None) -> None:
            if not w.done:
                finishes.calls.setdefault(id(w), []).append((value, exc, gevent.get_hub().loop.now()))
            original(w, value, exc)

        monkeypatch.setattr(PendingWrite, "finish", finish)


keys = st.sampled_from(["a", "b", "c", "d"])


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(schedule=st.lists(st.sampled_from(ACTIONS), max_size=12),
       writes=st.lists(keys, min_size=1, max_size=12),
       burst=st.booleans())
def test_every_write_completes_once_in_order_and_only_when_acked(monkeypatch: Any, schedule: List[str],
                                                                writes: List[str], burst: bool) -> None:
    finishes = Finishes(monkeypatch)
    rig = Rig(attempt_timeout=0.05, batch_size=4)
    server: Optional[LossyServer] = None
    try:
        plain = rig.connect(lambda batch, n: "hold")  # then swapped for the lossy server

        plain.greenlet.kill()
        server = LossyServer(plain.transport, schedule)
        pending = []
        for key in writes:
            pending.append(rig.write(key, timeout=TIMEOUT))
            if not burst:
                gevent.sleep(0)
        start = gevent.get_hub().loop.now()
        gevent.wait([p.result for p in pending], timeout=TIMEOUT + 1.0)

        counters = [p.op["record"]["timestamp"]["counter"] for p in pending]
        for p, key, counter in zip(pending, writes, counters):
            calls = finishes.calls.get(id(p), [])
            assert len(calls) == 1, f"write {key}#{counter} finished {len(calls)} times"
            value, exc, at = calls[0]
            assert at <= start + TIMEOUT + 0.3, "finished after its deadline"
            if exc is None:
                assert (key, counter) in server.acked, f"{key}#{counter} reported acked, never acked by the server"
        for key, applied in server.applied.items():
            submitted = [c for k, c in zip(writes, counters) if k == key]
            firsts = list(dict.fromkeys(applied))        # first application of each write
            assert firsts == sorted(firsts), f"{key}: applied {applied}, submitted {submitted}"
            assert all(c in submitted for c in firsts)
        for key in set(writes):
            last = max(c for k, c in zip(writes, counters) if k == key)
            succeeded = [p for p, k in zip(pending, writes) if k == key and p.result.successful()]
            if succeeded and succeeded[-1].op["record"]["timestamp"]["counter"] == last:
                assert server.store[key] == last
    finally:
        rig.close()
        if server is not None:
            server.greenlet.kill()
