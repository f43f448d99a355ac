"""Node: one dev-server node. Owns its store, client connections, greenlets and partition table.

A node serves clients on ``/ws`` and ``/`` and its peers on ``/cluster``, all on one port.
Client frames are decoded here and dispatched to the module that handles them: writes to
:class:`~topgun.server.writes.Writer` (OR-map ops too, as shadow writes: ``ormaps.py``), live
queries to :class:`~topgun.server.subscriptions.Subscriptions`, Merkle sync to
:class:`~topgun.server.sync.MerkleSync`, OR-map reads to :class:`~topgun.server.ormaps.ORMaps`,
full-text search to :class:`~topgun.server.search.Search`, topics, locks and PN counters to
:class:`~topgun.server.topics.Topics`, :class:`~topgun.server.locks.Locks` and
:class:`~topgun.server.counters.Counters` (node-local, like the real server's); AUTH, PING and
PARTITION_MAP_REQUEST are answered here. Membership and partition moves live in
``membership.py`` and ``rebalance.py``.

The node is where the parts are wired: each gets only what it uses (the store, the
:class:`~topgun.server.table.LiveTable`, the peers, a publish callable, ``spawn``, the clock),
and none of them imports this module. Peer messages reach their handlers through the
membership's handler table, which the node fills in ``__init__``.

Every greenlet the node starts (the accept loop, one handler and one writer per socket,
heartbeats, retries, migrations) is spawned into ``node.group``; :meth:`Node.stop` closes every
socket and kills the group, so nothing outlives the node.

Not here: the rules of any one message kind (the component modules), sockets and framing
(``app.py``, ``frames.py``).
"""
from __future__ import annotations

import itertools
import logging
import os
import socket
from typing import Any, Callable, Dict, Optional, Sequence

import gevent
import msgpack
from gevent.event import Event
from gevent.pool import Pool

from topgun.clock import Clock, GeventClock
from topgun.protocol import codec, fastpath
from topgun.protocol.hlc import HLC

from . import app as _app
from .auth import verify_hs256
from .connection import MAX_QUERIES_PER_CONNECTION, NODE_OUTBOUND_BYTES, SLOW_CONSUMER_BYTES, ClientConnection
from .counters import Counters
from .frames import FrameSocket, FrameTooLarge, OutboundBudget
from .locks import Locks
from .membership import Membership
from .ormaps import ORMaps, is_or_op, parse_or_op
from .placement import PartitionTable
from .rebalance import Rebalancer
from .search import Search
from .store import Store
from .subscriptions import Subscriptions
from .sync import MerkleSync
from .table import LiveTable
from .topics import Topics
from .writes import APPLIED, LEVEL_NAMES, LEVELS, WRITE_DEADLINE_S, BadFrame, Unsupported, Writer, parse_ops

__all__ = ["Node", "announced_host", "WILDCARD_HOSTS"]

#: Listen addresses that mean "every interface": no client can dial them.
WILDCARD_HOSTS = ("0.0.0.0", "::", "")


def announced_host(host: str) -> str:
    """The host a node puts in its URL (READY line, partition maps, peer links) for ``host``.

    A wildcard listen address becomes the machine's hostname if that resolves (clients on
    other machines may reach it), else ``127.0.0.1``; any other address is announced as it is.
    """
    if host not in WILDCARD_HOSTS:
        return host
    name = socket.gethostname()
    try:
        socket.getaddrinfo(name, None)
    except OSError:
        return "127.0.0.1"
    return name

log = logging.getLogger(__name__)

# Known message types the dev server does not implement: answered with ERROR 501.
UNSUPPORTED = frozenset({
    "ORMAP_PUSH_DIFF", "HYBRID_SEARCH", "HYBRID_SEARCH_SUB",
    "HYBRID_SEARCH_UNSUB", "VECTOR_SEARCH", "SQL_QUERY", "ENTRY_PROCESS", "ENTRY_PROCESS_BATCH",
    "REGISTER_RESOLVER", "UNREGISTER_RESOLVER", "LIST_RESOLVERS", "JOURNAL_READ",
    "JOURNAL_SUBSCRIBE", "JOURNAL_UNSUBSCRIBE"})


class Node:
    """One node of the dev cluster.

    Args:
        node_id: unique, without ``:``.
        host: listen address (loopback by default; the dev server is not for networks). A
            wildcard (``0.0.0.0``, ``::``) is announced as :func:`announced_host` says.
        port: 0 picks a free port; see :attr:`port` after :meth:`start`.
        seeds: ws URLs of nodes of the cluster to join; empty starts a new cluster.
        jwt_secret: run in JWT mode (HS256 with this secret) instead of no-auth mode.
        cluster_secret: what peers must prove on ``/cluster`` links (see ``membership.py``);
            defaults to ``jwt_secret``, so a JWT-mode node refuses unauthenticated peers.
        strict: answer writes for partitions this node does not own with ERROR NOT_OWNER
            instead of forwarding them.
        clock: time source for heartbeats and deadlines.
        incarnation: tells this run of ``node_id`` from earlier ones; random by default.
        upgrade_timeout: seconds a new socket has to send its complete HTTP upgrade request.
        outbound_budget: bytes queued for all client sockets together; past it the slowest
            connection is disconnected.
        slow_consumer_bytes: bytes queued for one connection past which it gets no events.
        max_queries_per_connection: live queries one connection may hold (ERROR 429 past it).
        certfile, keyfile: serve TLS (``wss://``) with this PEM certificate chain and key
            (see :mod:`topgun.server.tls`); peers then link to this node over TLS too.
    """

    def __init__(self, node_id: str, *, host: str = "127.0.0.1", port: int = 0,
                 seeds: Sequence[str] = (), jwt_secret: Optional[str] = None, strict: bool = False,
                 clock: Optional[Clock] = None, incarnation: Optional[str] = None,
                 cluster_secret: Optional[str] = None, upgrade_timeout: float = _app.UPGRADE_TIMEOUT_S,
                 outbound_budget: int = NODE_OUTBOUND_BYTES, slow_consumer_bytes: int = SLOW_CONSUMER_BYTES,
                 max_queries_per_connection: int = MAX_QUERIES_PER_CONNECTION,
                 certfile: Optional[str] = None, keyfile: Optional[str] = None) -> None:
        if not node_id or ":" in node_id or "/" in node_id:
            raise ValueError(f"bad node id {node_id!r}")
        self.node_id = node_id
        self.host = host
        self.announced_host = announced_host(host)  # once: it may ask the resolver
        self.requested_port = port
        self.port = 0
        self.seeds = tuple(seeds)
        self.jwt_secret = jwt_secret
        self.strict = strict
        self.upgrade_timeout = upgrade_timeout
        self.outbound = OutboundBudget(outbound_budget)
        self.slow_consumer_bytes = slow_consumer_bytes
        self.certfile, self.keyfile = certfile, keyfile
        self.clock: Clock = clock if clock is not None else GeventClock()
        self.incarnation = incarnation or os.urandom(6).hex()
        self.hlc = HLC(node_id, now_ms=self.clock.now_ms)
        self.store = Store()
        self.group = Pool(None)  # unbounded; a Pool because gevent servers need one to spawn into
        self.conns: Dict[int, ClientConnection] = {}
        self._cids = itertools.count(1)
        self.tables = LiveTable(node_id)
        self.ready = Event()
        self.stopped = False
        self.server: Any = None
        spawn, clock, tables, store = self.spawn, self.clock, self.tables, self.store
        self.membership = peers = Membership(
            node_id, self.incarnation, clock, spawn, map_version=lambda: self.tables.version,
            secret=cluster_secret if cluster_secret is not None else jwt_secret)
        self.subs = Subscriptions(node_id, tables, store, peers, max_queries=max_queries_per_connection)
        self.ormaps = ORMaps(node_id, tables, store, peers, now=self.hlc.now)
        self.search = Search(node_id, tables, store, interest_changed=self.subs.recompute_interest)
        self.subs.also_interested.append(self.search.maps)
        self.writer = Writer(node_id, tables, store, peers, publish=self._publish,
                             interested=self.subs.interested, spawn=spawn, clock=clock)
        self.sync = MerkleSync(node_id, tables, store, peers, now=self.hlc.now, gather=self.subs.gather,
                               clock=clock)
        self.rebalancer = Rebalancer(node_id, tables, store, peers, spawn=spawn, clock=clock, adopt=self.adopt)
        # Topics, locks and counters are node-local, as on the real server (clients route them).
        self.topics, self.locks, self.counters = Topics(clock.now_ms), Locks(clock.monotonic), Counters()
        self._wire_peers()
        self._handlers: Dict[str, Callable[[ClientConnection, Dict[str, Any]], None]] = {
            "CLIENT_OP": self._on_client_op, "OP_BATCH": self._on_op_batch, "PING": self._on_ping,
            "AUTH": lambda conn, d: None, "PARTITION_MAP_REQUEST": self._on_map_request,
            "QUERY_SUB": self.subs.on_query_sub, "QUERY_UNSUB": self.subs.on_query_unsub,
            "SYNC_INIT": self.sync.on_sync_init, "MERKLE_REQ_BUCKET": self.sync.on_bucket,
            "QUERY_SYNC_INIT": self.sync.on_query_sync_init, "BATCH": self._on_batch,
            "ORMAP_DIFF_REQUEST": self.ormaps.on_diff_request, "ORMAP_SYNC_INIT": self.ormaps.on_sync_init,
            "ORMAP_MERKLE_REQ_BUCKET": self.ormaps.on_bucket, "SEARCH": self.search.on_search,
            "SEARCH_SUB": self.search.on_search_sub, "SEARCH_UNSUB": self.search.on_search_unsub,
            "TOPIC_SUB": self.topics.on_sub, "TOPIC_UNSUB": self.topics.on_unsub, "TOPIC_PUB": self.topics.on_pub,
            "LOCK_REQUEST": self.locks.on_request, "LOCK_RELEASE": self.locks.on_release,
            "COUNTER_REQUEST": self.counters.on_request, "COUNTER_SYNC": self.counters.on_sync,
        }

    def _wire_peers(self) -> None:
        peers, w, s, sy, rb = self.membership, self.writer, self.subs, self.sync, self.rebalancer
        for kind, fn in {
            "CLUSTER_WELCOME": self._on_welcome, "CLUSTER_TABLE_REQUEST": rb.on_table_request,
            "CLUSTER_REPLICATE": w.on_replicate, "CLUSTER_FORWARD": w.on_forward,
            "CLUSTER_EVENTS": s.on_events, "CLUSTER_INTEREST": s.on_interest,
            "CLUSTER_GATHER": s.on_gather, "CLUSTER_MERKLE": sy.on_peer_merkle,
            "CLUSTER_PREPARE": rb.on_prepare, "CLUSTER_PREPARED": rb.on_prepared,
            "CLUSTER_COMMIT": rb.on_commit, "CLUSTER_SNAPSHOT": rb.on_snapshot,
            "CLUSTER_OR_READ": self.ormaps.on_peer_read,
        }.items():
            peers.on(kind, fn)
        peers.on_change = rb.wake
        peers.on_death = self._on_peer_death
        peers.on_link_up = self._on_link_up
        peers.on_newer_map = rb.on_newer_map

    def _publish(self, changed: Any, origin: Any) -> None:
        # Writes this node applied as owner: change events, then the live searches' re-scoring.
        self.subs.publish(changed, origin)
        if self.search.maps:
            self.search.on_applied(changed)

    def _on_peer_death(self, peer_id: str) -> None:
        self.subs.forget_peer(peer_id)
        self.rebalancer.forget_coordinator(peer_id)

    def _on_link_up(self, peer_id: str) -> None:
        # A new outgoing link: tell the peer who we know, our table and our live-query maps.
        table = self.table
        self.membership.send(peer_id, {"type": "CLUSTER_WELCOME", "members": self.membership.members(),
                                       "table": table.to_internal() if table.version else None})
        self.subs.announce_to(peer_id)

    def _on_welcome(self, peer_id: str, msg: Dict[str, Any]) -> None:
        self.membership.learn_members(msg.get("members"))
        if msg.get("table"):
            self.rebalancer.adopt_committed(PartitionTable.from_internal(msg["table"]))

    # -- lifecycle

    @property
    def url(self) -> str:
        host = self.announced_host
        host = f"[{host}]" if ":" in host else host
        return f"{'wss' if self.certfile else 'ws'}://{host}:{self.port}/ws"

    def spawn(self, fn: Callable[..., Any], *args: Any) -> gevent.Greenlet:
        return self.group.spawn(fn, *args)

    def _ssl_context(self) -> Any:
        if not self.certfile:
            return None
        from .tls import server_context
        return server_context(self.certfile, self.keyfile)

    def start(self, timeout: float = 15.0) -> "Node":
        """Listen, then join the cluster of ``seeds`` (or found one); returns when in the map.

        Raises:
            TimeoutError: the node was not part of a partition map within ``timeout``.
        """
        self.server = _app.make_server(self.node_id, self.host, self.requested_port, self.group,
                                       serve_client=self.serve_client,
                                       serve_peer=self.membership.serve_incoming, health=self._health,
                                       upgrade_timeout=self.upgrade_timeout, client_budget=self.outbound,
                                       ssl_context=self._ssl_context())
        self.server.start()
        self.port = self.server.server_port
        self.membership.start(self.url, self.seeds, self.ready, found=self.rebalancer.found_cluster)
        if not self.seeds:
            self.rebalancer.found_cluster()
        self.rebalancer.start()
        if not self.ready.wait(timeout):
            self.stop()
            raise TimeoutError(f"{self.node_id} did not join the cluster of {list(self.seeds)} in {timeout}s")
        log.info("node %s ready at %s (map v%d)", self.node_id, self.url, self.table.version)
        return self

    def stop(self) -> None:
        """Close every socket and kill every greenlet of this node; idempotent, never graceful."""
        if self.stopped:
            return
        self.stopped = True
        if self.server is not None:
            self.server.close()
        self.membership.close()
        self.writer.close()
        self.rebalancer.close()
        for conn in list(self.conns.values()):
            conn.fs.close()
        self.group.kill(block=True, timeout=2.0)
        self.conns.clear()
        log.info("node %s stopped", self.node_id)

    kill = stop

    # -- the partition table

    @property
    def table(self) -> PartitionTable:
        """The current partition table."""
        return self.tables.current

    def adopt(self, table: PartitionTable) -> bool:
        """Switch to a newer table: recompute replication targets, push the map to clients."""
        if not self.tables.adopt(table):
            return False
        if self.node_id in table.nodes:
            self.ready.set()
        frame = table.client_frame()
        for conn in list(self.conns.values()):
            if conn.authed and not conn.closed:
                conn.send(frame)
                conn.map_version_sent = table.version
        log.info("node %s adopted partition map v%d (%d nodes)", self.node_id, table.version, len(table.nodes))
        return True

    def _health(self) -> Dict[str, Any]:
        return {"status": "ok", "nodeId": self.node_id, "mapVersion": self.table.version}

    # -- client connections

    def serve_client(self, fs: FrameSocket) -> None:
        """Run one client socket until it closes (called by the WebSocket app)."""
        conn = ClientConnection(next(self._cids), fs, authed=self.jwt_secret is None,
                                slow_bytes=self.slow_consumer_bytes)
        self.conns[conn.cid] = conn
        try:
            if self.jwt_secret is not None:
                conn.send_wire({"type": "AUTH_REQUIRED"})
            elif len(self.table.nodes) > 1:
                conn.send(self.table.client_frame())
                conn.map_version_sent = self.table.version
            while not self.stopped:
                try:
                    data = fs.recv()
                except FrameTooLarge as exc:
                    log.info("closing client #%d: %s", conn.cid, exc)
                    break
                if data is None:
                    break
                self.handle_frame(conn, data)
        finally:
            self.conns.pop(conn.cid, None)
            self.subs.drop_connection(conn)
            self.search.drop_connection(conn)
            self.ormaps.drop_connection(conn)
            for component in (self.topics, self.locks, self.counters):
                component.drop_connection(conn)
            fs.close(flush=True)

    def handle_frame(self, conn: ClientConnection, data: Any) -> None:
        if isinstance(data, str):
            if conn.authed:
                conn.error(400, "text frames are not supported; send msgpack in binary frames")
            return
        try:
            d = msgpack.unpackb(data, raw=False, strict_map_key=False)
        except Exception:  # msgpack raises many unrelated types on garbage
            d = None
        if type(d) is not dict or type(d.get("type")) is not str:
            if conn.authed:
                conn.error(400, "undecodable frame: expected a msgpack map with a string 'type'")
            return
        kind = d["type"]
        if not conn.authed:
            if kind == "AUTH":
                self._on_auth(conn, d)
            return  # everything else is dropped until AUTH succeeds, as on the real server
        handler = self._handlers.get(kind)
        try:
            if handler is None:
                if kind in UNSUPPORTED:
                    raise Unsupported(f"{kind} is not implemented by the dev server")
                raise BadFrame(f"unknown or server-only message type {kind!r}")
            handler(conn, d)
        except BadFrame as exc:     # and Unsupported (501), LimitExceeded (429)
            conn.error(exc.code, str(exc), {"lastId": exc.last_id} if exc.last_id else None)
        except Exception as exc:  # a bug must not take the connection down
            log.exception("node %s: error handling %s", self.node_id, kind)
            conn.error(500, f"internal error: {type(exc).__name__}")

    # -- handlers

    def _on_auth(self, conn: ClientConnection, d: Dict[str, Any]) -> None:
        assert self.jwt_secret is not None
        user = verify_hs256(d.get("token"), self.jwt_secret, self.clock.now_ms() / 1000.0)
        if user is None:
            conn.send_wire({"type": "AUTH_FAIL", "error": "Authentication failed"})
            conn.fs.close(flush=True)
            return
        conn.authed, conn.user_id = True, user
        conn.send_wire({"type": "AUTH_ACK", "userId": user})
        if len(self.table.nodes) > 1:
            conn.send(self.table.client_frame())
            conn.map_version_sent = self.table.version

    def _on_ping(self, conn: ClientConnection, d: Dict[str, Any]) -> None:
        ts = d.get("timestamp")
        if type(ts) is float and ts.is_integer():
            ts = int(ts)
        if type(ts) is not int:
            raise BadFrame("PING needs an integer timestamp")
        conn.send_wire({"type": "PONG", "timestamp": ts, "serverTime": self.clock.now_ms()})

    def _on_map_request(self, conn: ClientConnection, d: Dict[str, Any]) -> None:
        p = d.get("payload")
        current = p.get("currentVersion") if isinstance(p, dict) else None
        if current is None:
            current = 0
        if type(current) not in (int, float):
            raise BadFrame("currentVersion must be a number")
        if current < self.table.version:
            conn.send(self.table.client_frame())
            conn.map_version_sent = self.table.version

    def _on_batch(self, conn: ClientConnection, d: Dict[str, Any]) -> None:
        data = d.get("data")
        if type(data) is not bytes:
            raise BadFrame("BATCH needs bin data")
        for frame in codec.unpack_batch(data):
            self.handle_frame(conn, frame)

    def _on_client_op(self, conn: ClientConnection, d: Dict[str, Any]) -> None:
        p = d.get("payload")
        if type(p) is not dict:
            raise BadFrame("CLIENT_OP needs a payload map")
        op_id = p.get("id")
        self._write(conn, [p], None, op_id if type(op_id) is str else "unknown")

    def _on_op_batch(self, conn: ClientConnection, d: Dict[str, Any]) -> None:
        p = d.get("payload")
        if not isinstance(p, dict) or type(p.get("ops")) is not list:
            raise BadFrame("OP_BATCH needs payload.ops")
        ops = p["ops"]
        tail = ops[-1] if ops else None
        last = tail.get("id") if isinstance(tail, dict) else None
        last_id = last if type(last) is str else "unknown"
        if not ops:
            conn.send_wire(fastpath.op_ack("unknown"))
            return
        self._write(conn, ops, p.get("writeConcern"), last_id)

    def _write(self, conn: ClientConnection, ops: list, batch_wc: Any, last_id: str) -> None:
        try:
            writes, level = parse_ops([op for op in ops if not is_or_op(op)], self.hlc.now)
            writes.extend(parse_or_op(op) for op in ops if is_or_op(op))
        except BadFrame as exc:
            exc.last_id = last_id
            raise
        if batch_wc is not None:
            if type(batch_wc) is not str or batch_wc not in LEVELS:
                raise BadFrame(f"unknown writeConcern {batch_wc!r}", last_id)
            level = max(level, LEVELS[batch_wc])
        if level < 0:
            level = APPLIED
        table = self.table
        foreign = [w for w in writes if table.owners[w.pid] != self.node_id]
        if foreign:
            if self.strict:
                pid = foreign[0].pid
                conn.error("NOT_OWNER", f"partition {pid} is owned by {table.owners[pid]}", {
                    "partitionId": pid, "mapVersion": table.version,
                    "currentOwner": table.owners[pid], "lastId": last_id})
                return
            if conn.hinted_version != table.version:
                conn.send(table.client_frame())  # so a client routing "dumb" can correct itself
                conn.hinted_version = table.version

        def done(achieved: Optional[int]) -> None:
            if conn.closed:
                return
            if achieved is None:
                conn.error(503, "write not confirmed by the partition owner before the deadline",
                           {"lastId": last_id})
                return
            conn.send_wire(fastpath.op_ack(last_id, LEVEL_NAMES.get(achieved, "APPLIED")))

        self.writer.write(writes, level, (self.node_id, conn.cid), done,
                          self.clock.monotonic() + WRITE_DEADLINE_S)

    def __repr__(self) -> str:
        state = "stopped" if self.stopped else ("ready" if self.ready.is_set() else "starting")
        where = self.url if self.port else "unbound"
        return f"<Node {self.node_id} {where} {state} v{self.table.version} conns={len(self.conns)}>"
