"""Issue 10, dev-server side: outside probes that used to succeed against an embedded node.

* the ``/cluster`` auth hole (an unauthenticated peer writing, or posing as a node id);
* mutual seeds (every node lists every other) forming a cluster;
* unmasked client frames, and HTTP upgrades that never finish;
* slow consumers: a node-wide budget of queued outbound bytes, and a bound on live queries
  per connection.
"""
from __future__ import annotations

import socket as stdsocket
import struct
import time
from typing import Callable, List

import gevent
import msgpack
import pytest
from gevent import socket as gsocket

import topgun
from topgun.protocol.hashing import partition_id
from topgun.server.frames import split_ws_url
from topgun.server.membership import link_key, link_proof
from topgun.server.node import Node
from topgun.server.rawclient import RawClient, lww_op
from topgun.testing.jwt import make_hs256_token

pytestmark = pytest.mark.integration

SECRET = "s3cret-for-the-hardening-tests"


def _wait_for(check: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        gevent.sleep(0.01)
    return True


def _cluster_url(url: str) -> str:
    host, port = split_ws_url(url)
    return f"ws://{host}:{port}/cluster"


def _attack(node_url: str, claim_id: str, key: str) -> RawClient:
    """The probe of issue 10: /cluster, CLUSTER_HELLO, CLUSTER_REPLICATE of a write stamped 2**62."""
    attacker = RawClient(_cluster_url(node_url))
    attacker.send({"type": "CLUSTER_HELLO", "nodeId": claim_id, "url": "ws://127.0.0.1:9/ws",
                   "incarnation": "evil"})
    attacker.send({"type": "CLUSTER_REPLICATE", "writes": [
        [partition_id(key), "m", key, 2 ** 62, 0, "evil", "pwned", None, True]]})
    return attacker


# -- 1. /cluster authenticates with the cluster (JWT) secret

def test_an_unauthenticated_cluster_peer_cannot_write_or_impersonate(embedded_cluster_factory):
    cluster = embedded_cluster_factory(2, jwt_secret=SECRET)   # real peers with the secret do join
    token = make_hs256_token(SECRET)
    client = topgun.TopGunClient(cluster=topgun.ClusterConfig(seeds=cluster.urls), token=token)
    try:
        users = client.map("m")
        users.set("k", "real")
        owner_id = cluster.owner_of("k")
        other_id = next(n for n in cluster.nodes if n != owner_id)
        owner = cluster.node(owner_id)
        version, other_peer = owner.table.version, owner.membership.peers[other_id]

        attacker = _attack(owner.url, other_id, "k")   # poses as the other node
        assert attacker.wait_closed(3.0), "the node kept an unauthenticated /cluster link open"
        attacker.close()
        assert owner.membership.refused == 1
        assert users.get("k") == "real"
        users.set("k", "real-2")                       # a later real write still wins
        assert users.get("k") == "real-2"
        # The impersonation changed nothing: same peer object, alive, same map.
        assert owner.membership.peers[other_id] is other_peer and other_peer.alive
        assert owner.table.version == version and cluster.converged()
    finally:
        client.close()


def test_a_hello_with_a_proof_for_another_nonce_or_secret_is_refused(embedded_cluster_factory):
    cluster = embedded_cluster_factory(1, jwt_secret=SECRET)
    node = cluster.node("n1")
    for key, reuse_nonce in ((link_key("wrong secret"), False), (link_key(SECRET), True)):
        with RawClient(_cluster_url(node.url)) as peer:
            challenge = peer.expect("CLUSTER_CHALLENGE")
            nonce = b"\0" * 16 if reuse_nonce else challenge["nonce"]   # a replayed proof
            mine = b"\1" * 16
            ident = ("n9", "ws://127.0.0.1:9/ws", "inc")
            peer.send({"type": "CLUSTER_HELLO", "nodeId": ident[0], "url": ident[1], "incarnation": ident[2],
                       "version": 0, "nonce": mine, "proof": link_proof(key, "hello", nonce, mine, *ident)})
            assert peer.wait_closed(3.0)
    assert node.membership.refused == 2 and "n9" not in node.membership.peers


def test_a_hello_with_the_right_proof_is_answered_with_a_proof(embedded_cluster_factory):
    cluster = embedded_cluster_factory(1, jwt_secret=SECRET)
    node, key = cluster.node("n1"), link_key(SECRET)
    with RawClient(_cluster_url(node.url)) as peer:
        theirs, mine = peer.expect("CLUSTER_CHALLENGE")["nonce"], b"\2" * 16
        ident = ("n9", "ws://127.0.0.1:9/ws", "inc")
        ack = peer.request({"type": "CLUSTER_HELLO", "nodeId": ident[0], "url": ident[1], "incarnation": ident[2],
                            "version": 0, "nonce": mine, "proof": link_proof(key, "hello", theirs, mine, *ident)},
                           "CLUSTER_HELLO_ACK")
        assert ack["proof"] == link_proof(key, "ack", mine, theirs, ack["nodeId"], ack["url"], ack["incarnation"])
        assert node.membership.refused == 0


# -- 5. mutual seeds

def _free_ports(n: int) -> List[int]:
    socks = []
    for _ in range(n):
        s = stdsocket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def test_in_process_nodes_that_all_list_each_other_as_seeds_form_one_cluster():
    ports = _free_ports(3)
    urls = [f"ws://127.0.0.1:{p}/ws" for p in ports]
    nodes = [Node(f"n{i + 1}", port=ports[i], seeds=[u for j, u in enumerate(urls) if j != i])
             for i in range(3)]
    try:
        jobs = [gevent.spawn(n.start, 15.0) for n in reversed(nodes)]   # the founder is not started first
        gevent.joinall(jobs, raise_error=True)
        assert _wait_for(lambda: len({n.table.version for n in nodes}) == 1, 10.0)
        assert set(nodes[0].table.nodes) == {"n1", "n2", "n3"}
        with RawClient(urls[2]) as client:
            client.request({"type": "CLIENT_OP", "payload": lww_op("m", "k", 7, int(time.time() * 1000),
                                                                   op_id="1")}, "OP_ACK", timeout=5.0)
        owner = nodes[int(nodes[0].table.owners[partition_id("k")][1:]) - 1]
        assert owner.store.get(partition_id("k"), "m", "k")[1] == 7
    finally:
        for n in nodes:
            n.stop()


# -- 6. RFC 6455 and the HTTP upgrade

def _upgraded(url: str) -> gsocket.socket:
    sock = gsocket.create_connection(split_ws_url(url), timeout=3.0)
    sock.sendall(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(4096)
    assert b" 101 " in head
    return sock


def _read_until_eof(sock: gsocket.socket, timeout: float) -> bytes:
    deadline, data = time.monotonic() + timeout, b""
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = sock.recv(4096)
        except stdsocket.timeout:
            break
        if not chunk:
            return data
        data += chunk
    raise AssertionError(f"still open after {timeout}s; got {data!r}")


def test_an_unmasked_client_frame_is_closed_with_1002(embedded_node):
    sock = _upgraded(embedded_node.urls[0])
    ping = msgpack.packb({"type": "PING", "timestamp": 1})
    sock.sendall(bytes((0x82, len(ping))) + ping)          # no mask bit, no key
    try:
        data = _read_until_eof(sock, 3.0)
    finally:
        sock.close()
    assert data == bytes((0x88, 2)) + struct.pack("!H", 1002)   # a close frame with 1002, then EOF: no PONG


def test_partial_http_upgrades_are_closed_after_the_deadline():
    node = Node("n1", upgrade_timeout=0.5).start()
    try:
        addr = split_ws_url(node.url)
        socks = [gsocket.create_connection(addr, timeout=2.0) for _ in range(50)]
        for s in socks:
            s.sendall(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n")   # headers never end
        started = time.monotonic()
        for s in socks:
            assert _read_until_eof(s, 5.0) == b""
            s.close()
        assert time.monotonic() - started < 5.0
        with RawClient(node.url) as client:                  # and the node still serves
            assert client.request({"type": "PING", "timestamp": 5}, "PONG")["timestamp"] == 5
    finally:
        node.stop()


def test_a_slow_but_complete_upgrade_within_the_deadline_is_served():
    node = Node("n1", upgrade_timeout=1.0).start()
    try:
        sock = gsocket.create_connection(split_ws_url(node.url), timeout=3.0)
        request = (b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                   b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        for i in range(0, len(request), 40):
            sock.sendall(request[i:i + 40])
            gevent.sleep(0.05)
        assert b" 101 " in sock.recv(4096)
        gevent.sleep(1.0)                                    # past the deadline: the upgraded socket stays
        ping = msgpack.packb({"type": "PING", "timestamp": 9})
        sock.sendall(bytes((0x82, 0x80 | len(ping))) + b"\0\0\0\0" + ping)
        assert b"PONG" in sock.recv(4096)
        sock.close()
    finally:
        node.stop()



# -- 3. slow consumers

MiB = 1024 * 1024


def _masked(payload: bytes) -> bytes:
    n = len(payload)
    if n < 126:
        head = bytes((0x82, 0x80 | n))
    elif n < 65536:
        head = struct.pack("!BBH", 0x82, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", 0x82, 0x80 | 127, n)
    return head + b"\0\0\0\0" + payload


def _never_reading(url: str, frames: List[bytes]) -> gsocket.socket:
    """An upgraded socket with a small receive buffer that sends ``frames`` and never reads again."""
    sock = gsocket.socket(gsocket.AF_INET, gsocket.SOCK_STREAM)
    sock.setsockopt(gsocket.SOL_SOCKET, gsocket.SO_RCVBUF, 4096)
    sock.settimeout(3.0)
    sock.connect(split_ws_url(url))
    sock.sendall(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)                 # byte by byte: leave every frame after it unread
    assert b" 101 " in head
    sock.sendall(b"".join(_masked(f) for f in frames))
    return sock


def _sub(qid: str, map_name: str = "feed") -> bytes:
    return msgpack.packb({"type": "QUERY_SUB", "payload": {"queryId": qid, "mapName": map_name, "query": {}}})


def test_slow_subscribers_are_held_under_the_node_wide_budget_and_the_slowest_closed():
    budget, per_conn = 4 * MiB, 1 * MiB
    node = Node("n1", outbound_budget=budget, slow_consumer_bytes=per_conn).start()
    slow = []
    try:
        slow = [_never_reading(node.url, [_sub(f"q{i}")]) for i in range(10)]
        assert _wait_for(lambda: len(node.subs.by_map.get("feed", {})) == 10)
        queued = lambda: sum(c.fs.pending_bytes for c in list(node.conns.values()))  # noqa: E731
        peak, value = 0, "x" * (100 * 1024)
        with RawClient(node.url) as writer:
            for n in range(300):             # 30 MB of events for each subscriber
                writer.request({"type": "CLIENT_OP", "payload": lww_op("feed", f"k{n % 20}", {"v": value, "n": n},
                                                                       1_000_000 + n, op_id=str(n))},
                               "OP_ACK", timeout=10.0)
                peak = max(peak, queued())
            assert writer.request({"type": "PING", "timestamp": 1}, "PONG")  # the writer was never shed
        assert peak <= budget, f"{peak} bytes queued > budget {budget}"
        assert node.outbound.peak <= budget
        # The slow ones were disconnected (the budget) or stopped getting events (their own cap).
        assert _wait_for(lambda: len(node.subs.by_map.get("feed", {})) < 10)
        assert node.outbound.shed >= 1
        assert queued() <= budget
    finally:
        for s in slow:
            s.close()
        node.stop()


def test_many_query_subs_that_are_never_read_do_not_block_other_clients_writes():
    node = Node("n1").start()
    hog = None
    try:
        hog = _never_reading(node.url, [_sub(f"q{i}") for i in range(20_000)])
        assert _wait_for(lambda: len(node.subs.by_map.get("feed", {})) == 1, 10.0)
        assert _wait_for(lambda: len(next(iter(node.subs.by_map["feed"].values()))) == 1000, 10.0)
        with RawClient(node.url) as writer:
            started = time.monotonic()
            for n in range(500):                # pipelined, as a client with many greenlets sends
                writer.send({"type": "CLIENT_OP", "payload": lww_op("feed", f"k{n}", n, 1_000_000 + n, op_id=str(n))})
            acked = set()
            while len(acked) < 500:
                acked.add(writer.expect("OP_ACK", timeout=10.0)["payload"]["lastId"])
            elapsed = time.monotonic() - started
        assert acked == {str(n) for n in range(500)}
        assert elapsed < 10.0, f"500 writes took {elapsed:.1f}s next to a connection with 20,000 QUERY_SUBs"
    finally:
        if hog is not None:
            hog.close()
        node.stop()


def test_a_query_sub_past_the_per_connection_bound_gets_a_clear_error():
    node = Node("n1", max_queries_per_connection=3).start()
    try:
        with RawClient(node.url) as client:
            for i in range(3):
                client.request({"type": "QUERY_SUB", "payload": {"queryId": f"q{i}", "mapName": "m", "query": {}}},
                               "QUERY_RESP")
            error = client.request({"type": "QUERY_SUB", "payload": {"queryId": "q3", "mapName": "m", "query": {}}},
                                   "ERROR")["payload"]
            assert error["code"] == 429 and "limit is 3" in error["message"]
            # Replacing an existing query is not a new one; after an UNSUB there is room again.
            client.request({"type": "QUERY_SUB", "payload": {"queryId": "q0", "mapName": "m", "query": {}}},
                           "QUERY_RESP")
            client.send({"type": "QUERY_UNSUB", "payload": {"queryId": "q1"}})
            client.request({"type": "QUERY_SUB", "payload": {"queryId": "q3", "mapName": "m", "query": {}}},
                           "QUERY_RESP")
    finally:
        node.stop()
