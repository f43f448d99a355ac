"""WebSocket framing without sockets: FrameWriter, FrameParser, and WebSocketTransport over a fake socket.

Frames are checked against a reference codec written here independently (byte-by-byte masking),
so a bug shared by our writer and parser cannot cancel out.
"""
from __future__ import annotations

import base64
import errno
import hashlib
import itertools
import os
import re
import socket
import struct
from typing import Callable

import gevent
import pytest

from topgun.errors import ConfigurationError, ConnectionLost, ConnectTimeout, LocalProtocolError, RemoteProtocolError
from topgun.transport.base import DEFAULT_MAX_MESSAGE_SIZE, Transport
from topgun.transport.memory import memory_pair
from topgun.transport.websocket import (
    OP_BINARY,
    OP_CLOSE,
    OP_CONT,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    FrameParser,
    FrameWriter,
    WebSocketTransport,
)

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


# -- reference codec -------------------------------------------------------------------------

def server_frame(payload: bytes, opcode: int = OP_BINARY, *, fin: bool = True, rsv: int = 0,
                 mask: bytes | None = None, length: int | None = None) -> bytes:
    """A frame as a server would write it (unmasked unless ``mask`` is given)."""
    n = len(payload) if length is None else length
    b0 = (0x80 if fin else 0) | rsv | opcode
    m = 0x80 if mask else 0
    if n < 126:
        head = bytes((b0, m | n))
    elif n < 65536:
        head = struct.pack("!BBH", b0, m | 126, n)
    else:
        head = struct.pack("!BBQ", b0, m | 127, n)
    if mask:
        return head + mask + bytes(b ^ k for b, k in zip(payload, itertools.cycle(mask)))
    return head + payload


def parse_client_frames(data: bytes) -> list[tuple[int, int, bytes]]:
    """Decode masked client frames into (b0, opcode, payload); fails on anything unexpected."""
    frames, pos = [], 0
    while pos < len(data):
        b0, b1 = data[pos], data[pos + 1]
        assert b1 & 0x80, "client frames must be masked"
        n, pos = b1 & 0x7F, pos + 2
        if n == 126:
            n, pos = struct.unpack_from("!H", data, pos)[0], pos + 2
            assert n >= 126, "16-bit length used for a short payload"
        elif n == 127:
            n, pos = struct.unpack_from("!Q", data, pos)[0], pos + 8
            assert n >= 65536, "64-bit length used for a short payload"
        key, pos = data[pos:pos + 4], pos + 4
        payload = bytes(b ^ k for b, k in zip(data[pos:pos + n], itertools.cycle(key)))
        assert len(payload) == n, "truncated frame"
        frames.append((b0, b0 & 0x0F, payload))
        pos += n
    return frames


# -- FrameWriter -----------------------------------------------------------------------------

@pytest.mark.parametrize("size", [0, 1, 3, 125, 126, 1000, 65535, 65536, 65537, 3 * 65536 + 5])
def test_writer_frames_decode_with_reference_codec(size: int) -> None:
    payload = os.urandom(size)
    writer = FrameWriter(b"\x01\x80\xfe\x7f")
    [(b0, opcode, decoded)] = parse_client_frames(writer.frame(payload))
    assert b0 == 0x82 and opcode == OP_BINARY
    assert decoded == payload


def test_writer_header_lengths_use_shortest_form() -> None:
    writer = FrameWriter(b"\0\0\0\0")
    assert writer.frame(b"x" * 125)[:2] == b"\x82\xfd"
    assert writer.frame(b"x" * 126)[:4] == b"\x82\xfe\x00\x7e"
    assert writer.frame(b"x" * 65535)[:4] == b"\x82\xfe\xff\xff"
    assert writer.frame(b"x" * 65536)[:10] == b"\x82\xff" + (65536).to_bytes(8, "big")


def test_writer_control_frames_and_bad_key() -> None:
    writer = FrameWriter(b"abcd")
    assert parse_client_frames(writer.frame(b"hi", OP_PONG)) == [(0x8A, OP_PONG, b"hi")]
    assert parse_client_frames(writer.frame(b"\x03\xe8", OP_CLOSE)) == [(0x88, OP_CLOSE, b"\x03\xe8")]
    with pytest.raises(ValueError):
        FrameWriter(b"abc")


def test_mask_is_its_own_inverse_for_memoryviews() -> None:
    writer, payload = FrameWriter(os.urandom(4)), os.urandom(200_001)
    assert writer.mask(memoryview(writer.mask(payload))) == payload


# -- FrameParser -----------------------------------------------------------------------------

def drain(parser: FrameParser) -> list[tuple[int, bytes]]:
    out = []
    while (message := parser.next()) is not None:
        out.append(message)
    return out


def test_parser_reads_every_length_form_fed_whole_or_byte_by_byte() -> None:
    payloads = [b"", b"a", os.urandom(125), os.urandom(126), os.urandom(65535), os.urandom(65536), os.urandom(70_000)]
    stream = b"".join(server_frame(p) for p in payloads)
    whole = FrameParser()
    whole.feed(stream)
    assert drain(whole) == [(OP_BINARY, p) for p in payloads]
    assert whole.buffered == 0

    small = [b"", b"a", os.urandom(300)]
    bytewise, got = FrameParser(), []
    for b in b"".join(server_frame(p) for p in small):
        bytewise.feed(bytes([b]))
        got.extend(drain(bytewise))
    assert got == [(OP_BINARY, p) for p in small]


def test_parser_reports_missing_bytes_for_read_sizing() -> None:
    parser = FrameParser()
    frame = server_frame(b"z" * 100_000)
    parser.feed(frame[:5])
    assert parser.next() is None and parser.missing == 5              # rest of the 10-byte header
    parser.feed(frame[5:12])
    assert parser.next() is None and parser.missing == len(frame) - 12


def test_fragmented_message_with_interleaved_ping() -> None:
    parser = FrameParser()
    parser.feed(server_frame(b"he", fin=False) + server_frame(b"ll", OP_CONT, fin=False)
                + server_frame(b"p1", OP_PING) + server_frame(b"o", OP_CONT)
                + server_frame(b"t", OP_TEXT, fin=False) + server_frame(b"xt", OP_CONT))
    assert drain(parser) == [(OP_PING, b"p1"), (OP_BINARY, b"hello"), (OP_TEXT, b"txt")]


@pytest.mark.parametrize("frames, fragment", [
    ([server_frame(b"x", OP_CONT)], "continuation frame without"),
    ([server_frame(b"a", fin=False), server_frame(b"b")], "before the fragmented one finished"),
    ([server_frame(b"x", mask=b"\1\2\3\4")], "masked"),
    ([server_frame(b"x", rsv=0x40)], "reserved bits"),
    ([server_frame(b"x", OP_PING, fin=False)], "fragmented or longer"),
    ([server_frame(b"x" * 126, OP_PONG)], "fragmented or longer"),
    ([server_frame(b"x", 0x3)], "unknown data opcode"),
    ([server_frame(b"x", 0xB)], "unknown control opcode"),
    ([b"\x82\x7f" + (1 << 63).to_bytes(8, "big")], "top bit"),
])
def test_parser_rejects_framing_violations(frames: list[bytes], fragment: str) -> None:
    parser = FrameParser()
    parser.feed(b"".join(frames))
    with pytest.raises(RemoteProtocolError, match=fragment):
        drain(parser)
    assert parser.close_code == 1002


def test_parser_rejects_oversized_message_on_the_header_alone() -> None:
    parser = FrameParser(max_message_size=1000)
    parser.feed(server_frame(b"", length=1001))        # header only: payload never needs to arrive
    with pytest.raises(RemoteProtocolError, match="exceeds"):
        parser.next()
    assert parser.close_code == 1009

    fragmented = FrameParser(max_message_size=1000)
    fragmented.feed(server_frame(b"a" * 600, fin=False) + server_frame(b"", OP_CONT, length=401))
    with pytest.raises(RemoteProtocolError, match="exceeds"):
        drain(fragmented)
    assert fragmented.close_code == 1009

    exact = FrameParser(max_message_size=1000)
    exact.feed(server_frame(b"a" * 600, fin=False) + server_frame(b"b" * 400, OP_CONT))
    assert drain(exact) == [(OP_BINARY, b"a" * 600 + b"b" * 400)]


# -- WebSocketTransport over a fake socket ----------------------------------------------------

def accept(request: bytes, *, status: str = "101 Switching Protocols", accept_key: str | None = None,
           extra: str = "") -> bytes:
    """A server's handshake answer to ``request``."""
    key = re.search(rb"Sec-WebSocket-Key: (\S+)\r\n", request)
    assert key is not None
    good = base64.b64encode(hashlib.sha1(key.group(1) + GUID).digest()).decode()
    return (f"HTTP/1.1 {status}\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n"
            f"Sec-WebSocket-Accept: {accept_key or good}\r\n{extra}\r\n").encode()


class FakeSocket:
    """Answers the handshake with ``respond(request)``, then hands out ``incoming`` chunks, then EOF."""

    def __init__(self, respond: Callable[[bytes], bytes] = accept, incoming: list[bytes] | None = None) -> None:
        self.respond = respond
        self.incoming = list(incoming or [])
        self.writes: list[bytes] = []
        self.recv_calls = 0
        self.options: dict[tuple[int, int], int] = {}
        self.timeout: float | None = -1.0
        self.closed = False

    def sendall(self, data: bytes) -> None:
        if self.closed:
            raise OSError(errno.EBADF, "closed")
        if not self.writes:
            self.incoming.insert(0, self.respond(bytes(data)))
        self.writes.append(bytes(data))

    def send(self, data: bytes) -> int:
        self.sendall(data)
        return len(data)

    def recv(self, size: int) -> bytes:
        self.recv_calls += 1
        if self.closed:
            raise OSError(errno.EBADF, "closed")
        if not self.incoming:
            return b""
        chunk = self.incoming.pop(0)
        if len(chunk) > size:
            chunk, rest = chunk[:size], chunk[size:]
            self.incoming.insert(0, rest)
        return chunk

    def setsockopt(self, level: int, option: int, value: int) -> None:
        self.options[(level, option)] = value

    def settimeout(self, timeout: float | None) -> None:
        self.timeout = timeout

    def close(self) -> None:
        self.closed = True

    def sent_frames(self) -> list[tuple[int, int, bytes]]:
        return parse_client_frames(b"".join(self.writes[1:]))


class FakeSocketModule:
    def __init__(self, sock: FakeSocket | None = None, error: BaseException | None = None) -> None:
        self.sock, self.error = sock or FakeSocket(), error
        self.addresses: list[tuple[str, int]] = []

    def create_connection(self, address: tuple[str, int], timeout: float) -> FakeSocket:
        self.addresses.append(address)
        if self.error is not None:
            raise self.error
        return self.sock


def connect(sock: FakeSocket, url: str = "ws://db.example:9000/ws", **kwargs: int) -> WebSocketTransport:
    return WebSocketTransport.connect(url, 2.0, socket_module=FakeSocketModule(sock), **kwargs)


def test_handshake_request_and_leftover_bytes_become_the_first_message() -> None:
    sock = FakeSocket(respond=lambda req: accept(req) + server_frame(b"early"),
                      incoming=[server_frame(b"second")])
    transport = connect(sock, "ws://db.example:9000/a%20b?x=1")
    request = sock.writes[0].decode()
    assert request.startswith("GET /a%20b?x=1 HTTP/1.1\r\n")
    assert "\r\nHost: db.example:9000\r\n" in request and "\r\nSec-WebSocket-Version: 13\r\n" in request
    assert sock.options == {(socket.IPPROTO_TCP, socket.TCP_NODELAY): 1}
    assert sock.timeout is None                                         # blocking after the handshake
    assert transport.recv() == b"early" and transport.recv() == b"second"
    assert repr(transport) == "<WebSocketTransport ws://db.example:9000/a%20b?x=1 open>"
    assert isinstance(transport, Transport)


def test_default_path_and_port() -> None:
    module = FakeSocketModule()
    transport = WebSocketTransport.connect("ws://db.example", 1.0, socket_module=module)
    assert module.addresses == [("db.example", 80)]
    assert module.sock.writes[0].startswith(b"GET / HTTP/1.1\r\nHost: db.example\r\n")
    assert transport.url == "ws://db.example/"


@pytest.mark.parametrize("respond, fragment", [
    (lambda req: accept(req, status="404 Not Found"), "refused: 'HTTP/1.1 404 Not Found'"),
    (lambda req: accept(req, accept_key="bm9wZQ=="), "Sec-WebSocket-Accept"),
    (lambda req: accept(req).replace(b"Upgrade: websocket", b"Upgrade: h2c"), "Upgrade header"),
    (lambda req: accept(req, extra="Sec-WebSocket-Extensions: permessage-deflate\r\n"), "extensions"),
    (lambda req: accept(req)[:-4], "during the WebSocket handshake"),
    (lambda req: b"HTTP/1.1 101 OK\r\n" + b"X: " + b"y" * 70_000, "exceed"),
])
def test_handshake_failures_raise_connection_lost_and_close_the_socket(
        respond: Callable[[bytes], bytes], fragment: str) -> None:
    sock = FakeSocket(respond=respond)
    with pytest.raises(ConnectionLost, match=re.escape(fragment)):
        connect(sock)
    assert sock.closed


def test_importing_the_transport_patches_nothing() -> None:
    import gevent.monkey
    assert not gevent.monkey.is_anything_patched()


@pytest.mark.parametrize("timeout", [0, -1.0, None])
def test_timeout_must_be_positive(timeout: float) -> None:
    with pytest.raises(ConfigurationError, match="timeout"):
        WebSocketTransport.connect("ws://h/", timeout, socket_module=FakeSocketModule())


def test_connect_errors_are_translated_with_cause() -> None:
    refused = ConnectionRefusedError(errno.ECONNREFUSED, "refused")
    with pytest.raises(ConnectionLost) as lost:
        WebSocketTransport.connect("ws://h:1", 1.0, socket_module=FakeSocketModule(error=refused))
    assert lost.value.__cause__ is refused
    with pytest.raises(ConnectTimeout):
        WebSocketTransport.connect("ws://h:1", 1.0, socket_module=FakeSocketModule(error=TimeoutError("slow")))


@pytest.mark.parametrize("url, fragment", [
    ("wss:///ws", "no host"), ("http://h/", "must start with ws://"),
    ("ws:///path", "no host"), ("ws://h:99999/", "invalid"),
])
def test_bad_urls_are_configuration_errors(url: str, fragment: str) -> None:
    with pytest.raises(ConfigurationError, match=fragment):
        WebSocketTransport.connect(url, 1.0, socket_module=FakeSocketModule())


@pytest.mark.skipif(not hasattr(socket, "TCP_QUICKACK"), reason="TCP_QUICKACK is Linux only")
def test_quickack_only_while_several_messages_are_unanswered() -> None:
    sock = FakeSocket(incoming=[server_frame(b"r1"), server_frame(b"r2"), server_frame(b"r3")])
    transport = connect(sock)
    quickack = (socket.IPPROTO_TCP, socket.TCP_QUICKACK)
    transport.send(b"q1")
    assert transport.recv() == b"r1"
    assert quickack not in sock.options      # request/response: our next request carries the ACK
    transport.send_many([b"q2", b"q3"])
    assert transport.recv() == b"r2"
    assert sock.options[quickack] == 1       # pipelined: ACK at once or the server's Nagle waits 40 ms


def test_many_buffered_frames_cost_one_read() -> None:
    sock = FakeSocket(incoming=[b"".join(server_frame(b"m%d" % i) for i in range(100))])
    transport = connect(sock)
    reads_after_handshake = sock.recv_calls
    assert [transport.recv() for _ in range(100)] == [b"m%d" % i for i in range(100)]
    assert sock.recv_calls == reads_after_handshake + 1


def test_ping_gets_pong_text_is_ignored_close_is_answered() -> None:
    sock = FakeSocket(incoming=[server_frame(b"p", OP_PING) + server_frame(b"hello", OP_TEXT)
                                + server_frame(b"bin") + server_frame(b"\x03\xe9bye", OP_CLOSE)])
    transport = connect(sock)
    assert transport.recv() == b"bin"
    assert sock.sent_frames() == [(0x8A, OP_PONG, b"p")]
    assert transport.recv() is None
    assert sock.sent_frames()[-1] == (0x88, OP_CLOSE, b"\x03\xe8")
    assert transport.closed and sock.closed
    assert transport.recv() is None
    with pytest.raises(ConnectionLost):
        transport.send(b"late")


def test_eof_without_close_frame_is_connection_lost() -> None:
    transport = connect(FakeSocket(incoming=[server_frame(b"last")[:-1]]))
    with pytest.raises(ConnectionLost, match="without a WebSocket close"):
        transport.recv()
    assert transport.closed


def test_oversized_incoming_message_closes_with_1009() -> None:
    sock = FakeSocket(incoming=[server_frame(b"", length=5000)])
    transport = connect(sock, max_message_size=4096)
    with pytest.raises(RemoteProtocolError):
        transport.recv()
    assert transport.closed and sock.closed
    assert sock.sent_frames() == [(0x88, OP_CLOSE, (1009).to_bytes(2, "big"))]


def test_send_checks_size_first_and_send_many_is_one_write() -> None:
    sock = FakeSocket()
    transport = connect(sock, max_message_size=1000)
    with pytest.raises(LocalProtocolError):
        transport.send(b"x" * 1001)
    with pytest.raises(LocalProtocolError):
        transport.send_many([b"ok", b"x" * 1001])
    assert sock.writes[1:] == []
    transport.send(b"x" * 1000)
    transport.send_many([b"a", b"b" * 300, b""])
    assert len(sock.writes) == 3
    assert [p for _, _, p in sock.sent_frames()] == [b"x" * 1000, b"a", b"b" * 300, b""]


def test_default_limit_is_16_mib() -> None:
    transport = connect(FakeSocket())
    assert transport.max_message_size == DEFAULT_MAX_MESSAGE_SIZE == 16 * 1024 * 1024
    with pytest.raises(LocalProtocolError):
        transport.send(bytes(DEFAULT_MAX_MESSAGE_SIZE + 1))


def test_close_sends_close_frame_then_send_fails_and_recv_returns_none() -> None:
    sock = FakeSocket()
    transport = connect(sock)
    transport.close()
    transport.close()
    assert sock.sent_frames() == [(0x88, OP_CLOSE, (1000).to_bytes(2, "big"))]
    assert repr(transport).endswith(" closed>")
    assert transport.recv() is None
    with pytest.raises(ConnectionLost):
        transport.send(b"x")


def test_write_interrupted_mid_frame_closes_the_transport() -> None:
    class Stuck(FakeSocket):
        def sendall(self, data: bytes) -> None:
            if self.writes:
                raise gevent.Timeout()      # as if a caller's timeout fired inside sendall
            super().sendall(data)

    sock = Stuck()
    transport = connect(sock)
    with pytest.raises(gevent.Timeout):
        transport.send(b"x")
    assert transport.closed and sock.closed


# -- memory_pair -----------------------------------------------------------------------------

def test_memory_pair_delivers_in_order_and_reports_close() -> None:
    client, server = memory_pair(max_message_size=10)
    client.send(b"one")
    client.send_many([b"two", bytearray(b"three")])
    with pytest.raises(LocalProtocolError):
        client.send(b"x" * 11)
    client.close()
    assert [server.recv(), server.recv(), server.recv()] == [b"one", b"two", b"three"]
    assert server.recv() is None and server.closed
    with pytest.raises(ConnectionLost):
        server.send(b"x")
    with pytest.raises(ConnectionLost):
        client.send(b"x")
    assert client.recv() is None
    assert repr(client) == "<MemoryTransport client closed>"


def test_memory_close_wakes_a_blocked_reader() -> None:
    client, server = memory_pair()
    reader = gevent.spawn(server.recv)
    gevent.sleep(0)                  # let the reader block in recv()
    server.close()
    assert reader.get(timeout=1.0) is None
    assert isinstance(client, Transport)
