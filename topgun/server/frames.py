"""WebSocket framing for the dev server: fast reads and coalesced writes over a gevent socket.

gevent-websocket does the HTTP upgrade; after that we read and write frames ourselves, because
its reader unmasks payloads one byte at a time in Python (about 1 ms for a 10 KB frame) and it
reads a frame's whole payload before any size check. :class:`FrameSocket` unmasks with one big
integer XOR, refuses a frame over ``max_size`` before reading its payload, answers PINGs and
CLOSEs, and reassembles fragmented messages.

:func:`dial` opens the client side of a node-to-node link (``/cluster`` on a peer's port).
It is deliberately minimal (no TLS, no extensions) and masks with a zero key, which every
WebSocket server accepts; ``wss://`` peers (a TLS dev node) are wrapped by ``tls.py``. It lives
here rather than in ``topgun.transport`` because ``server`` must not depend on the client stack.
"""
from __future__ import annotations

import base64
import os
import struct
from typing import Any, Callable, List, Optional, Tuple
from urllib.parse import urlsplit

from gevent import socket as gsocket
from gevent.event import Event

__all__ = ["FrameSocket", "FrameTooLarge", "dial", "MAX_CLIENT_FRAME", "MAX_PEER_FRAME"]

MAX_CLIENT_FRAME = 16 * 1024 * 1024     # the real server resets the connection past 16 MiB
MAX_PEER_FRAME = 64 * 1024 * 1024

_OP_CONT, _OP_TEXT, _OP_BIN, _OP_CLOSE, _OP_PING, _OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
_ZERO_MASK = b"\0\0\0\0"
_H2 = struct.Struct("!BBH")
_H8 = struct.Struct("!BBQ")


class FrameTooLarge(Exception):
    """A frame or message is larger than the socket's limit."""


def _header(opcode: int, n: int, masked: bool) -> bytes:
    b0 = 0x80 | opcode
    m = 0x80 if masked else 0
    if n < 126:
        h = bytes((b0, m | n))
    elif n < 65536:
        h = _H2.pack(b0, m | 126, n)
    else:
        h = _H8.pack(b0, m | 127, n)
    return h + _ZERO_MASK if masked else h


def _unmask(data: bytes, mask: bytes) -> bytes:
    if mask == _ZERO_MASK or not data:
        return data
    n = len(data)
    key = (mask * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "little") ^ int.from_bytes(key, "little")).to_bytes(n, "little")


class FrameSocket:
    """One WebSocket connection after the handshake: ``recv()`` in one greenlet, ``send()`` from any.

    Writes are queued and flushed by one writer greenlet (spawned with ``spawn``), so frames
    from many greenlets never interleave and a burst of small frames costs one ``sendall``.
    """

    def __init__(self, read: Callable[[int], bytes], sock: Any, *, spawn: Callable[..., Any],
                 client: bool = False, max_size: int = MAX_CLIENT_FRAME, name: str = "") -> None:
        self._read = read
        self.sock = sock
        self._masked = client
        self.max_size = max_size
        self.name = name
        self.closed = False
        self.text_frames = 0
        self._out: List[bytes] = []
        self._out_bytes = 0
        self._wake = Event()
        self._writer = spawn(self._write_loop)

    # -- reading

    def recv(self) -> Optional[bytes]:
        """The next binary message, ``None`` once the connection is closed or broken.

        A text message is returned as ``str`` (the caller decides what to do with it).

        Raises:
            FrameTooLarge: the next frame announces more than ``max_size`` bytes (nothing read).
        """
        parts: List[bytes] = []
        opcode = None
        size = 0
        read = self._read
        while True:
            try:
                head = read(2)
                if len(head) < 2:
                    self.close()
                    return None
                b0, b1 = head[0], head[1]
                n = b1 & 0x7F
                if n == 126:
                    ext = read(2)
                    if len(ext) < 2:
                        self.close()
                        return None
                    n = int.from_bytes(ext, "big")
                elif n == 127:
                    ext = read(8)
                    if len(ext) < 8:
                        self.close()
                        return None
                    n = int.from_bytes(ext, "big")
                if size + n > self.max_size:
                    raise FrameTooLarge(f"frame of {n} bytes exceeds {self.max_size}")
                mask = read(4) if b1 & 0x80 else _ZERO_MASK
                payload = read(n) if n else b""
                if len(payload) < n or len(mask) < 4:
                    self.close()
                    return None
            except (OSError, ValueError, AttributeError):
                # ValueError/AttributeError: the file was closed under us by close()/kill().
                self.close()
                return None
            if mask is not _ZERO_MASK:
                payload = _unmask(payload, mask)
            op = b0 & 0x0F
            if op >= 0x8:
                if op == _OP_CLOSE:
                    self._send_raw(_header(_OP_CLOSE, 0, self._masked))
                    self.close(flush=True)
                    return None
                if op == _OP_PING:
                    self._send_raw(_header(_OP_PONG, len(payload), self._masked) + payload)
                continue
            if op != _OP_CONT:
                opcode = op
                parts = []
                size = 0
            parts.append(payload)
            size += n
            if b0 & 0x80:
                data = parts[0] if len(parts) == 1 else b"".join(parts)
                if opcode == _OP_TEXT:
                    self.text_frames += 1
                    return data.decode("utf-8", "replace")  # type: ignore[return-value]
                return data

    # -- writing

    def send(self, data: bytes) -> bool:
        """Queue one binary message; ``False`` if the socket is closed."""
        if self.closed:
            return False
        self._out.append(_header(_OP_BIN, len(data), self._masked))
        self._out.append(data)
        self._out_bytes += len(data)
        self._wake.set()
        return True

    @property
    def pending_bytes(self) -> int:
        return self._out_bytes

    def _send_raw(self, frame: bytes) -> None:
        if not self.closed:
            self._out.append(frame)
            self._wake.set()

    def _write_loop(self) -> None:
        wake, sock = self._wake, self.sock
        while True:
            wake.wait()
            wake.clear()
            if self._out:
                out, self._out, self._out_bytes = self._out, [], 0
                try:
                    data = b"".join(out)
                    # One send() usually takes it all; gevent's sendall() would first read
                    # SO_SNDBUF with a getsockopt syscall, on every frame.
                    sent = sock.send(data)
                    if sent < len(data):
                        sock.sendall(memoryview(data)[sent:])
                except (OSError, AttributeError, ValueError):
                    self.closed = True
                    self._abort()
                    return
            if self.closed:
                self._abort()
                return

    def close(self, flush: bool = False) -> None:
        """Close; with ``flush`` the queued frames are written first (by the writer greenlet)."""
        if self.closed:
            return
        self.closed = True
        if flush and self._out:
            self._wake.set()
            return
        self._out = []
        self._abort()
        self._wake.set()

    def _abort(self) -> None:
        try:
            self.sock.shutdown(gsocket.SHUT_RDWR)
        except (OSError, AttributeError):
            pass
        try:
            self.sock.close()
        except (OSError, AttributeError):
            pass

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<FrameSocket {self.name} {state} pending={self._out_bytes}>"


def split_ws_url(url: str) -> Tuple[str, int]:
    """``ws://host:port/...`` -> (host, port)."""
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss", "") or not parts.hostname or not parts.port:
        raise ValueError(f"not a ws://host:port URL: {url!r}")
    return parts.hostname, parts.port


def dial(url: str, path: str, *, timeout: float, spawn: Callable[..., Any],
         max_size: int = MAX_PEER_FRAME, name: str = "") -> FrameSocket:
    """Open a client WebSocket to ``path`` on the host and port of ``url``.

    Raises:
        OSError: connection refused, timed out, or the server did not switch protocols.
    """
    host, port = split_ws_url(url)
    sock = gsocket.create_connection((host, port), timeout=timeout)
    try:
        sock.setsockopt(gsocket.IPPROTO_TCP, gsocket.TCP_NODELAY, 1)
        if url.startswith("wss:"):     # a TLS node (topgun.server.tls)
            from .tls import wrap_peer
            sock = wrap_peer(sock, host)
        key = base64.b64encode(os.urandom(16)).decode()
        sock.sendall((f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                      f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                      "Sec-WebSocket-Version: 13\r\n\r\n").encode())
        rfile = sock.makefile("rb")
        status = rfile.readline(4096)
        if b" 101 " not in status:
            raise OSError(f"{url}{path}: handshake refused: {status!r}")
        while True:
            line = rfile.readline(4096)
            if not line:
                raise OSError(f"{url}{path}: connection closed during handshake")
            if line in (b"\r\n", b"\n"):
                break
        sock.settimeout(None)
    except BaseException:
        sock.close()
        raise
    return FrameSocket(rfile.read, sock, spawn=spawn, client=True, max_size=max_size, name=name)

