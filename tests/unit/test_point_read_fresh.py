"""A point read never returns a reply the server computed before the read began.

Merkle replies carry only their path, and a connection shares one pending result among
requests of the same path. Found by the real-cluster chaos test (a stale read of a key whose
newer write had been acknowledged 9 ms earlier): two readers of one client read the same key,
the first one's reply was computed before the write and arrived after the second read began,
and both got it. Here a scripted server on a memory pair holds the first read's replies until
the second read has been started, then delivers them first.
"""
from __future__ import annotations

from typing import Any, Dict, Iterator, List, Optional

import gevent
import msgpack
import pytest

from topgun.engine.reads import MISSING, leaf_paths, point_read
from topgun.errors import OperationTimeout
from topgun.protocol import codec
from topgun.protocol import messages as m
from topgun.protocol.hashing import partition_id
from topgun.transport.connection import LATE_REPLY_S as LATE_REPLY_S_DEFAULT
from topgun.transport.connection import Connection
from topgun.transport.memory import MemoryTransport, memory_pair

pytestmark = pytest.mark.timeout(20)


class HoldingServer:
    """Answers PING and MERKLE_REQ_BUCKET from ``store`` as each request arrives; while ``holding``,
    keeps the replies (computed then) until :meth:`release`."""

    def __init__(self, transport: MemoryTransport) -> None:
        self.transport = transport
        self.store: Dict[str, Any] = {}
        self.holding = False
        self.held: List[bytes] = []
        self.requests = 0

    def serve(self) -> None:
        while (data := self.transport.recv()) is not None:
            msg = codec.decode(data)
            if isinstance(msg, m.Ping):
                self.transport.send(codec.encode(m.Pong(msg.timestamp, server_time=msg.timestamp)))
            elif isinstance(msg, m.MerkleReqBucket):
                self.requests += 1
                reply = self.reply(msg.map_name, msg.path)
                if reply is None:
                    continue                        # a path that does not exist: no reply, as on 2.2.0
                if self.holding:
                    self.held.append(reply)
                else:
                    self.transport.send(reply)

    def reply(self, map_name: str, path: str) -> Optional[bytes]:
        key = "k"
        paths = leaf_paths(key)
        if key not in self.store:
            if path != paths[0]:
                return None
            frame = {"type": "SYNC_RESP_BUCKETS", "payload": {"mapName": map_name, "path": path, "buckets": {}}}
        elif path != paths[3]:
            nxt = paths[paths.index(path) + 1]
            frame = {"type": "SYNC_RESP_BUCKETS", "payload": {"mapName": map_name, "path": path, "buckets": {nxt: 1}}}
        else:
            record = {"value": self.store[key], "timestamp": {"millis": 1, "counter": 0, "nodeId": "s"}, "ttlMs": None}
            frame = {"type": "SYNC_RESP_LEAF", "payload": {"mapName": map_name, "path": path,
                                                            "records": [{"key": key, "record": record}]}}
        return msgpack.packb(frame, use_bin_type=True)

    def release(self) -> None:
        self.holding = False
        held, self.held = self.held, []
        for reply in held:
            self.transport.send(reply)


LATE_REPLY_S = 0.3  # the connection's wait for a timed-out request's reply, short for the give-up test


@pytest.fixture
def served() -> Iterator[Any]:
    yield from _served(LATE_REPLY_S_DEFAULT)


@pytest.fixture
def served_short() -> Iterator[Any]:
    yield from _served(LATE_REPLY_S)


def _served(late_reply_s: float) -> Iterator[Any]:
    greenlets: List[gevent.Greenlet] = []
    servers: List[HoldingServer] = []

    def factory(url: str, timeout: float) -> MemoryTransport:
        client_end, server_end = memory_pair()
        server = HoldingServer(server_end)
        servers.append(server)
        greenlets.append(gevent.spawn(server.serve))
        return client_end

    conn = Connection("ws://127.0.0.1:1/ws", transport_factory=factory, ping_interval=None,
                      late_reply_s=late_reply_s).open()
    yield conn, servers[0]
    conn.close()
    gevent.killall(greenlets, timeout=1.0)


def test_a_read_begun_after_a_write_does_not_take_an_earlier_reads_reply(served: Any) -> None:
    conn, server = served
    server.store["k"], server.holding = "old", True
    first = gevent.spawn(point_read, conn, "m", "k", 5.0)
    gevent.idle()                                   # the first read has sent its four requests
    assert len(server.held) == 4
    server.store["k"] = "new"                       # a write, acknowledged before the second read begins
    second = gevent.spawn(point_read, conn, "m", "k", 5.0)
    gevent.idle()                                   # the second read has done all it can before any reply
    server.release()                                # the first read's replies (computed before the write) arrive first
    assert first.get(timeout=5.0) == "old"
    assert second.get(timeout=5.0) == "new"
    assert server.requests == 8                     # the second read asked for itself


def test_reads_of_one_key_one_after_the_other_each_ask(served: Any) -> None:
    conn, server = served
    server.store["k"] = "v1"
    assert point_read(conn, "m", "k", 5.0) == "v1"
    server.store["k"] = "v2"
    assert point_read(conn, "m", "k", 5.0) == "v2"
    assert server.requests == 8


def test_a_fresh_request_waits_out_an_earlier_one_of_the_same_key_and_gets_its_own_reply(served: Any) -> None:
    # The same for every reply matched by content (walks of maps and OR-maps use fresh requests).
    conn, server = served
    leaf = m.MerkleReqBucket("m", leaf_paths("k")[3])
    server.store["k"], server.holding = "old", True
    first = conn.request_async(leaf)
    gevent.idle()
    server.store["k"] = "new"
    second = gevent.spawn(conn.fresh_request, leaf, 5.0)
    gevent.idle()
    assert server.requests == 1                     # not sent while the earlier one is unanswered
    server.release()
    assert first.get(timeout=5.0).records[0].record.value == "old"
    assert second.get(timeout=5.0).records[0].record.value == "new"
    assert server.requests == 2


def test_a_read_after_one_that_timed_out_does_not_take_its_late_reply(served: Any) -> None:
    # The first read gives up; its replies (computed before the write) come after the second
    # read began. Forgetting the first read's requests let the second one take them ("old").
    conn, server = served
    server.store["k"], server.holding = "old", True
    with pytest.raises(OperationTimeout):
        point_read(conn, "m", "k", 0.2)
    assert conn.pending_count == 0                  # nobody waits for those four replies any more
    server.store["k"] = "new"
    second = gevent.spawn(point_read, conn, "m", "k", 5.0)
    gevent.idle()
    server.release()
    assert second.get(timeout=5.0) == "new"
    assert server.requests == 8                     # its own four, sent once the late replies had come


def test_a_late_reply_that_never_comes_is_given_up_after_late_reply_s(served_short: Any) -> None:
    conn, server = served_short
    server.store["k"], server.holding = "v", True
    with pytest.raises(OperationTimeout):
        point_read(conn, "m", "k", 0.1)
    server.held.clear()                             # the server dropped those requests: no reply will come
    server.holding = False
    with pytest.raises(OperationTimeout, match="earlier"):
        point_read(conn, "m", "k", 0.05)             # its deadline falls before the give-up time
    assert point_read(conn, "m", "k", 5.0) == "v"   # waits out the rest of late_reply_s, then asks itself
    assert server.requests == 8


def test_reads_of_a_missing_key_one_after_the_other_each_answer_at_once(served: Any) -> None:
    # The deeper paths of a missing key get no reply: they are not waited out by the next read.
    conn, server = served
    assert point_read(conn, "m", "k", 2.0) is MISSING
    assert point_read(conn, "m", "k", 2.0) is MISSING   # waiting for those replies would time out
    server.store["k"] = "v"
    assert point_read(conn, "m", "k", 5.0) == "v"


def test_a_read_after_one_that_timed_out_before_any_reply_does_not_take_its_deeper_late_replies(
        served: Any) -> None:
    # The first read gives up before its "PPP/" reply came, so it cannot know whether the deeper
    # paths exist. Their replies (computed before the write) still come, after the second read
    # began: they must not answer it (found by the s4 review: they were forgotten, and did).
    conn, server = served
    server.store["k"], server.holding = "old", True
    with pytest.raises(OperationTimeout):
        point_read(conn, "m", "k", 0.2)
    late = list(server.held)                         # the first read's four replies, in path order
    server.held.clear()
    server.store["k"] = "new"                        # a write, acknowledged before the second read begins
    second = gevent.spawn(point_read, conn, "m", "k", 5.0)
    gevent.idle()                                    # waiting out the first read's requests
    for reply in late:                               # ... whose replies come
        server.transport.send(reply)
        gevent.idle()
    server.release()                                 # then the second read's own
    assert second.get(timeout=5.0) == "new"
    assert server.requests == 8


def test_a_dropped_request_delays_point_reads_of_its_partition_by_late_reply_s_at_most(served_short: Any) -> None:
    # Every key of a partition shares the "PPP/" request. One the server dropped (2.2.0 drops
    # requests silently, e.g. after its 5 s operation timeout) is waited out for late_reply_s,
    # then the read asks for itself: a delay, not a failure (the s4 review).
    conn, server = served_short
    pid = partition_id("k")
    other = next(c for c in (f"j{i}" for i in range(100_000)) if partition_id(c) == pid)
    server.holding = True
    with pytest.raises(OperationTimeout):
        point_read(conn, "m", "k", 0.1)
    server.held.clear()                             # the server dropped that request: no reply will come
    server.holding = False
    assert point_read(conn, "m", other, 5.0) is MISSING   # another key; only "PPP/" is shared with "k"


def _count_writes(conn: Connection) -> List[int]:
    """Messages per write on ``conn``'s transport, from now on."""
    transport, writes = conn._transport, []
    send, send_many = transport.send, transport.send_many

    def one(data: bytes) -> None:
        writes.append(1)
        send(data)

    def many(frames: List[bytes]) -> None:
        writes.append(len(frames))
        send_many(frames)
    transport.send, transport.send_many = one, many  # type: ignore[union-attr]
    return writes


def test_a_point_read_sends_its_four_requests_in_one_write(served: Any) -> None:
    # One send (and one wake-up of the node) per get(), not four.
    conn, server = served
    server.store["k"] = "v"
    writes = _count_writes(conn)
    assert point_read(conn, "m", "k", 5.0) == "v"
    assert writes == [4]


def test_requests_sent_together_wait_out_every_earlier_one_and_send_nothing_on_timeout(served: Any) -> None:
    conn, server = served
    server.store["k"], server.holding = "old", True
    deep = m.MerkleReqBucket("m", leaf_paths("k")[2])
    first = conn.request_async(deep)              # one of the four, unanswered
    gevent.idle()
    writes = _count_writes(conn)
    with pytest.raises(OperationTimeout, match="earlier"):
        conn.fresh_requests_async([m.MerkleReqBucket("m", p) for p in leaf_paths("k")], conn.clock.monotonic() + 0.1)
    assert writes == [] and conn.pending_count == 1   # nothing sent, nothing left registered
    server.release()
    assert first.get(timeout=5.0).buckets          # the earlier one still gets its own reply
    assert point_read(conn, "m", "k", 5.0) == "old"
    assert writes == [4]


def test_requests_whose_write_fails_are_not_left_registered(served: Any) -> None:
    from topgun.errors import ConnectionLost
    conn, _ = served

    def broken(frames: List[bytes]) -> None:
        raise ConnectionLost("the write failed")
    conn._transport.send_many = broken  # type: ignore[union-attr]
    with pytest.raises(ConnectionLost):
        conn.fresh_requests_async([m.MerkleReqBucket("m", p) for p in leaf_paths("k")], conn.clock.monotonic() + 1.0)
    assert conn.pending_count == 0


def test_a_request_that_fails_to_send_leaves_the_one_it_shared_with_registered(served: Any) -> None:
    # A plain request_async of a key already pending shares that result; a send that fails
    # must not unregister it (that request would then wait out its timeout for a reply it got).
    from topgun.errors import ConnectionLost
    conn, server = served
    server.store["k"], server.holding = "v", True
    leaf = m.MerkleReqBucket("m", leaf_paths("k")[3])
    first = conn.request_async(leaf)
    gevent.idle()
    send_many = conn._transport.send_many

    def broken(frames: List[bytes]) -> None:
        raise ConnectionLost("the write failed")
    conn._transport.send_many = broken  # type: ignore[union-attr]
    with pytest.raises(ConnectionLost):
        conn.request_async(leaf)
    conn._transport.send_many = send_many  # type: ignore[union-attr]
    server.release()
    assert first.get(timeout=5.0).records[0].record.value == "v"
