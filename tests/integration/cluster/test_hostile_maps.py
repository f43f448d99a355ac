"""A seed that sends hostile partition maps, over real sockets on 127.0.0.1 (issue 10, item 2).

The seed is a few lines of gevent-websocket: it answers PING and PARTITION_MAP_REQUEST (with
whatever map the test gives it) and nothing else. The nodes its maps name listen on 127.0.0.1
but never accept, so dialling them hangs until the connect timeout, the costly case.
"""
from __future__ import annotations

import socket
import time
from typing import Any, Callable, Dict, Iterator, List

import gevent
import psutil
import pytest
from geventwebsocket import WebSocketServer

import topgun
from topgun.cluster.pool import MAX_DIALS
from topgun.errors import RemoteProtocolError, TopGunError
from topgun.protocol import codec
from topgun.protocol.hashing import PARTITION_COUNT

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


def hostile_map(node_ports: List[int], owners: int) -> Dict[str, Any]:
    nodes = [{"nodeId": f"h{i}", "endpoints": {"websocket": f"ws://127.0.0.1:{port}"}, "status": "ACTIVE"}
             for i, port in enumerate(node_ports)]
    return {"version": 7, "partitionCount": PARTITION_COUNT, "nodes": nodes,
            "partitions": [{"partitionId": p, "ownerNodeId": f"h{p % owners}", "backupNodeIds": []}
                           for p in range(PARTITION_COUNT)], "generatedAt": 1}


@pytest.fixture
def black_holes() -> Iterator[List[int]]:
    """Ports on 127.0.0.1 that take no connection (listen backlog full, never accepted)."""
    socks = []
    for _ in range(8):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen(0)
        socks.append(s)
    yield [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()


@pytest.fixture
def hostile_seed() -> Iterator[Callable[[Dict[str, Any]], str]]:
    servers = []

    def start(payload: Dict[str, Any]) -> str:
        frame = codec.encode_wire({"type": "PARTITION_MAP", "payload": payload})

        def app(environ: Dict[str, Any], start_response: Any) -> List[bytes]:
            ws = environ["wsgi.websocket"]
            for _ in range(10_000):
                data = ws.receive()
                if data is None:
                    break
                d = codec.decode_wire(data)
                if d["type"] == "PING":
                    ws.send(codec.encode_wire({"type": "PONG", "timestamp": d["timestamp"], "serverTime": 0}),
                            binary=True)
                elif d["type"] == "PARTITION_MAP_REQUEST":
                    ws.send(frame, binary=True)
            return []

        server = WebSocketServer(("127.0.0.1", 0), app, log=None, error_log=None)
        server.start()
        servers.append(server)
        return f"ws://127.0.0.1:{server.server_port}/ws"

    yield start
    for server in servers:
        server.stop(timeout=1.0)


def sockets_to(ports: List[int]) -> int:
    wanted = set(ports)
    return sum(1 for c in psutil.Process().net_connections(kind="tcp")
               if c.raddr and c.raddr.port in wanted)


class HubWatch:
    """Measures the longest stretch this thread's hub went without running a 10 ms ticker."""

    def __init__(self) -> None:
        self.worst = 0.0
        self._g = gevent.spawn(self._tick)

    def _tick(self) -> None:
        last = time.monotonic()
        while True:
            gevent.sleep(0.01)
            now = time.monotonic()
            self.worst = max(self.worst, now - last)
            last = now

    def stop(self) -> None:
        self._g.kill()


def test_a_5000_node_map_is_refused_and_nothing_is_dialled(hostile_seed: Any, black_holes: List[int]) -> None:
    rss = psutil.Process().memory_info().rss
    seed = hostile_seed(hostile_map([black_holes[i % len(black_holes)] for i in range(5000)], owners=5000))
    start = time.monotonic()
    with pytest.raises(RemoteProtocolError, match="5000 nodes, more than the 1000"):
        topgun.TopGunClient(cluster=topgun.ClusterConfig(seeds=[seed]), connect_timeout=3.0)
    assert time.monotonic() - start < 3.0 + 1.5
    assert sockets_to(black_holes) == 0
    assert psutil.Process().memory_info().rss - rss < 20 * 1024 * 1024


def test_a_map_of_unreachable_owners_costs_bounded_sockets_and_keeps_deadlines(
        hostile_seed: Any, black_holes: List[int]) -> None:
    rss = psutil.Process().memory_info().rss
    ports = [black_holes[i % len(black_holes)] for i in range(1000)]
    seed = hostile_seed(hostile_map(ports, owners=PARTITION_COUNT))
    watch = HubWatch()
    most = [0]

    def sample() -> None:
        for _ in range(600):
            most[0] = max(most[0], sockets_to(black_holes))
            gevent.sleep(0.1)

    sampler = gevent.spawn(sample)
    client = topgun.TopGunClient(cluster=topgun.ClusterConfig(seeds=[seed], retry=topgun.RetryPolicy(deadline_s=2.0)),
                                 wait_connected=False, connect_timeout=1.0, request_timeout=2.0)
    try:
        users = client.map("users")
        for call in (lambda: users.get("k", timeout=2.0), lambda: users.put_all({"a": 1, "b": 2}, timeout=2.0)):
            start = time.monotonic()
            with pytest.raises(TopGunError):
                call()
            assert time.monotonic() - start < 2.0 + 1.5
        assert client.cluster.map_version == 7
        assert 0 < client.cluster._pool.max_dialing <= MAX_DIALS
        assert 0 < most[0] <= MAX_DIALS  # connections_per_node never multiplies the dials in flight
        assert watch.worst < 0.5
        assert psutil.Process().memory_info().rss - rss < 30 * 1024 * 1024
    finally:
        sampler.kill()
        watch.stop()
        client.close()
