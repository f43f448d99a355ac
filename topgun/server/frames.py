"""WebSocket framing for the dev server: buffered reads and coalesced writes over a gevent socket.

gevent-websocket does the HTTP upgrade; after that we read and write frames ourselves, because
its reader unmasks payloads one byte at a time in Python (about 1 ms for a 10 KB frame) and it
reads a frame's whole payload before any size check. The frame rules, the masking and the
parser are :mod:`topgun.protocol.wsframe` (shared with the client transport); this module adds
the socket: :class:`FrameSocket` reads whatever the socket has into the parser (one read for a
burst of frames), refuses a frame over ``max_size`` on its header, answers PINGs and CLOSEs,
closes with 1002 on a framing violation (an unmasked client frame included, RFC 6455 5.1), and
queues writes for one writer greenlet.

:class:`OutboundBudget` bounds the bytes queued for sending over a set of sockets (a node's
client sockets): when a queued frame takes the total past the limit, the socket with the most
bytes queued, the slowest reader, is closed (its queue freed) until the total is back under.
A socket's queue counts every frame accepted by ``send`` and not yet handed to the kernel,
including the chunk a blocked ``sendall`` is still writing.

:func:`dial` opens the client side of a node-to-node link (``/cluster`` on a peer's port).
It is deliberately minimal (no TLS, no extensions) and masks with a zero key, which every
WebSocket server accepts; ``wss://`` peers (a TLS dev node) are wrapped by ``tls.py``. It lives
here rather than in ``topgun.transport`` because ``server`` must not depend on the client stack.
"""
from __future__ import annotations

import base64
import logging
import os
from typing import Any, Callable, List, Optional, Tuple
from urllib.parse import urlsplit

from gevent import get_hub
from gevent import socket as gsocket
from gevent.event import Event

from topgun.errors import RemoteProtocolError
from topgun.protocol.wsframe import OP_BINARY, OP_CLOSE, OP_PING, OP_PONG, OP_TEXT, FrameParser, header

__all__ = ["FrameSocket", "FrameTooLarge", "OutboundBudget", "dial", "direct_reader", "MAX_CLIENT_FRAME",
           "MAX_PEER_FRAME"]

log = logging.getLogger(__name__)

MAX_CLIENT_FRAME = 16 * 1024 * 1024     # the real server resets the connection past 16 MiB
MAX_PEER_FRAME = 64 * 1024 * 1024

_ZERO_KEY = b"\0\0\0\0"
_READ = 65536                  # normal read size
_MAX_READ = 1024 * 1024        # largest single read while a big frame is arriving


class FrameTooLarge(Exception):
    """A frame or message is larger than the socket's limit."""


class OutboundBudget:
    """Queued outbound bytes over a set of sockets, held under ``limit`` by closing the slowest."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"limit must be >= 1 byte, got {limit}")
        self.limit = limit
        self.total = 0
        self.peak = 0                       # highest total after shedding, for tests and stats
        self.shed = 0                       # sockets closed to stay under the limit
        self.sockets: "set[FrameSocket]" = set()

    def enforce(self) -> None:
        """Close the sockets with the most queued bytes until the total is within the limit."""
        while self.total > self.limit and self.sockets:
            slowest = max(self.sockets, key=lambda fs: fs.pending_bytes)
            log.info("closing %s: %d bytes queued, node-wide outbound budget of %d bytes exceeded",
                     slowest.name, slowest.pending_bytes, self.limit)
            self.shed += 1
            slowest.close()

    def __repr__(self) -> str:
        return f"<OutboundBudget {self.total}/{self.limit} sockets={len(self.sockets)} shed={self.shed}>"


def direct_reader(rfile: Any, sock: Any) -> Callable[[int], bytes]:
    """A ``read1`` that empties ``rfile``'s buffer once, then reads the socket directly.

    The buffered file (and its ``SocketIO``) costs two layers of Python per read; the socket
    itself is gevent's. The first read asks for at least ``_READ`` bytes, more than the
    file's buffer holds, so it takes whatever the handshake read ahead and leaves it empty.
    """
    first = [True]
    recv = sock.recv
    raw = getattr(sock, "_sock", None) if type(sock) is gsocket.socket else None
    if raw is not None:
        # A plain gevent socket: wait for readability on its own watcher, then read the OS
        # socket, instead of gevent's recv(), which tries first and raises EAGAIN: almost every
        # read on these sockets follows a drained buffer. A socket closed meanwhile makes the
        # wait raise OSError, as recv() would.
        wait, event = sock._wait, sock._read_event

        def recv(n: int) -> bytes:
            while True:
                wait(event)
                try:
                    return raw.recv(n)  # type: ignore[no-any-return]
                except BlockingIOError:
                    continue

    def read1(n: int) -> bytes:
        if first[0]:
            first[0] = False
            return rfile.read1(max(n, _READ))  # type: ignore[no-any-return]
        return recv(n)  # type: ignore[no-any-return]
    return read1


class FrameSocket:
    """One WebSocket connection after the handshake: ``recv()`` in one greenlet, ``send()`` from any.

    Writes are queued and written once per event-loop turn, so frames from many greenlets
    never interleave and a burst of small frames costs one ``send``: a plain socket is
    written from a loop callback, without blocking (no greenlet switch per frame); what the
    kernel does not take at once, and everything of a TLS socket, goes through one writer
    greenlet (spawned with ``spawn``), which blocks in ``sendall``.

    Args:
        read1: reads up to n bytes with at most one socket read (``BufferedReader.read1`` of
            the file the handshake was read from, so bytes buffered past it are not lost).
        sock: the socket, for writing and closing.
        client: this is our side of a link we dialled (send masked, expect unmasked).
        budget: count this socket's queued bytes against a shared budget (client sockets).
    """

    def __init__(self, read1: Callable[[int], bytes], sock: Any, *, spawn: Callable[..., Any],
                 client: bool = False, max_size: int = MAX_CLIENT_FRAME, name: str = "",
                 budget: Optional[OutboundBudget] = None) -> None:
        self._read1 = read1
        self.sock = sock
        self._key: Optional[bytes] = _ZERO_KEY if client else None
        self._parser = FrameParser(max_size, masked=not client)
        self.max_size = max_size
        self.name = name
        self.closed = False
        self.text_frames = 0
        self._out: List[bytes] = []
        self._out_bytes = 0     # queued, not yet taken by the writer
        self._inflight = 0      # taken by the writer, not yet accepted by the kernel
        self._budget = budget
        if budget is not None:
            budget.sockets.add(self)
        self._wake = Event()
        # The non-blocking OS socket under a plain gevent socket (None for TLS: the writer
        # greenlet does all its writes).
        self._raw = getattr(sock, "_sock", None) if type(sock) is gsocket.socket else None
        self._loop = get_hub().loop
        self._scheduled = False     # a loop callback will write what is queued
        self._busy = False          # the writer greenlet is in sendall
        self._writer = spawn(self._write_loop)

    # -- reading

    def recv(self) -> Optional[bytes]:
        """The next binary message, ``None`` once the connection is closed or broken.

        A text message is returned as ``str`` (the caller decides what to do with it). A
        framing violation closes the connection with 1002 and returns ``None``.

        Raises:
            FrameTooLarge: the next frame announces more than ``max_size`` bytes (nothing read
                past its header; a close frame with 1009 is queued).
        """
        parser, read1 = self._parser, self._read1
        while True:
            try:
                message = parser.next()
            except RemoteProtocolError as exc:
                self._send_raw(self._close_frame(parser.close_code))
                if parser.close_code == 1009:
                    raise FrameTooLarge(str(exc)) from None
                log.info("closing %s: %s", self.name, exc)
                self.close(flush=True)
                return None
            if message is None:
                if self.closed:
                    return None
                try:
                    data = read1(min(max(parser.missing, _READ), _MAX_READ))
                except (OSError, ValueError, AttributeError):
                    # ValueError/AttributeError: the file was closed under us by close()/kill().
                    data = b""
                if not data:
                    self.close()
                    return None
                parser.feed(data)
                continue
            opcode, payload = message
            if opcode == OP_BINARY:
                return payload
            if opcode == OP_TEXT:
                self.text_frames += 1
                return payload.decode("utf-8", "replace")  # type: ignore[return-value]
            if opcode == OP_CLOSE:
                self._send_raw(header(OP_CLOSE, 0, self._key))
                self.close(flush=True)
                return None
            if opcode == OP_PING:
                self._send_raw(header(OP_PONG, len(payload), self._key) + payload)
            # a PONG: nothing to do

    def _close_frame(self, code: int) -> bytes:
        return header(OP_CLOSE, 2, self._key) + code.to_bytes(2, "big")

    # -- writing

    def send(self, data: bytes) -> bool:
        """Queue one binary message; ``False`` if the socket is closed."""
        if self.closed:
            return False
        self._out.append(header(OP_BINARY, len(data), self._key))
        self._out.append(data)
        self._out_bytes += len(data)
        if not self._scheduled:
            self._scheduled = True
            self._loop.run_callback(self._flush_soon)
        budget = self._budget
        if budget is not None:
            budget.total += len(data)
            if budget.total > budget.limit:
                budget.enforce()
            if budget.total > budget.peak:
                budget.peak = budget.total
            return not self.closed
        return True

    @property
    def pending_bytes(self) -> int:
        """Bytes accepted by :meth:`send` that the kernel has not taken yet."""
        return self._out_bytes + self._inflight

    def _release(self) -> None:
        # Idempotent: the counters are zeroed as they are given back.
        budget = self._budget
        if budget is not None:
            budget.total -= self._out_bytes + self._inflight
            budget.sockets.discard(self)
        self._out_bytes = self._inflight = 0

    def _send_raw(self, frame: bytes) -> None:
        if not self.closed:
            self._out.append(frame)
            self._wake.set()

    def _flush_soon(self) -> None:
        # Runs in the hub, so it must not block: what the kernel does not take now is left
        # to the writer greenlet, in order (nothing is written while the writer is busy).
        self._scheduled = False
        raw = self._raw
        if raw is None or self._busy or self.closed or not self._out:
            self._wake.set()
            return
        out, self._out = self._out, []
        data = b"".join(out)
        del out
        try:
            sent = raw.send(data)
        except BlockingIOError:
            sent = 0
        except OSError:
            self.closed = True
            self._wake.set()    # the writer gives the budget back and closes the socket
            return
        if sent == len(data):
            if self._budget is not None:
                self._budget.total -= self._out_bytes
            self._out_bytes = 0
            return
        self._out.insert(0, data[sent:])  # its bytes stay counted until the writer is done
        self._wake.set()

    def _write_loop(self) -> None:
        wake, sock = self._wake, self.sock
        while True:
            wake.wait()
            wake.clear()
            if self._out:
                out, self._out = self._out, []
                self._inflight += self._out_bytes
                self._out_bytes = 0
                self._busy = True
                try:
                    data = b"".join(out)
                    del out
                    # One send() usually takes it all; gevent's sendall() would first read
                    # SO_SNDBUF with a getsockopt syscall, on every frame.
                    sent = sock.send(data)
                    if sent < len(data):
                        sock.sendall(memoryview(data)[sent:])
                    if self._budget is not None:
                        self._budget.total -= self._inflight
                    self._inflight = 0
                except (OSError, AttributeError, ValueError):
                    self.closed = True
                    self._abort()
                    return
                finally:
                    self._busy = False
            if self.closed:
                self._abort()
                return

    def close(self, flush: bool = False) -> None:
        """Close; with ``flush`` the queued frames are written first (by the writer greenlet)."""
        if self.closed:
            return
        self.closed = True
        if flush and (self._out or self._busy or self._inflight):
            self._wake.set()   # the writer finishes what it holds (and what is queued), then closes
            return
        self._out = []
        self._abort()
        self._wake.set()

    def _abort(self) -> None:
        self._release()
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
        return f"<FrameSocket {self.name} {state} pending={self.pending_bytes}>"


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
    return FrameSocket(direct_reader(rfile, sock), sock, spawn=spawn, client=True, max_size=max_size, name=name)

