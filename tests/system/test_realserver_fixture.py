"""The real-server fixtures against a live topgun-server: raw msgpack frames over our WebSocket transport."""
from __future__ import annotations

import socket
from typing import Any

import gevent
import msgpack
import pytest

from topgun.errors import ConnectionLost
from topgun.testing.jwt import make_hs256_token
from topgun.testing.realserver import RealServer, ServerStartError
from topgun.transport.websocket import WebSocketTransport

pytestmark = pytest.mark.realserver

TIMEOUT = 5.0


class Peer:
    """Raw msgpack frames over our WebSocketTransport, with a deadline on every read."""

    def __init__(self, url: str) -> None:
        self._transport = WebSocketTransport.connect(url, TIMEOUT)

    def send(self, frame: dict[str, Any]) -> None:
        self._transport.send(msgpack.packb(frame, use_bin_type=True))

    def recv(self) -> dict[str, Any] | None:
        """The next frame, or None once the server has closed the connection."""
        with gevent.Timeout(TIMEOUT):
            try:
                data = self._transport.recv()
            except ConnectionLost:
                return None
        return None if data is None else msgpack.unpackb(data, raw=False, strict_map_key=False)

    def close(self) -> None:
        self._transport.close()


@pytest.fixture
def connect():
    peers = []

    def open_peer(url: str) -> Peer:
        peers.append(Peer(url))
        return peers[-1]

    yield open_peer
    for peer in peers:
        peer.close()


def ping(peer: Peer, timestamp: int = 1) -> dict[str, Any] | None:
    peer.send({"type": "PING", "timestamp": timestamp})
    return peer.recv()


def test_ping_pong_and_log(topgun_real_server: RealServer, connect) -> None:
    peer = connect(topgun_real_server.url)
    pong = ping(peer, 1234)
    assert pong is not None and pong["type"] == "PONG" and pong["timestamp"] == 1234
    # The log a failing test would show in its report.
    assert f"PORT={topgun_real_server.port}" in topgun_real_server.log_text()


def test_jwt_token_is_accepted(topgun_real_server_factory, connect) -> None:
    server = topgun_real_server_factory(auth=True)
    peer = connect(server.url)
    assert peer.recv() == {"type": "AUTH_REQUIRED"}
    peer.send({"type": "AUTH", "token": make_hs256_token(server.jwt_secret, "ada", roles=["admin"])})
    assert peer.recv() == {"type": "AUTH_ACK", "userId": "ada"}
    assert ping(peer)["type"] == "PONG"


@pytest.mark.parametrize("token_for", [
    pytest.param(lambda secret: make_hs256_token("another-secret"), id="wrong-secret"),
    pytest.param(lambda secret: make_hs256_token(secret, exp_in=-120), id="expired"),
    pytest.param(lambda secret: make_hs256_token(secret, exp_in=None), id="no-exp"),
])
def test_bad_jwt_token_is_refused(topgun_real_server_factory, connect, token_for) -> None:
    server = topgun_real_server_factory(jwt_secret="fixture-test-secret")
    peer = connect(server.url)
    assert peer.recv() == {"type": "AUTH_REQUIRED"}
    peer.send({"type": "AUTH", "token": token_for(server.jwt_secret)})
    assert peer.recv() == {"type": "AUTH_FAIL", "error": "Authentication failed"}


def test_kill_and_restart_keep_the_url(topgun_real_server: RealServer, connect) -> None:
    server = topgun_real_server
    url, pid = server.url, server.pid
    assert ping(connect(url))["type"] == "PONG"

    server.kill()
    assert not server.running and server.pid is None
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", server.port), timeout=1.0).close()

    server.restart()
    assert server.url == url and server.pid not in (None, pid)
    assert ping(connect(url), 2)["type"] == "PONG"

    server.restart()  # from running: SIGTERM first
    assert ping(connect(url), 3)["type"] == "PONG"
    assert server.log_text().count(f"PORT={server.port}") == 3


def test_busy_port_fails_with_the_log_tail(topgun_server_binary, tmp_path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        server = RealServer(topgun_server_binary, tmp_path, port=port)
        with pytest.raises(ServerStartError, match=f"(?s)port {port}: still in use.*Address already in use"):
            server.start(timeout=0.5)
    assert not server.running
