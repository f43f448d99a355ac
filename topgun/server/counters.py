"""PN counters on one dev node: COUNTER_REQUEST / COUNTER_SYNC, COUNTER_RESPONSE / COUNTER_UPDATE.

The real server's rules (WIRE.md section 14): a counter's state is ``{"p": {actor: total},
"n": {actor: total}}``; COUNTER_SYNC merges the sender's state by per-actor maximum (``p`` and
``n`` separately), answers the sender with COUNTER_UPDATE (the merged state) and sends the same
to every other connection subscribed to the counter; COUNTER_REQUEST answers COUNTER_RESPONSE.
Both subscribe the connection, and the subscription ends with it. Totals go out as float64.
State is in memory and node-local, as on the real server.

Where it differs (the dev server answers bad requests): a state without ``p``/``n`` maps of
numbers (the TypeScript client's ``positive``/``negative``, for one) gets ERROR 400, where the
real server drops the frame silently.

Not here: routing (clients route a counter to its name's partition owner), the socket.
"""
from __future__ import annotations

import math
from typing import Any, Dict

from topgun.protocol import codec

from .connection import ClientConnection
from .writes import BadFrame

__all__ = ["Counters"]


def _name(d: Dict[str, Any]) -> str:
    p = d.get("payload")
    name = p.get("name") if type(p) is dict else None
    if type(name) is not str:
        raise BadFrame(f"{d.get('type')} needs a string payload.name")
    return name


class Counters:
    """The PN counters of one node and the connections subscribed to each."""

    def __init__(self) -> None:
        self.states: Dict[str, Dict[str, Dict[str, float]]] = {}
        self.subscribers: Dict[str, Dict[int, ClientConnection]] = {}

    def _state(self, name: str) -> Dict[str, Dict[str, float]]:
        state = self.states.get(name)
        if state is None:
            state = self.states[name] = {"p": {}, "n": {}}
        return state

    def _frame(self, kind: str, name: str) -> bytes:
        return codec.encode_wire({"type": kind, "payload": {"name": name, "state": self._state(name)}})

    def on_request(self, conn: ClientConnection, d: Dict[str, Any]) -> None:
        name = _name(d)
        self.subscribers.setdefault(name, {})[conn.cid] = conn
        conn.send(self._frame("COUNTER_RESPONSE", name))

    def on_sync(self, conn: ClientConnection, d: Dict[str, Any]) -> None:
        name = _name(d)
        incoming = d["payload"].get("state")
        if type(incoming) is not dict or not all(type(incoming.get(k)) is dict for k in ("p", "n")):
            raise BadFrame("COUNTER_SYNC needs payload.state = {p: {actor: total}, n: {actor: total}}")
        for side in ("p", "n"):
            for actor, total in incoming[side].items():
                if type(actor) is not str or type(total) not in (int, float) or not math.isfinite(total):
                    raise BadFrame(f"COUNTER_SYNC state.{side} needs str actors and finite numbers")
        state = self._state(name)
        for side in ("p", "n"):
            mine = state[side]
            for actor, total in incoming[side].items():
                if total > mine.get(actor, 0.0):
                    mine[actor] = float(total)
        subs = self.subscribers.setdefault(name, {})
        subs[conn.cid] = conn
        frame = self._frame("COUNTER_UPDATE", name)
        conn.send(frame)
        for cid, other in list(subs.items()):
            if cid != conn.cid and not other.closed:
                other.send_event(frame)

    def drop_connection(self, conn: ClientConnection) -> None:
        for name in [n for n, subs in self.subscribers.items() if conn.cid in subs]:
            subs = self.subscribers[name]
            subs.pop(conn.cid, None)
            if not subs:
                del self.subscribers[name]

    def __repr__(self) -> str:
        return f"<Counters counters={len(self.states)}>"
