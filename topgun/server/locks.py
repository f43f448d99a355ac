"""Locks on one dev node: LOCK_REQUEST / LOCK_RELEASE answered with LOCK_GRANTED / LOCK_RELEASED.

The real server's rules (WIRE.md section 13, probe_notes.md section 9):

- no wait queue: a lock held by another connection is refused at once with
  ``LOCK_RELEASED {requestId, name, success: false}``; so are ``ttl: 0`` and an invalid name
  (the topic name rule);
- the holding connection asking again is granted again with the same fencing token;
- fencing tokens count up per name on this node (1, 2, 3, ...);
- a release with the wrong token gets ``success: false``; with the right one ``true``;
- a lock is freed when its holder's connection closes, and once its ``ttl`` (ms) has passed.
  Expiry is checked when the name is next asked for, which is all a client can observe.

Lock state is node-local and not replicated, as on the real server: when the node dies the
lock is gone (and its holder's connection with it, which is how the holder learns).

Not here: routing (clients route a lock to its name's partition owner), the socket.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, cast

from .connection import ClientConnection
from .topics import valid_name
from .writes import BadFrame

__all__ = ["Locks"]


@dataclass
class _Held:
    cid: int
    token: int
    expires: Optional[float]   # monotonic seconds, None without ttl


class Locks:
    """The locks of one node.

    Args:
        monotonic: the node's monotonic clock (ttl expiry).
    """

    def __init__(self, monotonic: Callable[[], float]) -> None:
        self._monotonic = monotonic
        self.held: Dict[str, _Held] = {}
        self.tokens: Dict[str, int] = {}

    @staticmethod
    def _payload(d: Dict[str, Any]) -> Dict[str, Any]:
        p = d.get("payload")
        if type(p) is not dict:
            raise BadFrame(f"{d.get('type')} needs a payload map")
        return p

    def _holder(self, name: str) -> Optional[_Held]:
        held = self.held.get(name)
        if held is not None and held.expires is not None and self._monotonic() >= held.expires:
            del self.held[name]
            return None
        return held

    def on_request(self, conn: ClientConnection, d: Dict[str, Any]) -> None:
        p = self._payload(d)
        request_id, name, ttl = p.get("requestId"), p.get("name"), p.get("ttl")
        if type(request_id) is not str:
            raise BadFrame("LOCK_REQUEST needs a string requestId")
        if type(ttl) is float and ttl.is_integer():
            ttl = int(ttl)
        if ttl is not None and (type(ttl) is not int or ttl < 0):
            raise BadFrame(f"LOCK_REQUEST ttl must be a non-negative int (ms), got {ttl!r}")

        def deny() -> None:
            conn.send_wire({"type": "LOCK_RELEASED", "payload": {
                "requestId": request_id, "name": name, "success": False}})

        if not valid_name(name) or ttl == 0:
            deny()   # what the real server answers for these
            return
        name = cast(str, name)
        held = self._holder(name)
        if held is not None and held.cid != conn.cid:
            deny()
            return
        expires = None if ttl is None else self._monotonic() + ttl / 1000.0
        if held is None:
            token = self.tokens[name] = self.tokens.get(name, 0) + 1
            self.held[name] = held = _Held(conn.cid, token, expires)
        else:
            held.expires = expires
        conn.send_wire({"type": "LOCK_GRANTED", "payload": {
            "requestId": request_id, "name": name, "fencingToken": held.token}})

    def on_release(self, conn: ClientConnection, d: Dict[str, Any]) -> None:
        p = self._payload(d)
        name, token, request_id = p.get("name"), p.get("fencingToken"), p.get("requestId")
        if type(token) is float and token.is_integer():
            token = int(token)
        if type(name) is not str or type(token) is not int:
            raise BadFrame("LOCK_RELEASE needs a string name and an int fencingToken")
        held = self._holder(name)
        success = held is not None and held.token == token
        if success:
            del self.held[name]
        conn.send_wire({"type": "LOCK_RELEASED", "payload": {
            "requestId": request_id if type(request_id) is str else "", "name": name, "success": success}})

    def drop_connection(self, conn: ClientConnection) -> None:
        for name in [n for n, h in self.held.items() if h.cid == conn.cid]:
            del self.held[name]

    def __repr__(self) -> str:
        return f"<Locks held={len(self.held)}>"
