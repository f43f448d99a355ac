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

What it is given: the node's id, its :class:`~topgun.server.table.LiveTable`, its store, its
peers (:class:`~topgun.server.membership.Membership`), ``publish(changed, origin)`` for the
events of writes it applied as owner, ``interested`` (the set of map names anyone subscribes
to, kept up to date in place by the subscriptions; writes to other maps publish nothing), a
``spawn`` for retries and the clock.

Not here: IO of its own (it talks to peers through the membership and never blocks the
caller; only retries run in their own node-owned greenlets), decoding client frames and
acknowledging them (the node), computing events (``subscriptions.py``).
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Dict, List, Optional, Sequence, Set, Tuple

from topgun.clock import Clock
from topgun.protocol.fastpath import WRITE_CONCERN_LEVELS, WRITE_CONCERNS

from .membership import Membership
from .store import NO_CHANGE, Store, Write, pid_of
from .table import LiveTable

__all__ = ["Writer", "BadFrame", "Unsupported", "LimitExceeded", "LEVELS", "LEVEL_NAMES", "APPLIED", "REPLICATED",
           "parse_ops", "WRITE_DEADLINE_S"]

log = logging.getLogger(__name__)

LEVELS = WRITE_CONCERN_LEVELS         # name -> strength, shared with the client
LEVEL_NAMES = dict(enumerate(WRITE_CONCERNS))
APPLIED, REPLICATED = LEVELS["APPLIED"], LEVELS["REPLICATED"]
WRITE_DEADLINE_S = 8.0
MAX_HOPS = 3
RETRY_PAUSE_S = 0.1

Done = Callable[[Optional[int]], None]
Origin = Tuple[str, int]
Publish = Callable[[List[Tuple[Write, Any]], Origin], None]


class BadFrame(Exception):
    """A frame we answer with ERROR ``code`` (400)."""

    code = 400

    def __init__(self, message: str, last_id: Optional[str] = None) -> None:
        super().__init__(message)
        self.last_id = last_id


class Unsupported(BadFrame):
    """A known message (or op kind) the dev server does not implement: ERROR 501."""

    code = 501


class LimitExceeded(BadFrame):
    """A request past a per-connection bound (live queries): ERROR 429."""

    code = 429


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


def parse_ops(ops: Any, now: Callable[[], Tuple[int, int, str]]) -> Tuple[List[Write], int]:
    """Turn wire ops into :class:`~topgun.server.store.Write` tuples.

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
            writes.append(Write(pid_of(key), map_name, key, ts[0], ts[1], ts[2], None, None, False))
        elif rec is NO_CHANGE:
            continue  # a put without a record stores nothing (still acknowledged)
        else:
            ts = _ts(rec)
            ttl = rec.get("ttlMs")
            if ttl is not None and type(ttl) is not int:
                raise BadFrame("record.ttlMs must be an integer")
            writes.append(Write(pid_of(key), map_name, key, ts[0], ts[1], ts[2], rec.get("value"), ttl, True))
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

    def __init__(self, node_id: str, tables: LiveTable, store: Store, peers: Membership, *,
                 publish: Publish, interested: Set[str], spawn: Callable[..., Any], clock: Clock) -> None:
        self.node_id = node_id
        self.tables = tables
        self.store = store
        self.peers = peers
        self.publish = publish
        self.interested = interested
        self.spawn = spawn
        self.clock = clock
        self.closed = False
        self.retries = 0

    def close(self) -> None:
        """Pending retries give up (``done(None)``) instead of trying again."""
        self.closed = True

    def write(self, writes: Sequence[Write], level: int, origin: Origin, done: Done,
              deadline: float, hops: int = 0) -> None:
        table = self.tables.current
        me = self.node_id
        owners = table.owners
        local: List[Write] = []
        remote: Dict[str, List[Write]] = {}
        for w in writes:
            owner = owners[w.pid]
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

    def _apply_owned(self, writes: List[Write], level: int, origin: Origin, done: Done,
                     deadline: float, hops: int, version: int) -> None:
        apply = self.store.apply
        interested = self.interested
        changed = []
        for w in writes:
            old = apply(w.pid, w.map, w.key, (w.millis, w.counter, w.node_id), w.value, w.ttl, w.live)
            if old is not NO_CHANGE and w.map in interested:
                changed.append((w, old))
        if changed:
            self.publish(changed, origin)
        targets = self.tables.targets
        by_target: Dict[str, List[Write]] = {}
        for w in writes:
            for t in targets[w.pid]:
                by_target.setdefault(t, []).append(w)
        if not by_target:
            done(APPLIED)
            return
        members = self.peers
        if level < REPLICATED:
            for t, ws in by_target.items():
                members.send(t, {"type": "CLUSTER_REPLICATE", "writes": ws})
            done(APPLIED)
            return
        state = [len(by_target)]
        failed: List[Write] = []

        def replied(ws: List[Write]) -> Callable[[Optional[Dict[str, Any]]], None]:
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

        remaining = max(0.05, deadline - self.clock.monotonic())
        for t, ws in by_target.items():
            members.call(t, {"type": "CLUSTER_REPLICATE", "writes": ws}, replied(ws), timeout=remaining)

    def _forward(self, owner: str, writes: List[Write], level: int, origin: Origin, done: Done,
                 deadline: float, hops: int, version: int) -> None:
        if hops >= MAX_HOPS:
            self._retry(writes, level, origin, done, deadline, 0, version)
            return
        remaining = deadline - self.clock.monotonic()

        def on_reply(reply: Optional[Dict[str, Any]]) -> None:
            if reply is not None and reply.get("level") is not None:
                done(reply["level"])
            else:
                self._retry(writes, level, origin, done, deadline, hops, version)

        self.peers.call(owner, {
            "type": "CLUSTER_FORWARD", "writes": writes, "level": level, "origin": list(origin),
            "hops": hops + 1, "remaining": remaining}, on_reply, timeout=max(0.05, remaining))

    def _retry(self, writes: List[Write], level: int, origin: Origin, done: Done,
               deadline: float, hops: int, version: int) -> None:
        clock = self.clock
        self.retries += 1

        def again() -> None:
            left = deadline - clock.monotonic()
            if left > 0:
                self.tables.wait_for_newer(version, min(RETRY_PAUSE_S, left))
            if clock.monotonic() >= deadline or self.closed:
                done(None)
                return
            self.write(writes, level, origin, done, deadline, hops)

        self.spawn(again)

    # -- peer side

    def on_forward(self, peer: str, msg: Dict[str, Any]) -> None:
        origin = msg.get("origin") or ("", 0)
        deadline = self.clock.monotonic() + min(float(msg.get("remaining") or WRITE_DEADLINE_S), WRITE_DEADLINE_S)

        def done(level: Optional[int]) -> None:
            self.peers.reply(peer, msg, {"level": level})

        writes = [Write._make(w) for w in msg["writes"]]   # arrays on the wire
        self.write(writes, int(msg.get("level", APPLIED)), (origin[0], origin[1]), done,
                   deadline, int(msg.get("hops", 1)))

    def on_replicate(self, peer: str, msg: Dict[str, Any]) -> None:
        self.store.apply_writes(msg["writes"])
        if msg.get("rid") is not None:
            self.peers.reply(peer, msg, {})

    def __repr__(self) -> str:
        return f"<Writer {self.node_id} retries={self.retries}>"
