"""Malformed frames, unknown types, oversized frames and abrupt disconnects never crash a node
or leak its greenlets."""
from __future__ import annotations

import gc
import os
import socket as stdsocket
import struct
import time

import gevent
import greenlet
import msgpack
import pytest
from gevent import socket as gsocket

from topgun.server.frames import split_ws_url
from topgun.server.rawclient import RawClient, lww_op

pytestmark = pytest.mark.integration


def _live_greenlets() -> int:
    gc.collect()
    return sum(1 for o in gc.get_objects() if isinstance(o, greenlet.greenlet) and not o.dead)


def _wait_for(check, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        gevent.sleep(0.01)
    return True


def _tcp(url: str) -> gsocket.socket:
    return gsocket.create_connection(split_ws_url(url), timeout=2.0)


def _upgraded(url: str) -> gsocket.socket:
    sock = _tcp(url)
    sock.sendall(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(4096)
    assert b" 101 " in head
    return sock


def _masked(payload: bytes) -> bytes:
    n = len(payload)
    if n < 126:
        head = bytes((0x82, 0x80 | n))
    elif n < 65536:
        head = struct.pack("!BBH", 0x82, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", 0x82, 0x80 | 127, n)
    return head + b"\0\0\0\0" + payload


def _abuse(url: str) -> None:
    # 1. TCP connect, then vanish before the handshake
    _tcp(url).close()
    # 2. half a handshake
    sock = _tcp(url)
    sock.sendall(b"GET /ws HTTP/1.1\r\nHost: x\r\n")
    sock.close()
    # 3. plain HTTP
    sock = _tcp(url)
    sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    assert b"200" in sock.recv(4096)
    sock.close()
    # 4. garbage, unknown types and bad shapes, then close without a close frame
    sock = _upgraded(url)
    for payload in (os.urandom(64), b"\xc1", msgpack.packb([1, 2]), msgpack.packb({"type": "NOPE"}),
                    msgpack.packb({"type": "OP_BATCH", "payload": {"ops": "x"}}),
                    msgpack.packb({"type": "QUERY_SUB", "payload": {"queryId": "q", "mapName": "m"}}),
                    msgpack.packb({"type": "BATCH", "count": 1, "data": b"\x00\x00\x00\x09abc"})):
        sock.sendall(_masked(payload))
    sock.close()
    # 5. a frame header announcing 17 MiB, then nothing
    sock = _upgraded(url)
    sock.sendall(struct.pack("!BBQ", 0x82, 0x80 | 127, 17 * 1024 * 1024) + b"\0\0\0\0")
    sock.close()
    # 6. half a frame, then a TCP reset
    sock = _upgraded(url)
    sock.sendall(_masked(b"x" * 1000)[:500])
    sock.setsockopt(stdsocket.SOL_SOCKET, stdsocket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()
    # 7. a reserved opcode and an oversized control frame
    sock = _upgraded(url)
    sock.sendall(bytes((0x83, 0x80)) + b"\0\0\0\0" + bytes((0x89, 0x80 | 126)) + struct.pack("!H", 300))
    sock.close()
    # 8. subscribe and write, then vanish
    client = RawClient(url)
    client.request({"type": "QUERY_SUB", "payload": {"queryId": "q", "mapName": "m", "query": {}}}, "QUERY_RESP")
    client.send({"type": "CLIENT_OP", "payload": lww_op("m", "k", 1, 1000, op_id="1")})
    client.close()


def test_abuse_leaves_no_greenlets_behind_and_the_node_serving(embedded_node):
    url = embedded_node.urls[0]
    node = embedded_node.node("n1")
    probe = RawClient(url)                         # warm up lazily created things first
    probe.request({"type": "PING", "timestamp": 1}, "PONG")
    probe.close()
    assert _wait_for(lambda: not node.conns)
    group_before, total_before = len(node.group), _live_greenlets()
    for _ in range(3):
        _abuse(url)
    assert _wait_for(lambda: not node.conns and len(node.group) <= group_before), \
        f"node greenlets: {len(node.group)} > {group_before}, conns={node.conns}"
    assert _wait_for(lambda: _live_greenlets() <= total_before), f"{_live_greenlets()} > {total_before}"
    assert not node.subs.by_map
    with RawClient(url) as client:
        assert client.request({"type": "PING", "timestamp": 2}, "PONG")["timestamp"] == 2


def test_stopping_a_node_kills_all_its_greenlets(embedded_cluster_factory):
    cluster = embedded_cluster_factory(3)
    clients = [RawClient(url) for url in cluster.urls]
    for client in clients:
        client.request({"type": "QUERY_SUB", "payload": {"queryId": "q", "mapName": "m", "query": {}}},
                       "QUERY_RESP")
    nodes = list(cluster.nodes.values())
    cluster.stop()
    assert all(len(node.group) == 0 for node in nodes)
    for client in clients:
        assert client.wait_closed(2.0)
        client.close()
