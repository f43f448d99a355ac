"""RawClient: msgpack dicts over one WebSocket, no client logic. For tests and benchmarks.

It speaks to the dev server and to the real ``topgun-server`` alike (gevent sockets, so it can
share a hub with an :class:`~topgun.server.EmbeddedCluster`). Not part of the client API.
"""
from __future__ import annotations

import time
from typing import Any, Callable, Dict, List, Optional

import msgpack
from gevent.pool import Pool
from gevent.queue import Empty, Queue

from topgun.protocol import fastpath

from .frames import MAX_PEER_FRAME, FrameSocket, dial, split_ws_url

__all__ = ["RawClient", "lww_op"]


def lww_op(map_name: str, key: str, value: Any, millis: int, counter: int = 0, node_id: str = "client",
           op_id: Optional[str] = None, op_type: str = "PUT") -> Dict[str, Any]:
    """One ClientOp dict for a put (or, with ``op_type="REMOVE"``, a remove); no ``id`` without ``op_id``."""
    op = fastpath.lww_op(op_id or "", map_name, key, op_type, value, (millis, counter, node_id))
    if op_id is None:
        del op["id"]
    return op


class RawClient:
    """One WebSocket to ``url`` (path taken from the URL, default ``/ws``)."""

    def __init__(self, url: str, timeout: float = 5.0, *, token: Optional[str] = None) -> None:
        self.url = url
        self._pool = Pool(None)
        path = "/" + url.split("/", 3)[3] if url.count("/") >= 3 else "/ws"
        split_ws_url(url)
        self.fs: FrameSocket = dial(url, path, timeout=timeout, spawn=self._pool.spawn, max_size=MAX_PEER_FRAME,
                                    name="raw")
        self.skipped: List[Dict[str, Any]] = []
        # A reader greenlet, so a timeout never interrupts a frame half-read.
        self._inbox: Queue = Queue()
        self._pool.spawn(self._read)
        if token is not None:  # a JWT-mode node answers nothing else until AUTH succeeds
            self.request({"type": "AUTH", "token": token}, "AUTH_ACK", timeout)

    def _read(self) -> None:
        try:
            while True:
                data = self.fs.recv()
                self._inbox.put(data)
                if data is None:
                    return
        except Exception as exc:  # FrameTooLarge and friends end the stream too
            self._inbox.put(None)
            raise exc

    # -- sending

    def send(self, msg: Dict[str, Any]) -> None:
        self.fs.send(msgpack.packb(msg, use_bin_type=True))

    def send_bytes(self, data: bytes) -> None:
        self.fs.send(data)

    # -- receiving

    def recv(self, timeout: float = 2.0) -> Optional[Dict[str, Any]]:
        """The next frame as a dict; ``None`` on timeout. Raises EOFError when the socket closed."""
        try:
            data = self._inbox.get(timeout=timeout)
        except Empty:
            return None
        if data is None:
            self._inbox.put(None)  # stay closed for later calls
            raise EOFError("connection closed")
        if isinstance(data, str):
            return {"type": "<text>", "text": data}
        return msgpack.unpackb(data, raw=False, strict_map_key=False)

    def expect(self, kind: str, timeout: float = 2.0,
               where: Optional[Callable[[Dict[str, Any]], bool]] = None) -> Dict[str, Any]:
        """Read until a frame of type ``kind`` (matching ``where``) arrives; others are kept in ``skipped``.

        Raises:
            AssertionError: none arrived in ``timeout``.
        """
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            msg = self.recv(left) if left > 0 else None
            if msg is None:
                raise AssertionError(f"no {kind} within {timeout}s (skipped {[m.get('type') for m in self.skipped]})")
            if msg.get("type") == kind and (where is None or where(msg)):
                return msg
            self.skipped.append(msg)

    def drain(self, quiet: float = 0.2) -> List[Dict[str, Any]]:
        """Every frame that arrives until ``quiet`` seconds pass without one."""
        out: List[Dict[str, Any]] = []
        while True:
            msg = self.recv(quiet)
            if msg is None:
                return out
            out.append(msg)

    def wait_closed(self, timeout: float = 5.0) -> bool:
        """Read (and discard) until the server closes the connection; False on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                self.recv(deadline - time.monotonic())
            except EOFError:
                return True
        return False

    def request(self, msg: Dict[str, Any], kind: str, timeout: float = 2.0,
                where: Optional[Callable[[Dict[str, Any]], bool]] = None) -> Dict[str, Any]:
        self.send(msg)
        return self.expect(kind, timeout, where)

    def close(self) -> None:
        self.fs.close()
        self._pool.kill(timeout=1.0)

    def __enter__(self) -> "RawClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<RawClient {self.url} {'closed' if self.fs.closed else 'open'}>"
