"""WebSocket (RFC 6455) client transport over one gevent socket.

:meth:`WebSocketTransport.connect` opens a TCP connection with ``gevent.socket`` (never by
monkey-patching), performs the HTTP/1.1 upgrade and returns a :class:`~topgun.transport.base.Transport`
that sends and receives whole binary messages. Reads are buffered: one ``recv`` syscall is parsed
into as many frames as it holds, so a burst of small replies costs one syscall, not three per frame.

TCP: TCP_NODELAY on connect; on Linux, TCP_QUICKACK before a read while several sent messages are
unanswered (see ``_fill``: without it a pipelined burst to the TopGun server stalls about 44 ms on
the server's Nagle plus our delayed ACK).

The frame pieces (header, masking, the sans-IO parser) are :mod:`topgun.protocol.wsframe`, shared
with the dev server; this module adds the socket, the handshake and the read/write policy.

What it handles: masked client frames, 7/16/64-bit lengths, fragmented (continuation) messages,
ping -> pong, close -> close reply, a message size limit on both directions, and text frames,
which are dropped (the TopGun server ignores text too).

TLS: ``wss://`` wraps the TCP socket with ``gevent.ssl`` (whatever ``ssl.SSLContext`` is given,
default: ``ssl.create_default_context()``, which verifies the chain against the system trust store
and the hostname, and sends SNI) before the upgrade. TCP connect, TLS handshake and upgrade share
one deadline. A refused certificate raises :class:`~topgun.errors.TLSVerificationError`; other
handshake failures ConnectionLost. Afterwards frames go through the SSL socket exactly as through
a plain one: one ``send`` per frame (one TLS record, one syscall) and buffered reads.

Deliberately not here: extensions such as permessage-deflate, subprotocols, HTTP proxies (CONNECT),
redirects, sending text or fragmented messages, keep-alive pings and reconnecting. Those belong to
the layer above or are not needed by TopGun.

Masking: RFC 6455 asks for a fresh, unpredictable key per frame, so script in a browser cannot
steer the bytes on the wire into a transparent proxy's cache. This client is not a browser (whoever
chooses the payload already owns the socket), and the server accepts any key, so we draw one random
key per connection with ``os.urandom`` and XOR through Python big integers against a precomputed
key stream: about 0.25 us for a small frame and about 1 GB/s for large ones.
"""
from __future__ import annotations

import base64
import hashlib
import logging
import os
import ssl
from typing import Any, Optional
from urllib.parse import quote, urlsplit

import gevent
import gevent.lock
from gevent import socket as gsocket
from gevent import ssl as gssl

from topgun.errors import (
    ConfigurationError,
    ConnectionLost,
    ConnectTimeout,
    LocalProtocolError,
    RemoteProtocolError,
    TLSVerificationError,
)

# The frame pieces live in protocol/ (shared with the dev server); re-exported here.
from topgun.protocol.wsframe import OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT, FrameParser, FrameWriter
from topgun.transport.base import DEFAULT_MAX_MESSAGE_SIZE

__all__ = ["WebSocketTransport", "FrameWriter", "FrameParser", "default_ssl_context", "path_hint",
           "OP_CONT", "OP_TEXT", "OP_BINARY", "OP_CLOSE", "OP_PING", "OP_PONG"]

log = logging.getLogger(__name__)

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_CHUNK = 65536                  # normal socket read size
_MAX_READ = 1024 * 1024         # largest single read while a big frame is arriving
_MAX_HANDSHAKE = 65536          # response headers larger than this are refused
_TCP_QUICKACK: int | None = getattr(gsocket, "TCP_QUICKACK", None)     # Linux only


class WebSocketTransport:
    """A WebSocket connection to one server; see :mod:`topgun.transport.base` for the contract.

    Build one with :meth:`connect`. ``send``/``send_many``/``close`` may be called from any
    greenlet; ``recv`` from one reader greenlet at a time.
    """

    def __init__(self, sock: Any, url: str, *, leftover: bytes = b"",
                 max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE, mask_key: bytes | None = None) -> None:
        """Wrap a socket that has completed the upgrade handshake (``leftover``: bytes read past it)."""
        self.url = url
        self.max_message_size = max_message_size
        self._sock = sock
        self._writer = FrameWriter(os.urandom(4) if mask_key is None else mask_key)
        self._parser = FrameParser(max_message_size)
        if leftover:
            self._parser.feed(leftover)
        self._send_lock = gevent.lock.Semaphore()
        self._closed = False
        self._unanswered = 0    # messages sent minus binary messages received, floored at 0

    @classmethod
    def connect(cls, url: str, timeout: float, *, socket_module: Any = None,
                max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
                ssl_context: Optional[ssl.SSLContext] = None) -> WebSocketTransport:
        """Open a WebSocket connection.

        Args:
            url: ``ws://host[:port][/path]`` or ``wss://...``; the path defaults to ``/``.
            timeout: seconds allowed for TCP connect, TLS handshake and upgrade, together.
            socket_module: provides ``create_connection`` (default ``gevent.socket``); for tests.
            max_message_size: largest message accepted in either direction, in bytes.
            ssl_context: for ``wss://`` (ignored for ``ws://``): a private CA, client
                certificates, pinning. Default: verify against the system trust store.

        Returns:
            An open transport with TCP_NODELAY set.

        Raises:
            ConfigurationError: the URL is not ``ws://`` or ``wss://``, or an argument is invalid.
            ConnectTimeout: connecting and the handshakes took longer than ``timeout``.
            TLSVerificationError: the server's certificate was refused (issuer, hostname, dates).
            ConnectionLost: the connection was refused or dropped, or a handshake failed.
        """
        tls, host, port, host_header, resource = _parse_url(url)
        if not isinstance(timeout, (int, float)) or not timeout > 0:
            raise ConfigurationError(f"timeout must be > 0 seconds, got {timeout!r}")
        if max_message_size < 1:
            raise ConfigurationError(f"max_message_size must be >= 1, got {max_message_size!r}")
        if ssl_context is not None and not isinstance(ssl_context, ssl.SSLContext):
            raise ConfigurationError(f"ssl_context must be an ssl.SSLContext, got {type(ssl_context).__name__}")
        canonical = f"{'wss' if tls else 'ws'}://{host_header}{resource}"
        sockets = gsocket if socket_module is None else socket_module
        deadline = gevent.Timeout(timeout)
        deadline.start()
        sock = None
        try:
            sock = sockets.create_connection((host, port), timeout)
            sock.setsockopt(gsocket.IPPROTO_TCP, gsocket.TCP_NODELAY, 1)
            if tls:
                sock = _wrap_tls(sock, host, ssl_context)
                adopt = getattr(sockets, "adopt", None)   # forking.SocketTracker: sever it after fork
                if adopt is not None:
                    adopt(sock)
                sock.do_handshake()     # bounded by the same deadline as everything else here
            leftover = _handshake(sock, host_header, resource, canonical)
            sock.settimeout(None)
        except BaseException as exc:
            if sock is not None:
                _close_quietly(sock)
            if exc is deadline or isinstance(exc, TimeoutError):
                raise ConnectTimeout(f"connecting to {canonical} took longer than {timeout}s") from exc
            if isinstance(exc, ssl.SSLCertVerificationError):
                reason = exc.verify_message or str(exc)
                raise TLSVerificationError(f"TLS certificate verification failed for {canonical}: {reason}",
                                           verify_message=reason) from exc
            if isinstance(exc, ssl.SSLError):
                raise ConnectionLost(f"TLS handshake with {canonical} failed: {exc.reason or exc}") from exc
            if isinstance(exc, ConnectionRefusedError):
                raise ConnectionLost(f"cannot connect to {canonical}: connection refused (is the server running "
                                     f"and listening on port {port}?)") from exc
            if isinstance(exc, OSError):
                raise ConnectionLost(f"cannot connect to {canonical}: {exc}") from exc
            raise
        finally:
            deadline.close()
        log.info("connected to %s", canonical)
        return cls(sock, canonical, leftover=leftover, max_message_size=max_message_size)

    @property
    def closed(self) -> bool:
        return self._closed

    def send(self, data: bytes) -> None:
        """Send one binary message.

        Raises:
            LocalProtocolError: ``data`` is larger than ``max_message_size``; nothing was sent.
            ConnectionLost: the transport is closed or the write failed (the transport is then closed).
        """
        if len(data) > self.max_message_size:
            raise LocalProtocolError(f"message of {len(data)} bytes exceeds the {self.max_message_size}-byte limit")
        self._write(self._writer.frame(data))
        self._unanswered += 1

    def send_many(self, frames: list[bytes]) -> None:
        """Send several binary messages with one ``sendall``; all are size-checked before any is sent.

        Raises:
            LocalProtocolError: one message is larger than ``max_message_size``; nothing was sent.
            ConnectionLost: the transport is closed or the write failed.
        """
        limit = self.max_message_size
        for data in frames:
            if len(data) > limit:
                raise LocalProtocolError(f"message of {len(data)} bytes exceeds the {limit}-byte limit")
        frame = self._writer.frame
        self._write(b"".join([frame(data) for data in frames]))
        self._unanswered += len(frames)

    def recv(self) -> bytes | None:
        """Block this greenlet until the next binary message arrives.

        Pings are answered, pongs and text messages dropped. Returns None once the server
        closed cleanly or :meth:`close` was called (also from another greenlet).

        Raises:
            ConnectionLost: the connection dropped without a close frame.
            RemoteProtocolError: the server broke the framing rules or sent a message larger than
                ``max_message_size``; the transport is closed.
        """
        parser = self._parser
        while not self._closed:
            try:
                message = parser.next()
            except RemoteProtocolError as exc:
                log.info("closing %s: protocol error from server: %s", self.url, exc)
                self._shutdown(parser.close_code)
                raise
            if message is None:
                self._fill()
                continue
            opcode, payload = message
            if opcode == OP_BINARY:
                if self._unanswered:
                    self._unanswered -= 1
                return payload
            if opcode == OP_PING:
                self._reply(self._writer.frame(payload, OP_PONG))
            elif opcode == OP_CLOSE:
                code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else None
                log.info("%s closed the connection (code %s)", self.url, code)
                self._shutdown(1000)
                return None
            elif opcode == OP_TEXT:
                log.debug("ignoring a %d-byte text message from %s", len(payload), self.url)
        return None

    def close(self) -> None:
        """Send a close frame if that cannot block, then close the socket. Idempotent."""
        if not self._closed:
            self._shutdown(1000)
            log.info("closed %s", self.url)

    def __repr__(self) -> str:
        return f"<WebSocketTransport {self.url} {'closed' if self._closed else 'open'}>"

    # -- internals -------------------------------------------------------------------------

    def _write(self, frame: bytes) -> None:
        with self._send_lock:
            if self._closed:
                raise ConnectionLost(f"{self.url} is closed")
            self._sendall(frame)

    def _reply(self, frame: bytes) -> None:
        # Like _write, but a transport closed locally meanwhile is not an error for recv().
        with self._send_lock:
            if not self._closed:
                self._sendall(frame)

    def _sendall(self, frame: bytes) -> None:
        try:
            # One send() usually takes the whole frame; gevent's sendall() would first read
            # SO_SNDBUF with a getsockopt syscall, on every frame.
            sent = self._sock.send(frame)
            if sent < len(frame):
                self._sock.sendall(memoryview(frame)[sent:])
        except OSError as exc:
            self._abort()
            raise ConnectionLost(f"sending to {self.url} failed: {exc}") from exc
        except BaseException:
            # Interrupted mid-write (gevent.Timeout, GreenletExit): part of a frame may be on
            # the wire and nothing else can follow it on this stream.
            self._abort()
            raise

    def _fill(self) -> None:
        """One socket read into the parser; returns quietly if close() interrupted it."""
        if self._unanswered > 1 and _TCP_QUICKACK is not None:
            # The TopGun server (like gevent-websocket) leaves Nagle on: with two or more replies
            # due, it holds the second until we ACK the first, and Linux delays that ACK by
            # 40 ms, so a pipelined burst stalls ~44 ms. QUICKACK makes the kernel ACK at once
            # (and the kernel clears it again, hence per read). Only when several messages are
            # unanswered: in request/response use the ACK rides on our next request, while
            # QUICKACK would add an ACK packet per reply (2 segments out per round trip, not 1).
            try:
                self._sock.setsockopt(gsocket.IPPROTO_TCP, _TCP_QUICKACK, 1)
            except OSError:
                pass
        try:
            data = self._sock.recv(min(max(self._parser.missing, _CHUNK), _MAX_READ))
        except OSError as exc:
            if self._closed:        # close() in another greenlet cancelled this read
                return
            self._abort()
            raise ConnectionLost(f"connection to {self.url} lost: {exc}") from exc
        if not data:
            if self._closed:
                return
            self._abort()
            raise ConnectionLost(f"{self.url} closed the TCP connection without a WebSocket close")
        self._parser.feed(data)

    def _shutdown(self, code: int) -> None:
        """Mark closed, send a close frame unless another greenlet is mid-write, close the socket."""
        if self._closed:
            return
        self._closed = True
        # Never wait here: a close frame cannot go inside someone else's frame, and a
        # non-blocking send cannot hang close() on a peer that stopped reading.
        if self._send_lock.acquire(blocking=False):
            try:
                self._sock.settimeout(0.0)
                self._sock.send(self._writer.frame(code.to_bytes(2, "big"), OP_CLOSE))
            except OSError:
                pass
            finally:
                self._send_lock.release()
        _close_quietly(self._sock)

    def _abort(self) -> None:
        if not self._closed:
            self._closed = True
            log.info("lost connection to %s", self.url)
            _close_quietly(self._sock)


def _parse_url(url: str) -> tuple[bool, str, int, str, str]:
    """Split a ws:// or wss:// URL into (tls, host, port, Host header, request target)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ConfigurationError(f"invalid WebSocket URL {url!r}: {exc}") from exc
    if parts.scheme not in ("ws", "wss"):
        raise ConfigurationError(f"WebSocket URL must start with ws:// or wss://, got {url!r}")
    tls = parts.scheme == "wss"
    host = parts.hostname
    if not host:
        raise ConfigurationError(f"WebSocket URL has no host: {url!r}")
    host_header = f"[{host}]" if ":" in host else host
    if port is None:
        port = 443 if tls else 80
    else:
        host_header = f"{host_header}:{port}"
    resource = quote(parts.path or "/", safe="/%:@!$&'()*+,;=-._~")
    if parts.query:
        resource = f"{resource}?{quote(parts.query, safe='/?%:@!$&()*+,;=-._~')}"
    return tls, host, port, host_header, resource


_default_context: Optional[ssl.SSLContext] = None


def default_ssl_context() -> ssl.SSLContext:
    """The context ``wss://`` uses when none is given: system trust store, hostname check."""
    global _default_context
    if _default_context is None:
        # Built once: loading the system trust store takes milliseconds.
        _default_context = gssl.create_default_context()
    return _default_context


def _wrap_tls(sock: Any, host: str, context: Optional[ssl.SSLContext]) -> Any:
    """Wrap a connected TCP socket in a gevent SSL socket; the handshake is left to the caller."""
    context = default_ssl_context() if context is None else context
    # gevent's cooperative SSLSocket, built the way gevent.ssl.SSLContext.wrap_socket builds it,
    # so that a stdlib ssl.SSLContext (a user's, made without monkey-patching) works too: its own
    # wrap_socket would return a blocking stdlib socket. server_hostname gives SNI and the
    # hostname check (an IP address is checked against the certificate's IP SANs, without SNI).
    return gssl.SSLSocket(sock=sock, server_hostname=host, do_handshake_on_connect=False, _context=context)


def _handshake(sock: Any, host_header: str, resource: str, url: str) -> bytes:
    """Send the upgrade request and check the 101 answer; returns bytes read past the headers."""
    key = base64.b64encode(os.urandom(16))
    sock.sendall(f"GET {resource} HTTP/1.1\r\nHost: {host_header}\r\nUpgrade: websocket\r\n"
                 f"Connection: Upgrade\r\nSec-WebSocket-Key: {key.decode()}\r\n"
                 f"Sec-WebSocket-Version: 13\r\n\r\n".encode("ascii"))
    buf = bytearray()
    end = -1
    while end < 0:
        if len(buf) > _MAX_HANDSHAKE:
            raise ConnectionLost(f"WebSocket handshake with {url} failed: headers exceed {_MAX_HANDSHAKE} bytes")
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionLost(f"{url} closed the connection during the WebSocket handshake")
        buf += chunk
        end = buf.find(b"\r\n\r\n")
    status, *lines = bytes(buf[:end]).decode("latin-1").split("\r\n")
    fields = status.split(" ", 2)
    if len(fields) < 2 or not fields[0].startswith("HTTP/") or fields[1] != "101":
        hint = f" (HTTP 404: is the path /ws? {path_hint(url)})" if fields[1:2] == ["404"] else ""
        raise ConnectionLost(f"WebSocket handshake with {url} refused: {status!r}{hint}")
    headers: dict[str, str] = {}
    for line in lines:
        name, sep, value = line.partition(":")
        name, value = name.strip().lower(), value.strip()
        if not sep or not name:
            raise ConnectionLost(f"WebSocket handshake with {url} failed: malformed header line {line!r}")
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    expected = base64.b64encode(hashlib.sha1(key + _GUID).digest()).decode()
    problem = None
    if headers.get("upgrade", "").lower() != "websocket":
        problem = f"Upgrade header is {headers.get('upgrade')!r}"
    elif "upgrade" not in [t.strip().lower() for t in headers.get("connection", "").split(",")]:
        problem = f"Connection header is {headers.get('connection')!r}"
    elif headers.get("sec-websocket-accept") != expected:
        problem = "Sec-WebSocket-Accept does not match the key"
    elif headers.get("sec-websocket-extensions"):
        problem = f"server enabled extensions we did not offer: {headers['sec-websocket-extensions']!r}"
    if problem:
        raise ConnectionLost(f"WebSocket handshake with {url} failed: {problem}")
    return bytes(buf[end + 4:])


def path_hint(url: str) -> str:
    """What to try when a server refuses or drops the upgrade: TopGun serves WebSockets at ``/ws``."""
    parts = urlsplit(url)
    fixed = f"{parts.scheme}://{parts.netloc}/ws"
    if parts.path in ("/ws", "/ws/"):
        return "the TopGun server serves WebSockets at /ws; is this a TopGun server?"
    return f"the TopGun server serves WebSockets at /ws: try {fixed}"


def _close_quietly(sock: Any) -> None:
    try:
        sock.close()
    except OSError:
        pass
