"""wss:// without a proxy: the dev server serving TLS itself, deadlines, and misconfigurations.

The dev server's ``certfile=`` / ``--certfile`` is what users' own tests use; here it is also
the quickest TLS peer for checking the transport: a silent peer ends by ``connect_timeout``,
``wss://`` to a plain port is a retryable ConnectionLost, and close() from another greenlet
ends a pending TLS read.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Iterator

import gevent
import pytest
from gevent import ssl as gssl
from gevent.server import StreamServer

import topgun
from topgun.clock import GeventClock
from topgun.errors import ConnectionLost, ConnectTimeout
from topgun.server import EmbeddedCluster
from topgun.server.process import NodeProcess
from topgun.testing.plugin import TLSFiles
from topgun.transport.websocket import WebSocketTransport

pytestmark = pytest.mark.integration


@pytest.fixture
def tls_cluster(topgun_tls_files: TLSFiles) -> Iterator[EmbeddedCluster]:
    cluster = EmbeddedCluster(3, certfile=str(topgun_tls_files.certfile), keyfile=str(topgun_tls_files.keyfile))
    yield cluster.start(timeout=15.0)
    cluster.stop()


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A 127.0.0.1 listener that accepts TCP and then never sends a byte (nor closes)."""
    held: list[Any] = []
    server = StreamServer(("127.0.0.1", 0), lambda sock, addr: (held.append(sock), gevent.sleep(30)))
    server.start()
    yield f"wss://127.0.0.1:{server.server_port}/ws"
    server.stop(timeout=1.0)
    for sock in held:
        sock.close()


def test_the_dev_cluster_serves_wss_and_the_client_routes_over_it(
        tls_cluster: EmbeddedCluster, topgun_tls_files: TLSFiles,
        topgun_client_factory: Callable[..., Any]) -> None:
    assert all(url.startswith("wss://127.0.0.1:") for url in tls_cluster.urls)
    client = topgun_client_factory(tls_cluster.urls[:1], ssl_context=topgun_tls_files.client_context)
    users = client.map("users")
    for i in range(30):
        users.set(f"user:{i}", i)
    assert [users.get(f"user:{i}") for i in range(30)] == list(range(30))
    # Nodes announce wss:// endpoints, so every pooled connection is TLS without endpoint_map.
    states = client.cluster.node_states()
    assert sorted(s.url for s in states.values()) == sorted(tls_cluster.urls)
    assert all(s.state == "CONNECTED" for s in states.values())
    for conn in client.runtime.provider.open_connections():
        assert isinstance(conn._transport._sock, gssl.SSLSocket)


def test_python_m_topgun_server_certfile_serves_wss(
        topgun_tls_files: TLSFiles, tmp_path: Path, topgun_url_client_factory: Callable[..., Any]) -> None:
    node = NodeProcess("tls1", tmp_path, GeventClock(), extra_args=[
        "--certfile", str(topgun_tls_files.certfile), "--keyfile", str(topgun_tls_files.keyfile)])
    node.start((), timeout=20.0)
    try:
        assert node.url.startswith("wss://127.0.0.1:")
        client = topgun_url_client_factory(node.url, ssl_context=topgun_tls_files.client_context)
        client.map("m").set("k", "v")
        assert client.map("m").get("k") == "v"
        client.close()
    finally:
        node.stop()


def test_a_silent_peer_ends_the_tls_handshake_by_the_connect_timeout(silent_server: str) -> None:
    started = time.monotonic()
    with pytest.raises(ConnectTimeout, match="longer than 0.5s"):
        WebSocketTransport.connect(silent_server, 0.5)
    assert 0.45 <= time.monotonic() - started < 2.0
    started = time.monotonic()
    with pytest.raises(ConnectTimeout):
        topgun.TopGunClient(silent_server, connect_timeout=0.5)
    assert time.monotonic() - started < 3.0


def test_wss_to_a_plain_port_is_a_retryable_handshake_failure(topgun_cluster: Any) -> None:
    url = topgun_cluster.urls[0].replace("ws://", "wss://")
    with pytest.raises(ConnectionLost, match="TLS handshake with wss://127.0.0.1:.* failed") as lost:
        WebSocketTransport.connect(url, 2.0)
    assert lost.value.retryable


def test_close_from_another_greenlet_ends_a_pending_tls_read(
        tls_cluster: EmbeddedCluster, topgun_tls_files: TLSFiles) -> None:
    transport = WebSocketTransport.connect(tls_cluster.urls[0], 2.0, ssl_context=topgun_tls_files.client_context)
    # Read until recv() returns None (a 3-node cluster pushes its map on connect first).
    reader = gevent.spawn(lambda: list(iter(transport.recv, None)))
    gevent.sleep(0.1)                        # let the reader block in the SSL read
    assert not reader.ready()
    transport.close()
    assert isinstance(reader.get(timeout=2.0), list)     # returned, did not raise
    assert transport.closed
    with pytest.raises(ConnectionLost):
        transport.send(b"x")


def test_large_messages_cross_tls_records_intact(
        tls_cluster: EmbeddedCluster, topgun_tls_files: TLSFiles,
        topgun_url_client_factory: Callable[..., Any]) -> None:
    # 200 KB values span many 16 KB TLS records each way.
    client = topgun_url_client_factory(tls_cluster.urls[0], ssl_context=topgun_tls_files.client_context)
    blob = {"data": "x" * 200_000, "n": 1}
    docs = client.map("docs")
    docs.set("big", blob)
    assert docs.get("big") == blob

