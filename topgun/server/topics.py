"""Topics on one dev node: TOPIC_SUB / TOPIC_UNSUB / TOPIC_PUB and the TOPIC_MESSAGE fan-out.

The real server's rules (WIRE.md section 12): names are 1-256 characters of
``[A-Za-z0-9_-.:/]``; SUB, UNSUB and PUB get no reply; a publication goes to every other
subscribed connection of this node as ``TOPIC_MESSAGE {topic, data, timestamp}`` (server wall
ms, no ``publisherId``), never back to the publishing connection; a connection's
subscriptions end with it. Topics are node-local, as on the real server: clients meet because
they route each topic to its name's partition owner.

Where it differs (the dev server answers bad requests): an invalid name or a malformed frame
gets ERROR 400 instead of silence.

Not here: routing between nodes (there is none), the socket (``connection.py``).
"""
from __future__ import annotations

import re
from typing import Any, Callable, Dict

from topgun.protocol import codec

from .connection import ClientConnection
from .writes import BadFrame

__all__ = ["Topics", "valid_name"]

_NAME = re.compile(r"[A-Za-z0-9_\-.:/]{1,256}")


def valid_name(name: Any) -> bool:
    """The real server's rule for topic and lock names."""
    return type(name) is str and _NAME.fullmatch(name) is not None


def _topic(d: Dict[str, Any]) -> str:
    p = d.get("payload")
    topic = p.get("topic") if type(p) is dict else None
    if not valid_name(topic):
        raise BadFrame(f"{d.get('type')} needs payload.topic of 1-256 characters of A-Za-z0-9_-.:/, got {topic!r}")
    return topic  # type: ignore[return-value]


class Topics:
    """Topic subscriptions of one node's connections.

    Args:
        now_ms: the node's wall clock (the ``timestamp`` of each TOPIC_MESSAGE).
    """

    def __init__(self, now_ms: Callable[[], int]) -> None:
        self._now_ms = now_ms
        self.subscribers: Dict[str, Dict[int, ClientConnection]] = {}

    def on_sub(self, conn: ClientConnection, d: Dict[str, Any]) -> None:
        self.subscribers.setdefault(_topic(d), {})[conn.cid] = conn

    def on_unsub(self, conn: ClientConnection, d: Dict[str, Any]) -> None:
        topic = _topic(d)
        subs = self.subscribers.get(topic)
        if subs is not None:
            subs.pop(conn.cid, None)
            if not subs:
                del self.subscribers[topic]

    def on_pub(self, conn: ClientConnection, d: Dict[str, Any]) -> None:
        topic = _topic(d)
        subs = self.subscribers.get(topic)
        if not subs:
            return
        frame = codec.encode_wire({"type": "TOPIC_MESSAGE", "payload": {
            "topic": topic, "data": d["payload"].get("data"), "timestamp": self._now_ms()}})
        for cid, other in list(subs.items()):
            if cid != conn.cid and not other.closed:   # the publisher is excluded, as on the real server
                other.send_event(frame)

    def drop_connection(self, conn: ClientConnection) -> None:
        for topic in [t for t, subs in self.subscribers.items() if conn.cid in subs]:
            subs = self.subscribers[topic]
            subs.pop(conn.cid, None)
            if not subs:
                del self.subscribers[topic]

    def __repr__(self) -> str:
        return f"<Topics topics={len(self.subscribers)}>"
