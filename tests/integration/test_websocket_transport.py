"""WebSocketTransport against real sockets: an in-process gevent-websocket server on 127.0.0.1:0.

Every wait has a deadline (gevent.Timeout or a bounded join), so a broken transport fails a
test instead of hanging it. The "server dies" test runs the server in a child process and
SIGKILLs it by pid.
"""
from __future__ import annotations

import socket
import sys
import time
from typing import Any, Callable, Iterator

import gevent
import gevent.socket
import gevent.subprocess
import pytest
from gevent.pywsgi import WSGIServer
from geventwebsocket.handler import WebSocketHandler

from topgun.errors import ConnectionLost, ConnectTimeout, LocalProtocolError, RemoteProtocolError
from topgun.transport.base import DEFAULT_MAX_MESSAGE_SIZE
from topgun.transport.websocket import OP_CONT, OP_PING, OP_TEXT, WebSocketTransport

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

DEADLINE = 10.0     # seconds any single wait may take before the test fails


def frame(payload: bytes, opcode: int = 0x2, fin: bool = True) -> bytes:
    """An unmasked server frame with a payload under 126 bytes."""
    assert len(payload) < 126
    return bytes(((0x80 if fin else 0) | opcode, len(payload))) + payload


def echo(ws: Any) -> None:
    for _ in range(1_000_000):
        message = ws.receive()
        if message is None:
            return
        ws.send(bytes(message), binary=True)


def close_after_one(ws: Any) -> None:
    ws.send(bytes(ws.receive()), binary=True)
    ws.close(1000, b"bye")


def drop_after_one(ws: Any) -> None:
    ws.receive()
    ws.handler.socket.shutdown(socket.SHUT_RDWR)     # TCP FIN, no close frame


def ping_then_report_pong(ws: Any) -> None:
    ws.receive()
    ws.raw_write(frame(b"are you there", OP_PING))
    header, payload = ws.read_frame()                # the client's answer, unmasked
    ws.send(bytes([header.opcode]) + bytes(payload), binary=True)


def fragments_and_text(ws: Any) -> None:
    ws.receive()
    ws.raw_write(frame(b"dropped", OP_TEXT) + frame(b"frag", fin=False)
                 + frame(b"ping", OP_PING) + frame(b"men", OP_CONT, fin=False) + frame(b"ted", OP_CONT))
    echo(ws)


def send_big(ws: Any) -> None:
    ws.receive()
    ws.send(b"x" * 5000, binary=True)
    echo(ws)


HANDLERS: dict[str, Callable[[Any], None]] = {
    "/close": close_after_one, "/drop": drop_after_one, "/ping": ping_then_report_pong,
    "/fragments": fragments_and_text, "/big": send_big,
}


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    ws = environ.get("wsgi.websocket")
    if ws is None:
        start_response("400 Bad Request", [("Content-Type", "text/plain")])
        return [b"websocket only"]
    HANDLERS.get(environ["PATH_INFO"], echo)(ws)
    return []


@pytest.fixture
def server() -> Iterator[str]:
    srv = WSGIServer(("127.0.0.1", 0), app, handler_class=WebSocketHandler, log=None)
    srv.start()
    yield f"ws://127.0.0.1:{srv.server_port}"
    srv.stop(timeout=1.0)


@pytest.fixture
def transports() -> Iterator[Callable[..., WebSocketTransport]]:
    opened: list[WebSocketTransport] = []

    def connect(url: str, timeout: float = 5.0, **kwargs: Any) -> WebSocketTransport:
        transport = WebSocketTransport.connect(url, timeout, **kwargs)
        opened.append(transport)
        return transport
    yield connect
    for transport in opened:
        transport.close()


def recv(transport: WebSocketTransport) -> bytes | None:
    with gevent.Timeout(DEADLINE, AssertionError(f"recv() on {transport!r} hung")):
        return transport.recv()


def test_small_messages_echo_and_repr(server: str, transports: Callable[..., WebSocketTransport]) -> None:
    t = transports(server + "/ws")
    assert repr(t) == f"<WebSocketTransport {server}/ws open>"
    for payload in (b"", b"a", b"\x00\xff" * 62, b"y" * 126):
        t.send(payload)
        assert recv(t) == payload


@pytest.mark.parametrize("size", [65_535, 65_536, 70_001, 1024 * 1024, DEFAULT_MAX_MESSAGE_SIZE])
def test_large_messages_echo(server: str, transports: Callable[..., WebSocketTransport], size: int) -> None:
    t = transports(server)
    payload = bytes(range(256)) * (size // 256) + b"t" * (size % 256)
    t.send(payload)
    assert recv(t) == payload


def test_pipelined_messages_arrive_in_order(server: str, transports: Callable[..., WebSocketTransport]) -> None:
    t = transports(server)
    batch = [b"msg-%d" % i for i in range(1000)]
    t.send_many(batch)
    for payload in batch:
        t.send(payload)
    assert [recv(t) for _ in range(2000)] == batch + batch


class SmallSendBuffer:
    """A socket_module whose sockets have a tiny send buffer, so sendall yields mid-frame."""

    @staticmethod
    def create_connection(address: tuple[str, int], timeout: float) -> Any:
        sock = gevent.socket.create_connection(address, timeout)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        return sock


def test_pipelined_burst_does_not_stall_on_delayed_ack(
        server: str, transports: Callable[..., WebSocketTransport]) -> None:
    # The server leaves Nagle on, so its second reply waits for our ACK of the first; without
    # TCP_QUICKACK Linux delays that ACK and every burst takes ~44 ms instead of well under 1 ms.
    t = transports(server)
    best = float("inf")
    for attempt in range(5):
        start = time.monotonic()
        t.send_many([b"burst-%d" % i for i in range(20)])
        assert [recv(t) for _ in range(20)] == [b"burst-%d" % i for i in range(20)]
        best = min(best, time.monotonic() - start)
    assert best < 0.02, f"fastest burst of 20 echoes took {best * 1000:.1f} ms"


def test_concurrent_senders_never_interleave(server: str, transports: Callable[..., WebSocketTransport]) -> None:
    t = transports(server, socket_module=SmallSendBuffer)
    senders, per_sender = 8, 40

    def payload(sender: int, seq: int) -> bytes:
        size = 70_000 if seq % 10 == 3 else 20 + 37 * seq     # big frames make sendall yield mid-write
        return (b"%d:%d:" % (sender, seq)).ljust(size, bytes([65 + sender]))

    def send_all(sender: int) -> None:
        for seq in range(per_sender):
            t.send(payload(sender, seq))

    reader = gevent.spawn(lambda: [recv(t) for _ in range(senders * per_sender)])
    writers = [gevent.spawn(send_all, s) for s in range(senders)]
    gevent.joinall(writers, timeout=DEADLINE, raise_error=True)
    received = reader.get(timeout=DEADLINE)
    by_sender: dict[int, list[bytes]] = {}
    for message in received:
        assert message is not None
        by_sender.setdefault(int(message.split(b":")[0]), []).append(message)
    assert by_sender == {s: [payload(s, q) for q in range(per_sender)] for s in range(senders)}


def test_server_close_returns_none(server: str, transports: Callable[..., WebSocketTransport]) -> None:
    t = transports(server + "/close")
    t.send(b"hello")
    assert recv(t) == b"hello"
    assert recv(t) is None
    assert t.closed and recv(t) is None
    with pytest.raises(ConnectionLost):
        t.send(b"after close")


def test_tcp_drop_without_close_frame_is_connection_lost(
        server: str, transports: Callable[..., WebSocketTransport]) -> None:
    t = transports(server + "/drop")
    t.send(b"hello")
    with pytest.raises(ConnectionLost):
        recv(t)
    assert t.closed


def test_ping_is_answered_with_pong(server: str, transports: Callable[..., WebSocketTransport]) -> None:
    t = transports(server + "/ping")
    t.send(b"go")
    assert recv(t) == b"\x0aare you there"      # opcode 0xA (pong) + the ping's payload


def test_fragments_are_joined_and_text_dropped(server: str, transports: Callable[..., WebSocketTransport]) -> None:
    t = transports(server + "/fragments")
    t.send(b"go")
    assert recv(t) == b"fragmented"
    t.send(b"still in sync")
    assert recv(t) == b"still in sync"


def test_oversized_send_is_rejected_and_connection_stays_usable(
        server: str, transports: Callable[..., WebSocketTransport]) -> None:
    t = transports(server)
    with pytest.raises(LocalProtocolError):
        t.send(bytes(DEFAULT_MAX_MESSAGE_SIZE + 1))
    with pytest.raises(LocalProtocolError):
        t.send_many([b"fine", bytes(DEFAULT_MAX_MESSAGE_SIZE + 1)])
    t.send(b"next")
    assert recv(t) == b"next"


def test_oversized_incoming_message_closes(server: str, transports: Callable[..., WebSocketTransport]) -> None:
    t = transports(server + "/big", max_message_size=4096)
    t.send(b"go")
    with pytest.raises(RemoteProtocolError):
        recv(t)
    assert t.closed


def test_close_wakes_a_blocked_reader(server: str, transports: Callable[..., WebSocketTransport]) -> None:
    t = transports(server)
    reader = gevent.spawn(t.recv)
    gevent.sleep(0)             # lets the reader run until it blocks inside recv()
    assert not reader.ready()
    t.close()
    assert reader.get(timeout=DEADLINE) is None
    with pytest.raises(ConnectionLost):
        t.send(b"x")


def test_non_websocket_endpoint_fails_handshake(transports: Callable[..., WebSocketTransport]) -> None:
    plain = WSGIServer(("127.0.0.1", 0), app, log=None)     # no WebSocketHandler: answers 400
    plain.start()
    try:
        with pytest.raises(ConnectionLost, match="400"):
            transports(f"ws://127.0.0.1:{plain.server_port}/")
    finally:
        plain.stop(timeout=1.0)


def test_connect_refused_is_connection_lost_quickly() -> None:
    # A bound but not listening socket holds the port, so nobody else can start listening on it.
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    try:
        start = time.monotonic()
        with pytest.raises(ConnectionLost) as lost:
            WebSocketTransport.connect(f"ws://127.0.0.1:{holder.getsockname()[1]}/", 5.0)
        assert time.monotonic() - start < 1.0
        assert isinstance(lost.value.__cause__, OSError)
    finally:
        holder.close()


def test_connect_timeout_when_handshake_is_never_answered() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)          # the kernel completes TCP; nobody ever answers the upgrade
    try:
        start = time.monotonic()
        with pytest.raises(ConnectTimeout):
            WebSocketTransport.connect(f"ws://127.0.0.1:{listener.getsockname()[1]}/", 0.3)
        assert 0.25 <= time.monotonic() - start < 1.5
    finally:
        listener.close()


SERVER_PROCESS = """
from gevent.pywsgi import WSGIServer
from geventwebsocket.handler import WebSocketHandler

def app(environ, start_response):
    ws = environ["wsgi.websocket"]
    for _ in range(1_000_000):
        message = ws.receive()
        if message is None:
            break
        ws.send(bytes(message), binary=True)
    return []

server = WSGIServer(("127.0.0.1", 0), app, handler_class=WebSocketHandler, log=None)
server.start()
print("PORT=%d" % server.server_port, flush=True)
server.serve_forever()
"""


def test_server_process_killed_surfaces_connection_lost() -> None:
    proc = gevent.subprocess.Popen([sys.executable, "-c", SERVER_PROCESS], stdout=gevent.subprocess.PIPE,
                                   start_new_session=True)
    try:
        with gevent.Timeout(DEADLINE, AssertionError("server process never printed PORT=")):
            line = proc.stdout.readline().decode()
        assert line.startswith("PORT="), line
        t = WebSocketTransport.connect(f"ws://127.0.0.1:{int(line[5:])}/", 5.0)
        t.send(b"alive?")
        assert recv(t) == b"alive?"
        reader = gevent.spawn(t.recv)           # blocked in recv() when the process dies
        gevent.sleep(0)
        assert not reader.ready()
        proc.kill()
        proc.wait(timeout=DEADLINE)
        with pytest.raises(ConnectionLost):
            reader.get(timeout=DEADLINE)
        assert t.closed
        with pytest.raises(ConnectionLost):
            t.send(b"anyone?")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=DEADLINE)
        proc.stdout.close()
