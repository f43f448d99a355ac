"""WriteEngine against a fake server on memory_pair transports: per-batch acks, resends, per-key order,
the offline queue, deadlines and close().

The engine runs on the real GeventClock: its reaper sleeps through ``clock.sleep``, which a FakeClock
would turn into a busy loop. So time-based behaviour uses short real timeouts (0.1-0.3 s), and every
wait has a deadline; nothing sleeps and hopes.
"""
from __future__ import annotations

import itertools
from typing import Any, Callable, Dict, Iterator, List, Optional

import gevent
import gevent.event
import gevent.queue
import pytest

from topgun.clock import GeventClock
from topgun.config import RetryPolicy
from topgun.engine.engine import PendingWrite, WriteEngine
from topgun.errors import ClientClosed, ConnectionLost, OperationTimeout
from topgun.protocol import codec
from topgun.protocol import messages as m
from topgun.protocol.hashing import partition_id
from topgun.retry import VersionedEvent, retrying
from topgun.transport.connection import Connection
from topgun.transport.memory import MemoryTransport, memory_pair

pytestmark = pytest.mark.timeout(10)

WAIT = 2.0          # generous upper bound for anything that should happen "now"
ATTEMPT = 0.2       # the engine's attempt timeout in these tests


class FakeServer:
    """The server end of a memory_pair: answers PING, records OP_BATCH frames, acks as told.

    ``policy(batch, n)`` decides for the n-th batch (0-based): "ack" (at once), "hold" (the test
    acks it later with :meth:`ack`) or "drop" (never answered).
    """

    def __init__(self, transport: MemoryTransport, policy: Callable[[m.OpBatch, int], str]) -> None:
        self.transport = transport
        self.policy = policy
        self.batches: List[m.OpBatch] = []
        self.arrivals: "gevent.queue.Queue[m.OpBatch]" = gevent.queue.Queue()
        self.greenlet = gevent.spawn(self._run)

    def _run(self) -> None:
        while True:
            data = self.transport.recv()
            if data is None:
                return
            msg = codec.decode(data)
            if isinstance(msg, m.Ping):
                self.transport.send(codec.encode(m.Pong(msg.timestamp, server_time=msg.timestamp)))
            elif isinstance(msg, m.OpBatch):
                n = len(self.batches)
                self.batches.append(msg)
                if self.policy(msg, n) == "ack":
                    self.ack(msg)
                self.arrivals.put(msg)

    def ack(self, batch: m.OpBatch) -> None:
        self.transport.send(codec.encode(m.OpAck(last_id=batch.ops[-1].id or "unknown", achieved_level="APPLIED")))

    def next_batch(self, timeout: float = WAIT) -> m.OpBatch:
        return self.arrivals.get(timeout=timeout)

    def sent_ids(self) -> List[str]:
        return [op.id for b in self.batches for op in b.ops if op.id is not None]

    def close(self) -> None:
        self.transport.close()
        self.greenlet.kill(block=False)


class FakeProvider:
    """A ConnectionProvider whose one connection the test attaches and detaches by hand."""

    def __init__(self) -> None:
        self.conn: Optional[Connection] = None
        self.listener: Any = None
        self.routing = VersionedEvent()
        self.last_error: Optional[BaseException] = None
        self.refreshes = 0
        self.closed = False
        self.waited = gevent.event.Event()  # set once the engine has waited for routing to change

    def start(self, listener: Any) -> None:
        self.listener = listener

    def attach(self, conn: Connection) -> None:
        self.conn = conn
        self.routing.bump()
        self.listener.on_connected(conn)

    def wait_ready(self, timeout: float) -> bool:
        return self.conn is not None

    def connection_for_key(self, key: str) -> Connection:
        return self.any_connection()

    def any_connection(self) -> Connection:
        if self.conn is None or not self.conn.is_open:
            raise ConnectionLost("offline")
        return self.conn

    def open_connections(self) -> List[Connection]:
        return [self.conn] if self.conn is not None and self.conn.is_open else []

    @property
    def routing_version(self) -> int:
        return self.routing.version

    def wait_for_change(self, since: int, timeout: float) -> bool:
        self.waited.set()
        return self.routing.wait_for_change(since, timeout)

    def request_refresh(self) -> None:
        self.refreshes += 1

    def retrying(self, deadline: float) -> Any:
        return retrying(self.routing, RetryPolicy(), GeventClock(), self.request_refresh, deadline=deadline)

    def note_resent(self, count: int) -> None:
        pass

    def close(self) -> None:
        self.closed = True
        if self.conn is not None:
            self.conn.close()


class Rig:
    def __init__(self, **engine_kw: Any) -> None:
        self.clock = GeventClock()
        self.provider = FakeProvider()
        kw: Dict[str, Any] = dict(request_timeout=WAIT, attempt_timeout=ATTEMPT)
        kw.update(engine_kw)
        self.engine = WriteEngine(self.provider, clock=self.clock, **kw)
        self.provider.start(self.engine)
        self.engine.start()
        self.servers: List[FakeServer] = []
        self.ts = itertools.count(1)

    def connect(self, policy: Callable[[m.OpBatch, int], str] = lambda b, n: "ack") -> FakeServer:
        client_end, server_end = memory_pair()
        server = FakeServer(server_end, policy)
        self.servers.append(server)
        conn = Connection("mem://fake", clock=self.clock, transport_factory=lambda url, timeout: client_end,
                          ping_interval=None, on_message=lambda c, msg: self.engine.on_message(c, msg))
        conn.open()
        self.provider.attach(conn)
        return server

    def write(self, key: str, value: Any = None, timeout: Optional[float] = None) -> PendingWrite:
        return self.engine.submit_put("m", key, value if value is not None else key,
                                      (1_700_000_000_000, next(self.ts), "t"), timeout=timeout)

    def close(self) -> None:
        self.engine.close(timeout=1.0)
        for server in self.servers:
            server.close()


@pytest.fixture
def rig() -> Iterator[Rig]:
    r = Rig()
    yield r
    r.close()


def keys_of(batch: m.OpBatch) -> List[str]:
    return [op.key for op in batch.ops]


def sync(rig: Rig) -> None:
    """Return once the connection's reader has handled everything the server sent before now."""
    assert rig.provider.conn is not None
    rig.provider.conn.request(m.Ping(next(rig.ts)), timeout=WAIT)
    gevent.sleep(0)


# ------------------------------------------------------------------------------------------------


def test_a_write_is_sent_as_op_batch_and_acknowledged(rig: Rig) -> None:
    server = rig.connect()
    w = rig.write("a", {"x": 1})
    assert w.result.get(timeout=WAIT) == "APPLIED"
    (batch,) = server.batches
    assert batch.write_concern == "APPLIED"
    assert batch.ops[0].key == "a" and batch.ops[0].record is not None and batch.ops[0].record.value == {"x": 1}
    assert batch.ops[0].id == w.op["id"]


def test_an_ack_completes_only_its_own_batch(rig: Rig) -> None:
    server = rig.connect(lambda b, n: "hold")
    first = rig.write("a")
    batch_a = server.next_batch()
    second = rig.write("b")
    batch_b = server.next_batch()
    assert (keys_of(batch_a), keys_of(batch_b)) == (["a"], ["b"])
    assert int(second.op["id"]) > int(first.op["id"])  # a cumulative reading would ack "a" too

    server.ack(batch_b)
    assert second.result.get(timeout=WAIT) == "APPLIED"
    sync(rig)
    assert not first.result.ready()
    assert rig.engine.in_flight == 1

    server.ack(batch_a)
    assert first.result.get(timeout=WAIT) == "APPLIED"
    assert rig.engine.in_flight == 0


def test_out_of_order_acks(rig: Rig) -> None:
    server = rig.connect(lambda b, n: "hold")
    writes, batches = [], []
    for key in ("a", "b", "c", "d"):
        writes.append(rig.write(key))
        batches.append(server.next_batch())
    assert [keys_of(b) for b in batches] == [["a"], ["b"], ["c"], ["d"]]
    acked = set()
    for i in (2, 0, 3, 1):
        server.ack(batches[i])
        writes[i].result.get(timeout=WAIT)
        sync(rig)
        acked.add(i)
        assert {j for j, w in enumerate(writes) if w.result.ready()} == acked
    assert all(w.result.successful() for w in writes)


def test_a_dropped_batch_is_resent_and_completes_once(rig: Rig) -> None:
    server = rig.connect(lambda b, n: "drop" if n == 0 else "ack")
    w = rig.write("a", "v1")
    start = rig.clock.monotonic()
    assert w.result.get(timeout=WAIT) == "APPLIED"
    elapsed = rig.clock.monotonic() - start
    assert ATTEMPT * 0.9 <= elapsed < ATTEMPT + 1.0
    first, second = server.batches
    # The same write again, with the same timestamp: harmless under last-writer-wins.
    assert [(op.key, op.record) for op in first.ops] == [(op.key, op.record) for op in second.ops]
    assert rig.engine.stats["resent"] == 1
    # A late ack for the first copy changes nothing.
    server.ack(first)
    sync(rig)
    assert w.result.get(block=False) == "APPLIED"
    assert rig.engine.stats["acked"] == 1
    assert rig.engine.in_flight == 0 and rig.engine.queued == 0


def test_a_second_write_to_a_key_waits_for_the_first(rig: Rig) -> None:
    server = rig.connect(lambda b, n: "hold")
    first = rig.write("k", "v1")
    batch1 = server.next_batch()
    second = rig.write("k", "v2")
    other = rig.write("j", "w")
    # "j" was queued after the second write to "k": once it is out, the flusher has seen "k" too.
    batch2 = server.next_batch()
    assert keys_of(batch2) == ["j"]
    assert keys_of(batch1) == ["k"] and rig.engine.queued == 1
    server.ack(batch2)
    other.result.get(timeout=WAIT)
    assert len(server.batches) == 2

    server.ack(batch1)
    first.result.get(timeout=WAIT)
    batch3 = server.next_batch()
    assert keys_of(batch3) == ["k"] and batch3.ops[0].record.value == "v2"  # type: ignore[union-attr]
    server.ack(batch3)
    assert second.result.get(timeout=WAIT) == "APPLIED"


def test_writes_wait_offline_and_go_out_when_a_connection_appears(rig: Rig) -> None:
    writes = [rig.write(f"k{i}") for i in range(5)] + [rig.write("k0", "again")]
    assert rig.provider.waited.wait(WAIT)  # the flusher found no connection and is waiting
    assert not any(w.result.ready() for w in writes)
    assert rig.engine.queued == 6
    server = rig.connect()
    for w in writes:
        assert w.result.get(timeout=WAIT) == "APPLIED"
    ops = [op for b in server.batches for op in b.ops]
    assert sorted(op.key for op in ops) == ["k0", "k0", "k1", "k2", "k3", "k4"]
    k0 = [op.record.value for op in ops if op.key == "k0"]  # type: ignore[union-attr]
    assert k0 == ["k0", "again"]  # per-key order survives the offline queue


def test_a_write_past_its_deadline_times_out_and_is_never_sent(rig: Rig) -> None:
    doomed = rig.write("a", timeout=0.15)
    start = rig.clock.monotonic()
    with pytest.raises(OperationTimeout):
        rig.engine.wait([doomed])
    assert 0.1 <= rig.clock.monotonic() - start < 0.15 + 0.5
    assert rig.engine.queued == 0

    server = rig.connect()
    later = rig.write("b")
    later.result.get(timeout=WAIT)
    assert doomed.op["id"] not in server.sent_ids()
    assert server.sent_ids() == [later.op["id"]]


def test_a_sent_write_without_ack_times_out_at_its_deadline(rig: Rig) -> None:
    rig.connect(lambda b, n: "drop")
    w = rig.write("a", timeout=0.3)
    start = rig.clock.monotonic()
    with pytest.raises(OperationTimeout):
        w.result.get(timeout=WAIT)
    assert 0.25 <= rig.clock.monotonic() - start < 0.3 + 0.5


def test_a_short_deadline_behind_a_long_one_still_expires_and_is_withdrawn(rig: Rig) -> None:
    # Regression: the reaper used to expire queued writes only from the front of the queue.
    patient = rig.write("a", timeout=5.0)
    hasty = rig.write("b", timeout=0.15)
    with pytest.raises(OperationTimeout):
        hasty.result.get(timeout=0.15 + 0.5)  # set_async users never call engine.wait
    server = rig.connect()
    patient.result.get(timeout=WAIT)
    sync(rig)
    assert hasty.op["id"] not in server.sent_ids()


def test_a_late_ack_of_a_first_attempt_does_not_complete_other_writes() -> None:
    # Regression: a resent frame reused its last op's id, so the late ack of the first attempt
    # completed the new frame, including writes the server had not acknowledged.
    # Keys chosen so that both frames, sorted by partition, end with "p".
    assert partition_id("a") < partition_id("b") < partition_id("p")
    rig = Rig(max_in_flight=2)
    try:
        server = rig.connect(lambda b, n: "hold")
        a = rig.write("a", timeout=0.1)       # expires while its frame is in flight
        p = rig.write("p", timeout=WAIT)
        first = server.next_batch()
        assert keys_of(first) == ["a", "p"]
        b = rig.write("b", timeout=WAIT)      # no room: waits for the resend
        second = server.next_batch()          # after the attempt timeout: [b, p]
        assert keys_of(second) == ["b", "p"]
        with pytest.raises(OperationTimeout):
            a.result.get(block=False)
        server.ack(first)                     # the slow server finally answers the first frame
        sync(rig)
        assert not b.result.ready()           # b was not in it: the server has not acked b yet
        server.ack(second)
        assert b.result.get(timeout=WAIT) == p.result.get(timeout=WAIT) == "APPLIED"
    finally:
        rig.close()


def test_close_fails_queued_and_in_flight_writes_with_client_closed(rig: Rig) -> None:
    server = rig.connect(lambda b, n: "hold")
    in_flight = rig.write("a")
    server.next_batch()
    queued = rig.write("a", "second")  # held behind the first write to "a"
    rig.engine.close()
    for w in (in_flight, queued):
        with pytest.raises(ClientClosed):
            w.result.get(timeout=WAIT)
    with pytest.raises(ClientClosed):
        rig.write("c")
    assert rig.provider.closed


def test_close_fails_offline_writes_with_client_closed(rig: Rig) -> None:
    w = rig.write("a")
    rig.engine.close()
    with pytest.raises(ClientClosed):
        w.result.get(timeout=WAIT)


def test_a_lost_connection_resends_unacknowledged_writes_on_the_next_one(rig: Rig) -> None:
    old = rig.connect(lambda b, n: "hold")
    w = rig.write("a", "v")
    old.next_batch()
    old.transport.close()  # the connection drops with the write unacknowledged
    assert rig.provider.conn is not None
    assert rig.provider.conn.wait_closed(WAIT)
    new = rig.connect()
    assert w.result.get(timeout=WAIT) == "APPLIED"
    assert [op.id for b in new.batches for op in b.ops] == [w.op["id"]]


def test_server_overload_error_makes_the_frame_go_out_again(rig: Rig) -> None:
    def policy(batch: m.OpBatch, n: int) -> str:
        if n == 0:
            server.transport.send(codec.encode(m.Error(429, "server overloaded, try again later")))
            return "drop"
        return "ack"

    server = rig.connect(policy)
    start = rig.clock.monotonic()
    w = rig.write("a")
    assert w.result.get(timeout=WAIT) == "APPLIED"
    # Resent after the short overload back-off, well before the attempt timeout.
    assert rig.clock.monotonic() - start < ATTEMPT + 0.2
    assert len(server.batches) == 2


def test_submit_many_sends_each_pair_in_order_with_its_own_timestamp_and_ack(rig: Rig) -> None:
    from topgun.protocol.hlc import HLC
    server = rig.connect()
    hlc = HLC("t", now_ms=lambda: 1_700_000_000_000)
    pairs = [("a", 1), ("b", 2), ("a", 3)]   # a key twice: its writes keep their order
    writes = rig.engine.submit_many("m", pairs, hlc, rig.clock.monotonic() + WAIT)
    assert rig.engine.wait(writes) == ["APPLIED"] * 3
    ops = [op for batch in server.batches for op in batch.ops]
    assert [(op.key, op.record.value) for op in ops if op.key == "a"] == [("a", 1), ("a", 3)]
    stamps = sorted((op.record.timestamp.millis, op.record.timestamp.counter) for op in ops)
    assert len(set(stamps)) == 3 and hlc.now() > max(w.ts for w in writes)
    assert len({w.id for w in writes}) == 3


def test_submit_many_after_close_raises_and_queues_nothing(rig: Rig) -> None:
    from topgun.protocol.hlc import HLC
    rig.engine.close(timeout=1.0)
    with pytest.raises(ClientClosed):
        rig.engine.submit_many("m", [("a", 1)], HLC("t", now_ms=lambda: 1), rig.clock.monotonic() + WAIT)
    assert rig.engine.queued == 0
