"""Fresh requests (``Connection.fresh_request_async``, ``fresh_requests_async``) never share a
result with another read's request of the same path.

A point read waits out earlier requests of its four paths one after the other. While it waits
on a deeper path, another read of the same partition may send its own ``"PPP/"`` request.
Registering ours then shared that read's pending result (``expect`` hands out the one already
there), and our own ``"PPP/"`` request went out as well: its reply, computed by the server
before any later write, came with nobody waiting for it, and answered the next read of the
partition, begun after a write was acknowledged (a stale read). Two requests waiting out the
same one did the same (older than today's batching: the second woken took the first's result).
A scripted server on a memory pair holds every reply (computed as the request arrives) until
the test answers it.
"""
from __future__ import annotations

import time
from typing import Any, Dict, Iterator, List, Optional, Tuple

import gevent
import msgpack
import pytest

from topgun.engine.reads import MISSING, leaf_paths, point_read
from topgun.protocol import codec
from topgun.protocol import messages as m
from topgun.protocol.hashing import merkle_path, partition_id
from topgun.transport.connection import Connection
from topgun.transport.memory import MemoryTransport, memory_pair

pytestmark = pytest.mark.timeout(20)

A = "a"
# Another key of A's partition whose Merkle path differs from A's from the first digit on:
# the two reads share only the "PPP/" request.
B = next(c for c in (f"b{i}" for i in range(100_000))
         if partition_id(c) == partition_id(A) and merkle_path(c)[0] != merkle_path(A)[0])


class ScriptedServer:
    """A Merkle tree over ``store``; each reply is computed when its request arrives and held
    until :meth:`answer` sends the oldest one held for a path (a path that does not exist gets none)."""

    def __init__(self, transport: MemoryTransport) -> None:
        self.transport = transport
        self.store: Dict[str, Any] = {}
        self.held: List[Tuple[str, bytes]] = []
        self.arrived: List[str] = []

    def serve(self) -> None:
        while (data := self.transport.recv()) is not None:
            msg = codec.decode(data)
            if isinstance(msg, m.Ping):
                self.transport.send(codec.encode(m.Pong(msg.timestamp, server_time=msg.timestamp)))
            elif isinstance(msg, m.MerkleReqBucket):
                self.arrived.append(msg.path)
                reply = self.reply(msg.map_name, msg.path)
                if reply is not None:
                    self.held.append((msg.path, reply))

    def reply(self, map_name: str, path: str) -> Optional[bytes]:
        level = len(path) - path.index("/") - 1      # 0 for "PPP/", 3 for a leaf
        keys = [k for k in self.store if leaf_paths(k)[level] == path]
        if level == 3 and keys:
            records = [{"key": k, "record": {"value": self.store[k], "ttlMs": None,
                                             "timestamp": {"millis": 1, "counter": 0, "nodeId": "s"}}} for k in keys]
            frame = {"type": "SYNC_RESP_LEAF", "payload": {"mapName": map_name, "path": path, "records": records}}
        elif keys or level == 0:
            buckets = {leaf_paths(k)[level + 1]: 1 for k in keys}
            frame = {"type": "SYNC_RESP_BUCKETS", "payload": {"mapName": map_name, "path": path, "buckets": buckets}}
        else:
            return None                              # no such node: no reply, as on 2.2.0
        return msgpack.packb(frame, use_bin_type=True)

    def answer(self, path: str) -> None:
        i = next(i for i, (p, _) in enumerate(self.held) if p == path)
        self.transport.send(self.held.pop(i)[1])

    def answer_all(self) -> None:
        held, self.held = self.held, []
        for _, reply in held:
            self.transport.send(reply)


@pytest.fixture
def served() -> Iterator[Tuple[Connection, ScriptedServer]]:
    greenlets: List[gevent.Greenlet] = []
    servers: List[ScriptedServer] = []

    def factory(url: str, timeout: float) -> MemoryTransport:
        client_end, server_end = memory_pair()
        servers.append(ScriptedServer(server_end))
        greenlets.append(gevent.spawn(servers[-1].serve))
        return client_end

    conn = Connection("ws://127.0.0.1:1/ws", transport_factory=factory, ping_interval=None).open()
    yield conn, servers[0]
    conn.close()
    gevent.killall(greenlets, timeout=1.0)


def test_a_read_begun_after_a_write_does_not_take_a_reply_computed_before_it(served: Any) -> None:
    # gevent.idle(): every greenlet runs until it waits (nothing here waits on real IO).
    conn, server = served
    a0, a1, a2, a3 = leaf_paths(A)
    server.store[A] = "va"
    first = gevent.spawn(point_read, conn, "m", A, 5.0)
    gevent.idle()
    server.answer(a0)
    gevent.idle()                                   # the first read waits on a1
    second = gevent.spawn(point_read, conn, "m", A, 5.0)
    gevent.idle()                                   # the second waits out the first's a1
    third = gevent.spawn(point_read, conn, "m", B, 5.0)
    gevent.idle()                                   # B is missing yet: the third sends its own "PPP/"
    assert server.arrived == list(leaf_paths(A)) + list(leaf_paths(B))
    for path in (a1, a2, a3):                       # the first read's replies: the second goes on
        server.answer(path)
    gevent.idle()
    server.answer(a0)                               # the oldest "PPP/" held: the third's
    gevent.idle()
    assert first.get(timeout=5.0) == "va"
    assert third.get(timeout=5.0) is MISSING
    server.store[B] = "vb"                          # a write of B, acknowledged
    fourth = gevent.spawn(point_read, conn, "m", B, 5.0)   # begun after it
    gevent.idle()
    deadline = time.monotonic() + 5.0
    while not (second.ready() and fourth.ready()):  # then every reply, oldest first
        assert time.monotonic() < deadline, "the reads did not finish"
        if server.held:
            server.answer(server.held[0][0])
        gevent.sleep(0.001)
    assert second.get() == "va"
    assert fourth.get() == "vb"                     # not MISSING, from a "PPP/" reply older than the write


def test_two_requests_waiting_out_the_same_one_each_get_a_reply_computed_after_they_began(served: Any) -> None:
    # Both wake when the earlier reply comes; the first sends its own request, and the second
    # took that one's pending result while sending its own as well, whose reply (computed before
    # the write below) then answered the next request, begun after that write.
    conn, server = served
    leaf = m.MerkleReqBucket("m", leaf_paths(A)[3])
    server.store[A] = "v1"
    first = conn.request_async(leaf)
    gevent.idle()
    second = gevent.spawn(conn.fresh_request, leaf, 5.0)
    third = gevent.spawn(conn.fresh_request, leaf, 5.0)
    gevent.idle()                                   # both wait out the first
    server.answer(leaf.path)
    gevent.idle()
    server.answer(leaf.path)                        # the oldest held: the second's
    gevent.idle()
    assert first.get(timeout=5.0).records[0].record.value == "v1"
    assert second.get(timeout=5.0).records[0].record.value == "v1"
    server.store[A] = "v2"                          # a write, acknowledged
    fourth = gevent.spawn(conn.fresh_request, leaf, 5.0)   # begun after it
    gevent.idle()
    deadline = time.monotonic() + 5.0
    while not (third.ready() and fourth.ready()):   # then every reply, oldest first
        assert time.monotonic() < deadline, "the requests did not finish"
        if server.held:
            server.answer(server.held[0][0])
        gevent.sleep(0.001)
    assert third.get().records[0].record.value == "v1"
    assert fourth.get().records[0].record.value == "v2"
