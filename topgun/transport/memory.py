"""An in-process Transport pair over gevent queues, for unit tests.

``a, b = memory_pair()``: what ``a`` sends, ``b`` receives, in order, and the other way round.
Semantics follow :mod:`topgun.transport.base`: closing one end makes the other end's ``recv``
return None once it has drained the messages sent before the close; ``send`` on a closed end,
or towards an end that has closed, raises ConnectionLost; oversized messages raise
LocalProtocolError. Not modelled: latency, partial writes, abrupt loss (wrap a transport in
``topgun.testing.faults.FaultyTransport`` for those).
"""
from __future__ import annotations

import logging

import gevent.queue

from topgun.errors import ConnectionLost, LocalProtocolError
from topgun.transport.base import DEFAULT_MAX_MESSAGE_SIZE

__all__ = ["MemoryTransport", "memory_pair"]

log = logging.getLogger(__name__)

_CLOSED = object()   # queued to wake a receiver: the sending end has closed


class MemoryTransport:
    """One end of :func:`memory_pair`."""

    def __init__(self, name: str, max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE) -> None:
        self.name = name
        self.max_message_size = max_message_size
        self._inbox: gevent.queue.Queue[object] = gevent.queue.Queue()
        self._peer: MemoryTransport | None = None
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def send(self, data: bytes) -> None:
        """Deliver one message to the peer's inbox (never blocks)."""
        self.send_many([data])

    def send_many(self, frames: list[bytes]) -> None:
        """Deliver several messages; all are size-checked before any is delivered."""
        for data in frames:
            if len(data) > self.max_message_size:
                raise LocalProtocolError(f"message of {len(data)} bytes exceeds the {self.max_message_size}-byte limit")
        peer = self._peer
        if self._closed or peer is None or peer._closed:
            raise ConnectionLost(f"{self!r} cannot send: {'peer' if not self._closed else 'this end'} is closed")
        for data in frames:
            peer._inbox.put(bytes(data))

    def recv(self) -> bytes | None:
        """Block this greenlet until the next message; None once either end has closed."""
        if self._closed:
            return None
        item = self._inbox.get()
        if item is _CLOSED:
            self._closed = True
            return None
        assert isinstance(item, bytes)
        return item

    def close(self) -> None:
        """Close this end: wakes our own blocked recv and, after its backlog, the peer's."""
        if self._closed:
            return
        self._closed = True
        self._inbox.put(_CLOSED)
        if self._peer is not None:
            self._peer._inbox.put(_CLOSED)
        log.debug("closed %r", self)

    def __repr__(self) -> str:
        return f"<MemoryTransport {self.name} {'closed' if self._closed else 'open'}>"


def memory_pair(max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE) -> tuple[MemoryTransport, MemoryTransport]:
    """Two connected in-memory transports, named ``client`` and ``server``.

    Args:
        max_message_size: limit enforced on send by both ends.

    Returns:
        ``(client, server)``.
    """
    client, server = MemoryTransport("client", max_message_size), MemoryTransport("server", max_message_size)
    client._peer, server._peer = server, client
    return client, server
