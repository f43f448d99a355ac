"""The write path: validate ops, route them to owners, apply with LWW, replicate, acknowledge.

``Writer.write(writes, level, origin, done, deadline)`` is the one entry point, used for a
client's CLIENT_OP/OP_BATCH and for writes forwarded by another node. It splits the writes by
owner under the node's current partition table: the node applies its own share and replicates
it to the partition's other holders (one frame per target node, not per op); other owners get
one CLUSTER_FORWARD each. ``done(level)`` runs once every part is confirmed, with the lowest
achieved level, or ``done(None)`` when the deadline passed first.

A part that fails (owner or backup unreachable, map changed under it) is retried from scratch
once the partition table changes (or after a short pause), until the deadline. Retrying is
safe because writes keep their client timestamps: applying one twice changes nothing.

No IO of its own: it talks to peers through ``node.membership`` and never blocks the caller;
only retries run in their own (node-owned) greenlets.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Tuple

from .store import NO_CHANGE, pid_of

if TYPE_CHECKING:
    from .node import Node

__all__ = ["Writer", "BadFrame", "Unsupported", "LEVELS", "LEVEL_NAMES", "APPLIED", "REPLICATED",
           "parse_ops", "WRITE_DEADLINE_S"]

log = logging.getLogger(__name__)

LEVELS = {"FIRE_AND_FORGET": 0, "MEMORY": 1, "APPLIED": 2, "REPLICATED": 3, "PERSISTED": 4}
LEVEL_NAMES = {v: k for k, v in LEVELS.items()}
APPLIED, REPLICATED = 2, 3
WRITE_DEADLINE_S = 8.0
MAX_HOPS = 3
RETRY_PAUSE_S = 0.1

Done = Callable[[Optional[int]], None]
Origin = Tuple[str, int]


class BadFrame(Exception):
    """A frame we answer with ERROR 400."""

    def __init__(self, message: str, last_id: Optional[str] = None) -> None:
        super().__init__(message)
        self.last_id = last_id


class Unsupported(BadFrame):
    """A known message (or op kind) the dev server does not implement: ERROR 501."""


def _ts(rec: Any) -> Tuple[int, int, str]:
    t = rec.get("timestamp") if type(rec) is dict else None
    if type(t) is not dict:
        raise BadFrame("record.timestamp must be a map")
    millis, counter, node = t.get("millis"), t.get("counter"), t.get("nodeId")
    if type(millis) is not int:
        if type(millis) is float and millis.is_integer():
            millis = int(millis)
        else:
            raise BadFrame("timestamp.millis must be an integer")
    if type(counter) is not int:
        if type(counter) is float and counter.is_integer():
            counter = int(counter)
        else:
            raise BadFrame("timestamp.counter must be an integer")
    if type(node) is not str:
        raise BadFrame("timestamp.nodeId must be a string")
    return millis, counter, node


def parse_ops(ops: Any, now: Callable[[], Tuple[int, int, str]]) -> Tuple[List[List[Any]], int]:
    """Turn wire ops into writes ``[pid, map, key, millis, counter, nodeId, value, ttl, live]``.

    Returns the writes and the highest ``writeConcern`` level any op asked for (-1 if none).
    ``now()`` stamps a remove that carries no timestamp.

    Raises:
        BadFrame: any op is malformed (the whole frame is rejected, as on the real server).
        Unsupported: an ORMap op.
    """
    if type(ops) is not list:
        raise BadFrame("ops must be a list")
    writes = []
    top = -1
    for op in ops:
        if type(op) is not dict:
            raise BadFrame("op must be a map")
        key, map_name = op.get("key"), op.get("mapName")
        if type(key) is not str or type(map_name) is not str:
            raise BadFrame("op.key and op.mapName must be strings")
        op_id, op_type = op.get("id"), op.get("opType")
        if (op_id is not None and type(op_id) is not str) or (op_type is not None and type(op_type) is not str):
            raise BadFrame("op.id and op.opType must be strings")
        wc = op.get("writeConcern")
        if wc is not None:
            level = LEVELS.get(wc) if type(wc) is str else None
            if level is None:
                raise BadFrame(f"unknown writeConcern {wc!r}")
            if level > top:
                top = level
        if op.get("orRecord") is not None or op.get("orTag") is not None:
            raise Unsupported("ORMap operations are not implemented by the dev server")
        rec = op.get("record", NO_CHANGE)
        if op_type == "REMOVE" or rec is None:
            ts = _ts(rec) if type(rec) is dict else now()
            writes.append([pid_of(key), map_name, key, ts[0], ts[1], ts[2], None, None, False])
        elif rec is NO_CHANGE:
            continue  # a put without a record stores nothing (still acknowledged)
        else:
            ts = _ts(rec)
            ttl = rec.get("ttlMs")
            if ttl is not None and type(ttl) is not int:
                raise BadFrame("record.ttlMs must be an integer")
            writes.append([pid_of(key), map_name, key, ts[0], ts[1], ts[2], rec.get("value"), ttl, True])
    return writes, top


class _Join:
    """Calls ``done`` once every part has reported, with the lowest level (None if any failed)."""

    __slots__ = ("n", "level", "done")

    def __init__(self, done: Done) -> None:
        self.n, self.done = 1, done
        self.level: Optional[int] = 99

    def part(self) -> Done:
        self.n += 1
        return self.report

    def report(self, level: Optional[int]) -> None:
        if self.level is not None:
            self.level = None if level is None else min(self.level, level)
        self.n -= 1
        if self.n == 0:
            self.done(self.level)


class Writer:
    """Routes, applies and replicates writes for one node."""

    def __init__(self, node: "Node") -> None:
        self.node = node
        self.retries = 0

    def write(self, writes: List[List[Any]], level: int, origin: Origin, done: Done,
              deadline: float, hops: int = 0) -> None:
        node = self.node
        table = node.table
        me = node.node_id
        owners = table.owners
        local: List[List[Any]] = []
        remote: Dict[str, List[List[Any]]] = {}
        for w in writes:
            owner = owners[w[0]]
            if owner == me:
                local.append(w)
            else:
                remote.setdefault(owner, []).append(w)
        join = _Join(done)
        if local:
            self._apply_owned(local, level, origin, join.part(), deadline, hops, table.version)
        for owner, ws in remote.items():
            self._forward(owner, ws, level, origin, join.part(), deadline, hops, table.version)
        join.report(99)

    def _apply_owned(self, writes: List[List[Any]], level: int, origin: Origin, done: Done,
                     deadline: float, hops: int, version: int) -> None:
        node = self.node
        apply = node.store.apply
        interested = node.subs.interested
        changed = []
        for w in writes:
            old = apply(w[0], w[1], w[2], (w[3], w[4], w[5]), w[6], w[7], w[8])
            if old is not NO_CHANGE and w[1] in interested:
                changed.append((w, old))
        if changed:
            node.subs.publish(changed, origin)
        targets = node.repl_targets
        by_target: Dict[str, List[List[Any]]] = {}
        for w in writes:
            for t in targets[w[0]]:
                by_target.setdefault(t, []).append(w)
        if not by_target:
            done(APPLIED)
            return
        members = node.membership
        if level < REPLICATED:
            for t, ws in by_target.items():
                members.send(t, {"type": "CLUSTER_REPLICATE", "writes": ws})
            done(APPLIED)
            return
        state = [len(by_target)]
        failed: List[List[Any]] = []

        def replied(ws: List[List[Any]]) -> Callable[[Optional[Dict[str, Any]]], None]:
            def on_reply(reply: Optional[Dict[str, Any]]) -> None:
                if reply is None:
                    failed.extend(ws)
                state[0] -= 1
                if state[0] == 0:
                    if failed:
                        self._retry(failed, level, origin, done, deadline, hops, version)
                    else:
                        done(REPLICATED)
            return on_reply

        remaining = max(0.05, deadline - node.clock.monotonic())
        for t, ws in by_target.items():
            members.call(t, {"type": "CLUSTER_REPLICATE", "writes": ws}, replied(ws), timeout=remaining)

    def _forward(self, owner: str, writes: List[List[Any]], level: int, origin: Origin, done: Done,
                 deadline: float, hops: int, version: int) -> None:
        if hops >= MAX_HOPS:
            self._retry(writes, level, origin, done, deadline, 0, version)
            return
        remaining = deadline - self.node.clock.monotonic()

        def on_reply(reply: Optional[Dict[str, Any]]) -> None:
            if reply is not None and reply.get("level") is not None:
                done(reply["level"])
            else:
                self._retry(writes, level, origin, done, deadline, hops, version)

        self.node.membership.call(owner, {
            "type": "CLUSTER_FORWARD", "writes": writes, "level": level, "origin": list(origin),
            "hops": hops + 1, "remaining": remaining}, on_reply, timeout=max(0.05, remaining))

    def _retry(self, writes: List[List[Any]], level: int, origin: Origin, done: Done,
               deadline: float, hops: int, version: int) -> None:
        node = self.node
        self.retries += 1

        def again() -> None:
            left = deadline - node.clock.monotonic()
            if left > 0:
                node.wait_for_table(version, min(RETRY_PAUSE_S, left))
            if node.clock.monotonic() >= deadline or node.stopped:
                done(None)
                return
            self.write(writes, level, origin, done, deadline, hops)

        node.spawn(again)

    # -- peer side

    def on_forward(self, peer: str, msg: Dict[str, Any]) -> None:
        node = self.node
        origin = msg.get("origin") or ("", 0)
        deadline = node.clock.monotonic() + min(float(msg.get("remaining") or WRITE_DEADLINE_S), WRITE_DEADLINE_S)

        def done(level: Optional[int]) -> None:
            node.membership.reply(peer, msg, {"level": level})

        self.write(msg["writes"], int(msg.get("level", APPLIED)), (origin[0], origin[1]), done,
                   deadline, int(msg.get("hops", 1)))

    def __repr__(self) -> str:
        return f"<Writer {self.node.node_id} retries={self.retries}>"

    def on_replicate(self, peer: str, msg: Dict[str, Any]) -> None:
        self.node.store.apply_writes(msg["writes"])
        if msg.get("rid") is not None:
            self.node.membership.reply(peer, msg, {})
