"""One client WebSocket connection as the node sees it: auth state, live queries, outgoing frames.

Two bounds keep slow consumers from growing a node's memory: past ``slow_consumer_bytes``
queued, a connection stops getting events (acks and replies still go out), and every client
socket of a node counts against one node-wide :class:`~topgun.server.frames.OutboundBudget`
(``NODE_OUTBOUND_BYTES`` by default), which disconnects the slowest connection when passed.

Not here: what is sent (the node and the components decide), the socket itself (``frames.py``).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, Optional, Tuple

from topgun.protocol import codec

from .frames import FrameSocket

if TYPE_CHECKING:
    from .queries import Query

__all__ = ["ClientConnection", "SLOW_CONSUMER_BYTES", "NODE_OUTBOUND_BYTES", "MAX_QUERIES_PER_CONNECTION"]

# Past this many queued bytes a connection stops getting events (acks still go out), like the
# real server's bounded outbound queue that drops broadcasts for slow consumers.
SLOW_CONSUMER_BYTES = 32 * 1024 * 1024
# All client connections of a node together: past this, the slowest one is disconnected.
NODE_OUTBOUND_BYTES = 128 * 1024 * 1024
# Live queries one connection may hold; a QUERY_SUB past it gets ERROR 429.
MAX_QUERIES_PER_CONNECTION = 1000


class ClientConnection:
    """A client socket: ``send``/``send_wire`` queue frames; ``queries`` holds its live queries."""

    __slots__ = ("cid", "fs", "authed", "user_id", "queries", "map_version_sent", "hinted_version",
                 "dropped_events", "slow_bytes")

    def __init__(self, cid: int, fs: FrameSocket, authed: bool, slow_bytes: int = SLOW_CONSUMER_BYTES) -> None:
        self.cid = cid
        self.fs = fs
        self.slow_bytes = slow_bytes
        self.authed = authed
        self.user_id: Optional[str] = None
        # queryId -> (map name, compiled query). Scoped per connection (documented difference).
        self.queries: Dict[str, Tuple[str, "Query"]] = {}
        self.map_version_sent = 0
        self.hinted_version = 0
        self.dropped_events = 0

    def send(self, data: bytes) -> None:
        self.fs.send(data)

    def send_wire(self, d: Dict[str, Any]) -> None:
        self.fs.send(codec.encode_wire(d))

    @property
    def behind(self) -> bool:
        """Too far behind to be sent events."""
        return self.fs.pending_bytes > self.slow_bytes

    def send_event(self, data: bytes) -> None:
        """Queue an event frame unless this connection is too far behind."""
        if self.fs.pending_bytes > self.slow_bytes:
            self.dropped_events += 1
            return
        self.fs.send(data)

    def error(self, code: Any, message: str, details: Any = None) -> None:
        self.send_wire({"type": "ERROR", "payload": {"code": code, "message": message, "details": details}})

    @property
    def closed(self) -> bool:
        return self.fs.closed

    def __repr__(self) -> str:
        state = "closed" if self.fs.closed else "open"
        return f"<ClientConnection #{self.cid} {state} queries={len(self.queries)} authed={self.authed}>"
