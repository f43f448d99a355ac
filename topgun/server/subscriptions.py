"""Live queries and change events: QUERY_SUB / QUERY_RESP / QUERY_UPDATE / QUERY_UNSUB, SERVER_EVENT.

Delivery rules (WIRE.md 6-7): a connection gets a SERVER_EVENT for a write only if it holds a
QUERY_SUB on that map, once per connection however many queries it has there, and never for
its own writes; then one QUERY_UPDATE per query whose match changed or still holds (ENTER,
UPDATE, LEAVE with ``value`` None). ``sort``/``limit`` are not re-evaluated for updates.

In a cluster the owner applies a write and computes its events; it sends them (with the old
value, so ENTER/UPDATE/LEAVE can be decided) to every node that has announced interest in the
map with CLUSTER_INTEREST, so subscribers anywhere see writes made through any node. Initial
results are gathered from every owner (CLUSTER_GATHER); updates that arrive while a query's
first answer is still being gathered are held back and sent right after its QUERY_RESP.

What it is given: the node's id, its :class:`~topgun.server.table.LiveTable` (who owns what,
for gathering), its store (local matches) and its peers. ``interested`` is one set, updated in
place, that the writer reads to skip computing events for maps nobody watches.

A connection holds at most ``max_queries`` live queries (ERROR 429 past it), and a connection
too far behind (``ClientConnection.behind``) costs no query matching: its events are dropped
before any is computed.

Not here: evaluating a query (``queries.py``), applying writes (``writes.py``).
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Set, Tuple

from topgun.protocol import codec, fastpath

from .membership import Membership
from .ormaps import SHADOW, is_shadow, or_event
from .queries import Query, QueryError
from .store import MASK, Store, Write, item_hash
from .table import LiveTable
from .writes import BadFrame, LimitExceeded

if TYPE_CHECKING:
    from .connection import ClientConnection

__all__ = ["Subscriptions"]

log = logging.getLogger(__name__)

# An event between nodes: [key, "PUT"|"REMOVE", record wire dict or None, old live?, old value]
Event = List[Any]
Item = Tuple[str, Any, Tuple[int, int, str]]


def _record_wire(w: Write) -> Dict[str, Any]:
    return fastpath.lww_record(w.value, fastpath.timestamp_wire(w.millis, w.counter, w.node_id), w.ttl, server=True)


class Subscriptions:
    """Every live query on one node, and the maps other nodes want events for."""

    def __init__(self, node_id: str, tables: LiveTable, store: Store, peers: Membership, *,
                 max_queries: int = 1000) -> None:
        self.node_id = node_id
        self.max_queries = max_queries
        self.tables = tables
        self.store = store
        self.peers = peers
        # map name -> connection -> {queryId: Query}
        self.by_map: Dict[str, Dict["ClientConnection", Dict[str, Query]]] = {}
        self.peer_interest: Dict[str, Set[str]] = {}
        self.interested: Set[str] = set()   # maps with local subscribers or interested peers
        self.pending: Dict[Tuple[int, str], List[bytes]] = {}
        self._announced: Set[str] = set()
        # More maps whose writes the writer must publish (the maps with live searches), kept by
        # their owners and read on every recompute_interest().
        self.also_interested: List[Set[str]] = []

    # -- client requests

    def on_query_sub(self, conn: "ClientConnection", d: Dict[str, Any]) -> None:
        p = d.get("payload")
        if not isinstance(p, dict):
            raise BadFrame("QUERY_SUB needs a payload")
        qid, map_name, fields = p.get("queryId"), p.get("mapName"), p.get("fields")
        if type(qid) is not str or type(map_name) is not str:
            raise BadFrame("QUERY_SUB needs string queryId and mapName")
        if fields is not None and (type(fields) is not list or not all(type(f) is str for f in fields)):
            raise BadFrame("QUERY_SUB fields must be a list of strings")
        if qid not in conn.queries and len(conn.queries) >= self.max_queries:
            raise LimitExceeded(f"too many live queries on this connection: the limit is {self.max_queries}"
                                f" (QUERY_UNSUB one first); {qid!r} was not subscribed")
        try:
            query = Query(p.get("query"), fields)
        except QueryError as exc:
            raise BadFrame(f"bad query: {exc}") from None
        self.unsubscribe(conn, qid)
        conn.queries[qid] = (map_name, query)
        conns = self.by_map.setdefault(map_name, {})
        conns.setdefault(conn, {})[qid] = query
        self.pending[(conn.cid, qid)] = []
        self._interest_changed()

        def answer(items: List[Item]) -> None:
            if conn.queries.get(qid, (None, None))[1] is not query or conn.closed:
                return  # replaced or unsubscribed meanwhile: its successor owns the held updates
            held = self.pending.pop((conn.cid, qid), None)
            hits, has_more = query.run(items)
            root = 0
            for key, _value, ts in hits:
                root = (root + item_hash(key, ts)) & MASK
            payload: Dict[str, Any] = {"queryId": qid,
                                       "results": [{"key": k, "value": query.project(v)} for k, v, _ in hits]}
            if has_more:
                payload["hasMore"] = True
            payload["merkleRootHash"] = root
            conn.send_wire({"type": "QUERY_RESP", "payload": payload})
            for frame in held or ():
                conn.send_event(frame)

        self.gather(map_name, query.raw, answer)

    def on_query_unsub(self, conn: "ClientConnection", d: Dict[str, Any]) -> None:
        p = d.get("payload")
        qid = p.get("queryId") if isinstance(p, dict) else None
        if type(qid) is not str:
            raise BadFrame("QUERY_UNSUB needs a string queryId")
        self.unsubscribe(conn, qid)

    def unsubscribe(self, conn: "ClientConnection", qid: str) -> None:
        entry = conn.queries.pop(qid, None)
        self.pending.pop((conn.cid, qid), None)
        if entry is None:
            return
        conns = self.by_map.get(entry[0])
        if conns is not None:
            queries = conns.get(conn)
            if queries is not None:
                queries.pop(qid, None)
                if not queries:
                    del conns[conn]
            if not conns:
                del self.by_map[entry[0]]
                self._interest_changed()

    def drop_connection(self, conn: "ClientConnection") -> None:
        for qid in list(conn.queries):
            self.unsubscribe(conn, qid)

    # -- gathering current values from every owner

    def gather(self, map_name: str, query: Dict[str, Any], done: Callable[[List[Item]], None]) -> None:
        """Call ``done(items)`` with the query's matches from every partition owner."""
        by_owner: Dict[str, List[int]] = {}
        for pid, owner in enumerate(self.tables.current.owners):
            by_owner.setdefault(owner, []).append(pid)
        items: List[Item] = list(self.local_matches(map_name, query, by_owner.pop(self.node_id, [])))
        state = [len(by_owner)]
        if not by_owner:
            done(items)
            return

        def on_reply(reply: Optional[Dict[str, Any]]) -> None:
            if reply is not None:
                items.extend((k, v, (m, c, n)) for k, v, m, c, n in reply.get("items", ()))
            state[0] -= 1
            if state[0] == 0:
                done(items)

        for owner, pids in by_owner.items():
            self.peers.call(owner, {"type": "CLUSTER_GATHER", "map": map_name, "query": query,
                                         "pids": pids}, on_reply, timeout=3.0)

    def local_matches(self, map_name: str, query: Dict[str, Any], pids: List[int]) -> List[Item]:
        # Only the matches: sorting, the limit and the 10,000-result cut (with hasMore) happen
        # once, on the node that answers, over every owner's matches.
        match = Query(query).match
        return [(k, rec[1], rec[0]) for k, rec in self.store.live_items(map_name, pids) if match(rec[1])]

    def on_gather(self, peer: str, msg: Dict[str, Any]) -> None:
        try:
            items = self.local_matches(msg["map"], msg.get("query") or {}, msg["pids"])
        except (QueryError, KeyError, TypeError):
            items = []
        self.peers.reply(peer, msg, {"items": [[k, v, ts[0], ts[1], ts[2]] for k, v, ts in items]})

    # -- events

    def publish(self, changed: List[Tuple[Write, Any]], origin: Tuple[str, int]) -> None:
        """Events for writes this node applied as owner; ``old`` is the previous record or None."""
        by_map: Dict[str, List[Event]] = {}
        for w, old in changed:
            if is_shadow(w.map):   # an OR-map record: OR_ADD / OR_REMOVE on the user's map name
                name, event = or_event(w)
                by_map.setdefault(name, []).append(event)
                continue
            live_old = old is not None and old[3]
            by_map.setdefault(w.map, []).append(
                [w.key, "PUT" if w.live else "REMOVE", _record_wire(w) if w.live else None,
                 live_old, old[1] if live_old else None])
        me = self.node_id
        for map_name, events in by_map.items():
            if map_name in self.by_map:
                self.deliver(map_name, events, origin)
            for peer, maps in self.peer_interest.items():
                if map_name in maps and peer != me:
                    self.peers.send(peer, {"type": "CLUSTER_EVENTS", "map": map_name,
                                                     "events": events, "origin": list(origin)})

    def on_events(self, peer: str, msg: Dict[str, Any]) -> None:
        origin = msg.get("origin") or ("", 0)
        self.deliver(msg["map"], msg["events"], (origin[0], origin[1]))

    def deliver(self, map_name: str, events: List[Event], origin: Tuple[str, int]) -> None:
        conns = self.by_map.get(map_name)
        if not conns:
            return
        skip_cid = origin[1] if origin[0] == self.node_id else None
        encode = codec.encode_wire
        frames = []
        for key, kind, record, _old_live, old in events:
            payload = {"mapName": map_name, "eventType": kind, "key": key}
            if kind in ("OR_ADD", "OR_REMOVE"):   # old is the tag; no QUERY_UPDATE (as on 2.2.0)
                if record is not None:
                    payload["orRecord"] = record
                payload["orTag"] = old
            elif record is not None:
                payload["record"] = record
            frames.append(encode({"type": "SERVER_EVENT", "payload": payload}))
        for conn, queries in list(conns.items()):
            if conn.cid == skip_cid or conn.closed:
                continue
            if conn.behind:                 # dropped anyway: skip matching its queries
                conn.dropped_events += len(events)
                continue
            for frame, (key, kind, record, old_live, old) in zip(frames, events):
                conn.send_event(frame)
                if kind in ("OR_ADD", "OR_REMOVE"):
                    continue
                for qid, query in queries.items():
                    was = old_live and query.match(old)
                    now = kind == "PUT" and query.match(record["value"])
                    if now:
                        update = {"queryId": qid, "key": key, "value": query.project(record["value"]),
                                  "changeType": "UPDATE" if was else "ENTER"}
                    elif was:
                        update = {"queryId": qid, "key": key, "value": None, "changeType": "LEAVE"}
                    else:
                        continue
                    data = encode({"type": "QUERY_UPDATE", "payload": update})
                    held = self.pending.get((conn.cid, qid))
                    if held is not None:
                        held.append(data)
                    else:
                        conn.send_event(data)

    # -- interest between nodes

    def _interest_changed(self) -> None:
        self._recompute()
        local = set(self.by_map)
        if local != self._announced:
            self._announced = local
            self.peers.broadcast({"type": "CLUSTER_INTEREST", "maps": sorted(local)})

    def announce_to(self, peer: str) -> None:
        self.peers.send(peer, {"type": "CLUSTER_INTEREST", "maps": sorted(self.by_map)})

    def on_interest(self, peer: str, msg: Dict[str, Any]) -> None:
        self.peer_interest[peer] = set(msg.get("maps") or ())
        self._recompute()

    def forget_peer(self, peer: str) -> None:
        if self.peer_interest.pop(peer, None) is not None:
            self._recompute()

    def recompute_interest(self) -> None:
        self._recompute()

    def _recompute(self) -> None:
        maps = set(self.by_map)
        for peer_maps in self.peer_interest.values():
            maps |= peer_maps
        maps |= {SHADOW + name for name in maps}   # OR-map writes of watched maps publish too
        for extra in self.also_interested:
            maps |= extra
        # In place: the writer holds this very set.
        self.interested.intersection_update(maps)
        self.interested.update(maps)

    def __repr__(self) -> str:
        n = sum(len(q) for conns in self.by_map.values() for q in conns.values())
        return f"<Subscriptions queries={n} maps={len(self.by_map)} peers={len(self.peer_interest)}>"
