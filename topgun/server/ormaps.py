"""OR-maps on the dev server: OR_ADD / OR_REMOVE ops, ORMAP_DIFF_REQUEST, ORMap Merkle sync.

Storage: every OR record is an ordinary LWW record of a *shadow* map (``"\\x00or:" + name``)
under the shadow key ``key + "\\x00" + tag``, in the partition of the OR key (``Write.pid`` is
the OR key's partition). So an OR write is routed, forwarded, replicated, migrated and
snapshotted by the same code as every other write (``writes.py``, ``rebalance.py``). An add
is a live record with the client's timestamp; a remove is a tombstone with a timestamp above
any client's, so a removed tag stays removed even when its add arrives later (observed-remove).

Wire behaviour, as on 2.2.0 (WIRE.md 5.1, 9) except where the package docstring says:

- the add keeps the client's tag and timestamp (2.2.0 re-tags), and a remove removes only its
  tag (2.2.0 wipes every value of the key);
- SERVER_EVENT ``OR_ADD`` (``orRecord`` and ``orTag``) / ``OR_REMOVE`` (``orTag``) go to the
  connections holding a QUERY_SUB on the map name, never to the writer (``subscriptions.py``);
- ORMAP_DIFF_REQUEST answers one entry per requested key, in order, from the keys' owners;
- ORMap Merkle: entry hash ``fnv1a("key:" + key + "|" + "|".join(sorted(tags)))``, path and
  depth as LWW, aggregate paths only (gathered from every owner). A walk's tree is computed
  at ORMAP_SYNC_INIT and kept for that connection's following bucket requests.

What it is given: the node's id, its live table, its store, its peers and ``now()``.

Not here: ORMAP_PUSH_DIFF (answered 501; the client does not use it), routed ORMap paths,
searching OR-map values (``search.py`` reads them with :func:`entries_of`).
"""
from __future__ import annotations

import re
from collections import OrderedDict
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Tuple

from topgun.protocol.hashing import fnv1a32

from .membership import Membership
from .store import MASK, Store, Write, key_hash, pid_of
from .table import LiveTable
from .writes import BadFrame, _ts

if TYPE_CHECKING:
    from .connection import ClientConnection

__all__ = ["ORMaps", "SHADOW", "shadow", "is_shadow", "is_or_op", "or_event", "entries_of"]

SHADOW = "\x00or:"
TOMBSTONE_TS = (2 ** 62, 0, "~")   # above every client timestamp: a removed tag stays removed
_HEX = re.compile(r"[0-9a-f]{0,3}\Z")
_CACHED_WALKS = 64
Entry = Dict[str, Any]   # {"key", "records": [...], "tombstones": [...]}


def shadow(map_name: str) -> str:
    return SHADOW + map_name


def is_shadow(map_name: str) -> bool:
    return map_name.startswith(SHADOW)


def is_or_op(op: Any) -> bool:
    return type(op) is dict and (op.get("orRecord") is not None or op.get("orTag") is not None)


def parse_or_op(op: Dict[str, Any]) -> Write:
    """One OR_ADD (``orRecord``) or OR_REMOVE (``orTag`` without ``orRecord``) as a shadow write."""
    key, map_name = op.get("key"), op.get("mapName")
    if type(key) is not str or type(map_name) is not str:
        raise BadFrame("op.key and op.mapName must be strings")
    rec = op.get("orRecord")
    if rec is not None:
        if type(rec) is not dict or type(rec.get("tag")) is not str:
            raise BadFrame("orRecord needs a string tag")
        tag = rec["tag"]
        millis, counter, node = _ts(rec)
        live, value = True, rec.get("value")
    else:
        tag = op.get("orTag")
        if type(tag) is not str:
            raise BadFrame("orTag must be a string")
        (millis, counter, node), live, value = TOMBSTONE_TS, False, None
    if "\x00" in tag:
        raise BadFrame("an OR tag cannot contain NUL")
    return Write(pid_of(key), shadow(map_name), f"{key}\x00{tag}", millis, counter, node, value, None, live)


def _split(shadow_key: str) -> Tuple[str, str]:
    key, _, tag = shadow_key.rpartition("\x00")
    return key, tag


def _or_record(value: Any, ts: Tuple[int, int, str], tag: str) -> Dict[str, Any]:
    return {"value": value, "timestamp": {"millis": ts[0], "counter": ts[1], "nodeId": ts[2]}, "tag": tag,
            "ttlMs": None}


def or_event(w: Write) -> Tuple[str, List[Any]]:
    """The user map name and the event (``subscriptions.Event`` shape) of an applied shadow write."""
    key, tag = _split(w.key)
    record = _or_record(w.value, w.ts, tag) if w.live else None
    return w.map[len(SHADOW):], [key, "OR_ADD" if w.live else "OR_REMOVE", record, False, tag]


def entries_of(store: Store, map_name: str, pids: Any, only: Optional[set] = None) -> Dict[str, Entry]:
    """The OR entries of ``map_name`` in ``pids`` (only the keys in ``only``, if given)."""
    out: Dict[str, Entry] = {}
    name = shadow(map_name)
    for pid in pids:
        mp = store.parts[pid].get(name)
        if mp is None:
            continue
        for skey, (ts, value, _ttl, live) in mp.records.items():
            key, tag = _split(skey)
            if only is not None and key not in only:
                continue
            entry = out.get(key)
            if entry is None:
                entry = out[key] = {"key": key, "records": [], "tombstones": []}
            if live:
                entry["records"].append(_or_record(value, ts, tag))
            else:
                entry["tombstones"].append(tag)
    for entry in out.values():
        entry["records"].sort(key=lambda r: (r["timestamp"]["millis"], r["timestamp"]["counter"], r["tag"]))
    return out


def _entry_hash(entry: Entry) -> int:
    tags = sorted(r["tag"] for r in entry["records"])
    return fnv1a32("key:" + entry["key"] + "|" + "|".join(tags))


class _Tree:
    """An aggregate ORMap Merkle tree over a set of entries (built per walk)."""

    def __init__(self, entries: Dict[str, Entry]) -> None:
        self.sums: Dict[str, int] = {}
        self.leaves: Dict[str, List[Entry]] = {}
        for key, entry in entries.items():
            if not entry["records"]:
                continue   # a key with tombstones only is not in the tree (as on 2.2.0)
            h, path = _entry_hash(entry), format(key_hash(key), "08x")
            for i in range(4):
                self.sums[path[:i]] = (self.sums.get(path[:i], 0) + h) & MASK
            self.leaves.setdefault(path[:3], []).append(entry)

    def children(self, path: str) -> Dict[str, int]:
        return {c: self.sums[path + c] for c in "0123456789abcdef" if path + c in self.sums}


class ORMaps:
    """Answers one node's OR-map reads (its writes go through ``writes.py`` as shadow writes)."""

    def __init__(self, node_id: str, tables: LiveTable, store: Store, peers: Membership, *,
                 now: Callable[[], Any]) -> None:
        self.node_id = node_id
        self.tables = tables
        self.store = store
        self.peers = peers
        self.now = now
        self._walks: "OrderedDict[Tuple[int, str], _Tree]" = OrderedDict()

    # -- gathering entries from the owners

    def gather(self, map_name: str, keys: Optional[List[str]], done: Callable[[Dict[str, Entry]], None]) -> None:
        """``done(entries)`` with the entries of ``keys`` (None: every key) from their owners."""
        owners = self.tables.current.owners
        by_owner: Dict[str, List[int]] = {}
        pids = range(len(owners)) if keys is None else sorted({pid_of(k) for k in keys})
        for pid in pids:
            by_owner.setdefault(owners[pid], []).append(pid)
        only = set(keys) if keys is not None else None
        found = entries_of(self.store, map_name, by_owner.pop(self.node_id, []), only)
        state = [len(by_owner)]
        if not by_owner:
            done(found)
            return

        def on_reply(pids: List[int]) -> Callable[[Optional[Dict[str, Any]]], None]:
            def reply(msg: Optional[Dict[str, Any]]) -> None:
                if msg is not None:
                    found.update({e["key"]: e for e in msg.get("entries", ())})
                else:  # owner unreachable: answer from our replica if we hold one
                    found.update(entries_of(self.store, map_name, pids, only))
                state[0] -= 1
                if state[0] == 0:
                    done(found)
            return reply

        for owner, owned in by_owner.items():
            self.peers.call(owner, {"type": "CLUSTER_OR_READ", "map": map_name, "pids": owned,
                                    "keys": keys}, on_reply(owned), timeout=3.0)

    def on_peer_read(self, peer: str, msg: Dict[str, Any]) -> None:
        keys = msg.get("keys")
        entries = entries_of(self.store, msg["map"], msg["pids"], set(keys) if keys is not None else None)
        self.peers.reply(peer, msg, {"entries": list(entries.values())})

    # -- client requests

    def on_diff_request(self, conn: "ClientConnection", d: Dict[str, Any]) -> None:
        p = d.get("payload")
        map_name = p.get("mapName") if isinstance(p, dict) else None
        keys = p.get("keys") if isinstance(p, dict) else None
        if type(map_name) is not str or type(keys) is not list or not all(type(k) is str for k in keys):
            raise BadFrame("ORMAP_DIFF_REQUEST needs a string mapName and a list of string keys")

        def done(found: Dict[str, Entry]) -> None:
            entries = [found.get(k) or {"key": k, "records": [], "tombstones": []} for k in keys]
            conn.send_wire({"type": "ORMAP_DIFF_RESPONSE", "payload": {"mapName": map_name, "entries": entries}})

        self.gather(map_name, list(dict.fromkeys(keys)), done)

    def on_sync_init(self, conn: "ClientConnection", d: Dict[str, Any]) -> None:
        map_name = d.get("mapName")
        if type(map_name) is not str or type(d.get("rootHash")) not in (int, float) \
                or type(d.get("bucketHashes")) is not dict:
            raise BadFrame("ORMAP_SYNC_INIT needs mapName, rootHash and bucketHashes (flat)")

        def done(found: Dict[str, Entry]) -> None:
            tree = self._remember(conn, map_name, _Tree(found))
            conn.send_wire({"type": "ORMAP_SYNC_RESP_ROOT", "payload": {
                "mapName": map_name, "rootHash": tree.sums.get("", 0), "timestamp": self.now().to_wire()}})

        self.gather(map_name, None, done)

    def on_bucket(self, conn: "ClientConnection", d: Dict[str, Any]) -> None:
        p = d.get("payload")
        map_name = p.get("mapName") if isinstance(p, dict) else None
        path = p.get("path") if isinstance(p, dict) else None
        if type(map_name) is not str or type(path) is not str:
            raise BadFrame("ORMAP_MERKLE_REQ_BUCKET needs string mapName and path")
        if not _HEX.match(path):
            return   # routed or malformed paths: no reply, as for a path that does not exist

        def answer(tree: _Tree) -> None:
            if path not in tree.sums:
                return   # a path that does not exist gets no reply (as on 2.2.0)
            if len(path) < 3:
                body: Dict[str, Any] = {"mapName": map_name, "path": path, "buckets": tree.children(path)}
                conn.send_wire({"type": "ORMAP_SYNC_RESP_BUCKETS", "payload": body})
            else:
                conn.send_wire({"type": "ORMAP_SYNC_RESP_LEAF", "payload": {
                    "mapName": map_name, "path": path, "entries": tree.leaves.get(path, [])}})

        tree = self._walks.get((conn.cid, map_name))
        if tree is not None:
            answer(tree)
        else:
            self.gather(map_name, None, lambda found: answer(self._remember(conn, map_name, _Tree(found))))

    def _remember(self, conn: "ClientConnection", map_name: str, tree: _Tree) -> _Tree:
        self._walks[(conn.cid, map_name)] = tree
        self._walks.move_to_end((conn.cid, map_name))
        while len(self._walks) > _CACHED_WALKS:
            self._walks.popitem(last=False)
        return tree

    def drop_connection(self, conn: "ClientConnection") -> None:
        for k in [k for k in self._walks if k[0] == conn.cid]:
            del self._walks[k]

    def __repr__(self) -> str:
        return f"<ORMaps {self.node_id} cached_walks={len(self._walks)}>"
