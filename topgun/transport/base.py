"""The Transport protocol: an ordered, message-framed byte pipe to one server.

A transport moves whole binary messages and nothing else: it does not know about msgpack,
sessions or requests (that is ``topgun.protocol``), and it does not reconnect (that is the
layer above). Implementations: :class:`~topgun.transport.websocket.WebSocketTransport` and
:func:`~topgun.transport.memory.memory_pair` for tests.

Contract shared by every implementation:

- ``send``/``send_many`` may be called from several greenlets at once; messages never interleave.
- ``recv`` is called by one greenlet only (the connection's reader). It returns the next binary
  message, ``None`` once the connection has closed cleanly (either side), and raises
  :class:`~topgun.errors.ConnectionLost` when the peer vanished without a close.
- After ``close()`` (or a clean close by the peer) ``send`` raises ``ConnectionLost`` and
  ``recv`` returns ``None``.
- A message larger than ``max_message_size`` raises :class:`~topgun.errors.LocalProtocolError`
  on send, before anything is written.
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable

__all__ = ["Transport", "DEFAULT_MAX_MESSAGE_SIZE"]

# The TopGun server refuses WebSocket messages above 16 MiB.
DEFAULT_MAX_MESSAGE_SIZE = 16 * 1024 * 1024


@runtime_checkable
class Transport(Protocol):
    """An ordered pipe of binary messages to one peer."""

    def send(self, data: bytes) -> None:
        """Send one binary message.

        Raises:
            LocalProtocolError: ``data`` is larger than the message size limit.
            ConnectionLost: the transport is closed or the write failed.
        """
        ...

    def send_many(self, frames: list[bytes]) -> None:
        """Send several binary messages with one write; all or none are size-checked first."""
        ...

    def recv(self) -> bytes | None:
        """Block this greenlet until the next binary message; ``None`` after a clean close.

        Raises:
            ConnectionLost: the peer went away without a close handshake.
            RemoteProtocolError: the peer broke the framing rules (the transport is closed).
        """
        ...

    def close(self) -> None:
        """Close the transport; idempotent, never blocks for long."""
        ...

    @property
    def closed(self) -> bool:
        """True once the transport can no longer send."""
        ...
