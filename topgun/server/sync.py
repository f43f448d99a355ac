"""LWW Merkle sync: SYNC_INIT, MERKLE_REQ_BUCKET (aggregate and routed), QUERY_SYNC_INIT.

Hashing and paths are WIRE.md 8.2 (see ``store.MerkleTree``). Replies, as probed on 2.2.0:

* aggregate paths ``""`` .. 3 hex chars sum the same path over every partition of the map;
  buckets are keyed by one hex char; a 3-char path answers SYNC_RESP_LEAF with every record
  in that leaf. A path that does not exist, or an unknown map, gets no reply.
* routed paths ``"PPP/<hex>"`` address one partition; bucket keys are full paths
  (``"015/1"``). ``"PPP/"`` is *always* answered, with ``{}`` buckets for an empty or unknown
  map; deeper paths that do not exist get no reply.

In a cluster, aggregate requests are gathered from every owner (CLUSTER_MERKLE with a list of
partitions). A routed request is answered by the partition's owner: a non-owner forwards it,
and answers from its own replica only if the owner cannot be reached and it is a backup.

What it is given: the node's id, its :class:`~topgun.server.table.LiveTable`, its store, its
peers, ``now()`` (the node's HLC, for the reply timestamps), ``gather`` (the live-query
gathering of ``subscriptions.py``, for QUERY_SYNC_INIT) and the node's clock.

Big maps: the first request builds a tree per partition (``Store.tree``: ~90 ms for 12,000 keys
over 271 partitions, unloaded), and a client's walk of every leaf sends 4,096 pipelined
requests that its connection's greenlet answers back to back, each going over 271 partitions.
So ``local_part`` yields to the hub (``clock.sleep(0)``), between partitions (it looks at
the clock every 8th), once ``_SLICE_S``
has passed since its last yield (in this or an earlier request: the time is kept across calls;
after an idle spell that costs one needless yield). One partition's tree is still built in one
go (a few hundred keys, unless a map holds millions). An aggregate therefore sums partitions as
each stands when it is reached, which is what a cluster's gather does anyway.

Not here: ORMap sync (``ormaps.py``), keeping the trees up to date
(``store.py``).
"""
from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional

from topgun.clock import Clock, GeventClock
from topgun.protocol import fastpath
from topgun.protocol.hashing import PARTITION_COUNT
from topgun.protocol.hlc import Timestamp

from .membership import Membership
from .store import MASK, Store, item_hash
from .table import LiveTable
from .writes import BadFrame

if TYPE_CHECKING:
    from .connection import ClientConnection

Gather = Callable[[str, Dict[str, Any], Callable[[List[Any]], None]], None]

__all__ = ["MerkleSync"]

_HEX = re.compile(r"[0-9a-f]{0,3}\Z")
_ROUTED = re.compile(r"(\d{3})/([0-9a-f]{0,3})\Z")
_HEXCHARS = "0123456789abcdef"
_SLICE_S = 0.02     # longest run of Merkle computation between two yields to the hub


def _leaf_record(key: str, rec: Any) -> Dict[str, Any]:
    ts = rec[0]
    # Leaf records carry ttlMs nil whatever the record holds, as the real server's do (WIRE.md).
    return {"key": key, "record": fastpath.lww_record(rec[1], fastpath.timestamp_wire(*ts), None, server=True)}


class MerkleSync:
    """Answers the Merkle sync requests of one node's clients (and of its peers)."""

    def __init__(self, node_id: str, tables: LiveTable, store: Store, peers: Membership, *,
                 now: Callable[[], Timestamp], gather: Gather, clock: Optional[Clock] = None) -> None:
        self.node_id = node_id
        self.tables = tables
        self.store = store
        self.peers = peers
        self.now = now
        self.gather = gather
        self.clock: Clock = clock if clock is not None else GeventClock()
        self._last_yield = self.clock.monotonic()

    # -- local computations over a set of partitions

    def local_part(self, map_name: str, pids: List[int], path: str) -> Dict[str, Any]:
        """Aggregate of ``path`` over ``pids``: {"exists", "children"} or {"exists", "records"}."""
        store, clock = self.store, self.clock
        exists = False
        if len(path) < 3:
            children: Dict[str, int] = {}
            for i, pid in enumerate(pids):
                if not i & 7 and clock.monotonic() - self._last_yield >= _SLICE_S:  # read the clock every 8th
                    self._yield()
                tree = store.tree(pid, map_name)
                if tree is None or not tree.exists(path):
                    continue
                exists = True
                for c, h in tree.children(path).items():
                    children[c] = (children.get(c, 0) + h) & MASK
            return {"exists": exists, "children": children}
        records: List[Dict[str, Any]] = []
        for i, pid in enumerate(pids):
            if not i & 7 and clock.monotonic() - self._last_yield >= _SLICE_S:
                self._yield()
            tree = store.tree(pid, map_name)
            if tree is None or not tree.exists(path):
                continue
            exists = True
            records.extend(_leaf_record(k, r) for k, r in store.leaf_records(pid, map_name, path))
        return {"exists": exists, "records": records}

    def _yield(self) -> None:
        self.clock.sleep(0)
        self._last_yield = self.clock.monotonic()

    def on_peer_merkle(self, peer: str, msg: Dict[str, Any]) -> None:
        if "pids" in msg:
            self.peers.reply(peer, msg, self.local_part(msg["map"], msg["pids"], msg["path"]))
        else:
            self.peers.reply(peer, msg, {"reply": self.routed_reply(msg["map"], msg["path"])})

    def _gather(self, map_name: str, path: str, done: Any) -> None:
        by_owner: Dict[str, List[int]] = {}
        for pid, owner in enumerate(self.tables.current.owners):
            by_owner.setdefault(owner, []).append(pid)
        parts = [self.local_part(map_name, by_owner.pop(self.node_id, []), path)]
        state = [len(by_owner)]

        def finish() -> None:
            exists = any(p["exists"] for p in parts)
            if len(path) < 3:
                children: Dict[str, int] = {}
                for p in parts:
                    for c, h in p["children"].items():
                        children[c] = (children.get(c, 0) + h) & MASK
                done(exists, children)
            else:
                done(exists, [r for p in parts for r in p["records"]])

        def on_reply(reply: Optional[Dict[str, Any]]) -> None:
            if reply is not None:
                parts.append(reply)
            state[0] -= 1
            if state[0] == 0:
                finish()

        if not by_owner:
            finish()
            return
        for owner, pids in by_owner.items():
            self.peers.call(owner, {"type": "CLUSTER_MERKLE", "map": map_name, "path": path,
                                    "pids": pids}, on_reply, timeout=3.0)

    # -- client requests

    def on_sync_init(self, conn: "ClientConnection", d: Dict[str, Any]) -> None:
        map_name = d.get("mapName")
        if type(map_name) is not str:
            raise BadFrame("SYNC_INIT needs a string mapName")

        def done(_exists: bool, children: Dict[str, int]) -> None:
            root = sum(children.values()) & MASK
            conn.send_wire({"type": "SYNC_RESP_ROOT", "payload": {
                "mapName": map_name, "rootHash": root, "timestamp": self.now().to_wire()}})

        self._gather(map_name, "", done)

    def on_query_sync_init(self, conn: "ClientConnection", d: Dict[str, Any]) -> None:
        p = d.get("payload")
        qid = p.get("queryId") if isinstance(p, dict) else None
        if type(qid) is not str:
            raise BadFrame("QUERY_SYNC_INIT needs a string queryId")
        entry = conn.queries.get(qid)
        if entry is None:
            return  # unknown queryId: no reply, as on the real server
        map_name, query = entry

        def done(items: List[Any]) -> None:
            hits, _more = query.run(items)
            root = 0
            for key, _v, ts in hits:
                root = (root + item_hash(key, ts)) & MASK
            conn.send_wire({"type": "SYNC_RESP_ROOT", "payload": {
                "mapName": map_name, "rootHash": root, "timestamp": self.now().to_wire()}})

        self.gather(map_name, query.raw, done)

    def on_bucket(self, conn: "ClientConnection", d: Dict[str, Any]) -> None:
        p = d.get("payload")
        if not isinstance(p, dict) or type(p.get("mapName")) is not str or type(p.get("path")) is not str:
            raise BadFrame("MERKLE_REQ_BUCKET needs string mapName and path")
        map_name, path = p["mapName"], p["path"]
        routed = _ROUTED.match(path)
        if routed:
            self._routed(conn, map_name, path, int(routed.group(1)))
        elif _HEX.match(path):
            self._aggregate(conn, map_name, path)
        # anything else (deeper than 3, not hex): no reply, as on the real server

    def _aggregate(self, conn: "ClientConnection", map_name: str, path: str) -> None:
        def done(exists: bool, result: Any) -> None:
            if not exists:
                return
            if len(path) < 3:
                conn.send_wire({"type": "SYNC_RESP_BUCKETS", "payload": {
                    "mapName": map_name, "path": path, "buckets": result}})
            else:
                conn.send_wire({"type": "SYNC_RESP_LEAF", "payload": {
                    "mapName": map_name, "path": path, "records": result}})
        self._gather(map_name, path, done)

    def _routed(self, conn: "ClientConnection", map_name: str, path: str, pid: int) -> None:
        if pid >= PARTITION_COUNT:
            return
        table = self.tables.current
        owner = table.owners[pid]
        if owner == self.node_id:
            reply = self.routed_reply(map_name, path)
            if reply is not None:
                conn.send_wire(reply)
            return

        def on_reply(r: Optional[Dict[str, Any]]) -> None:
            if r is None:
                if self.node_id in self.tables.current.backups[pid]:
                    r = {"reply": self.routed_reply(map_name, path)}
                else:
                    return
            if r.get("reply") is not None and not conn.closed:
                conn.send_wire(r["reply"])

        self.peers.call(owner, {"type": "CLUSTER_MERKLE", "map": map_name, "path": path},
                        on_reply, timeout=3.0)

    def routed_reply(self, map_name: str, path: str) -> Optional[Dict[str, Any]]:
        """The reply to a routed request from this node's own data (None: no reply)."""
        prefix, rest = path.split("/", 1)
        pid = int(prefix)
        tree = self.store.tree(pid, map_name)
        if len(rest) < 3:
            if rest and (tree is None or not tree.exists(rest)):
                return None
            children = tree.children(rest) if tree is not None else {}
            return {"type": "SYNC_RESP_BUCKETS", "payload": {
                "mapName": map_name, "path": path,
                "buckets": {f"{prefix}/{rest}{c}": h for c, h in children.items()}}}
        if tree is None or not tree.exists(rest):
            return None
        records = [_leaf_record(k, r) for k, r in self.store.leaf_records(pid, map_name, rest)]
        return {"type": "SYNC_RESP_LEAF", "payload": {"mapName": map_name, "path": path, "records": records}}

    def __repr__(self) -> str:
        return f"<MerkleSync {self.node_id}>"
