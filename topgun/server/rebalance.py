"""Partition map agreement and migration: one coordinator, prepare (copy data), then commit.

The coordinator is the lowest node id among the live members of the current map. Whenever the
set of live nodes differs from the map's, it places all partitions over the live nodes
(``placement.assign``), with version = highest version seen + 1, and runs two phases:

1. CLUSTER_PREPARE(new map) to every node of the new map. From then on each owner replicates
   its writes to the holders of both maps. For every partition, the *source* (the first holder
   under the old map that is still alive) sends a snapshot of the partition, all maps and
   tombstones, to each holder under the new map that did not hold it before (a joiner, a new
   backup, or a restarted node, told apart by incarnation), and waits until it is applied.
   Then it answers CLUSTER_PREPARED.
2. Once every node has answered, CLUSTER_COMMIT(new map) to everyone. Nodes adopt a committed
   map only if its version is higher than theirs, and push it to their clients.

So a new owner or backup has all acknowledged data before it is one, and writes made during the
copy reach it too (last-writer-wins makes the order irrelevant). When an owner dies its first
backup, which already has the data, becomes the owner. A membership change during a prepare
restarts it with a newer version. Nodes that stop holding a partition keep their stale copy;
it is never served and is overwritten by the next snapshot if the partition comes back.

Every node also heals a missed commit: a heartbeat showing a newer version than ours makes it
fetch that table (CLUSTER_TABLE_REQUEST) from the peer.

What it is given: the node's id, its :class:`~topgun.server.table.LiveTable` (the prepared
table lives there, so replication follows it), its store (snapshots), its peers, ``spawn``,
the clock and ``adopt(table)``, the node's switch to a committed table (which also tells the
clients).

Not here: placing partitions (``placement.py``), links and failure detection
(``membership.py``).
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Dict, List, Optional, Sequence, Set

from gevent.event import AsyncResult, Event

from topgun.clock import Clock

from .membership import Membership
from .placement import PartitionTable, assign
from .store import Store
from .table import LiveTable

__all__ = ["Rebalancer", "PREPARE_TIMEOUT_S", "SNAPSHOT_CHUNK"]

log = logging.getLogger(__name__)

PREPARE_TIMEOUT_S = 15.0
SNAPSHOT_CHUNK = 20_000
SETTLE_S = 0.02


class Rebalancer:
    """Runs the coordinator loop of one node and its share of every migration."""

    def __init__(self, node_id: str, tables: LiveTable, store: Store, peers: Membership, *,
                 spawn: Callable[..., Any], clock: Clock, adopt: Callable[[PartitionTable], bool]) -> None:
        self.node_id = node_id
        self.tables = tables
        self.store = store
        self.peers = peers
        self.spawn = spawn
        self.clock = clock
        self.adopt = adopt
        self.closed = False
        self.prepared_by = ""
        self._wake = Event()
        self._acks: Dict[int, Set[str]] = {}
        self._acked = Event()
        self._fetching = False
        self.migrations = 0

    @property
    def prepared(self) -> Optional[PartitionTable]:
        return self.tables.prepared

    def start(self) -> None:
        self.spawn(self._loop)

    def close(self) -> None:
        self.closed = True
        self._wake.set()

    def wake(self) -> None:
        self._wake.set()

    def found_cluster(self) -> None:
        """Start a new cluster of this node alone (map version 1)."""
        peers = self.peers
        self.adopt(assign({self.node_id: (peers.url, peers.incarnation)}, 1, self.clock.now_ms()))
        self.wake()  # peers we already know (mutual seeds) are taken in by the next round

    def is_coordinator(self) -> bool:
        table = self.tables.current
        if self.node_id not in table.nodes:
            return False
        live = [n for n in table.nodes if self.peers.is_alive(n)]
        return min(live) == self.node_id

    def desired(self) -> Dict[str, Any]:
        peers = self.peers
        nodes = {self.node_id: (peers.url, peers.incarnation)}
        for peer in peers.peers.values():
            if peer.alive:
                nodes[peer.node_id] = (peer.url, peer.incarnation)
        return nodes

    # -- coordinator

    def _loop(self) -> None:
        while not self.closed:
            self._wake.wait()
            self._wake.clear()
            self.clock.sleep(SETTLE_S)  # let a burst of membership news settle first
            if self.closed or not self.is_coordinator():
                continue
            desired = self.desired()
            if desired == self.tables.current.nodes:
                continue
            try:
                self._rebalance(desired)
            except Exception:
                log.exception("%s: rebalance failed", self.node_id)
                self._wake.set()

    def _rebalance(self, desired: Dict[str, Any]) -> None:
        members, me = self.peers, self.node_id
        version = max(self.tables.version, members.max_version_seen,
                      self.prepared.version if self.prepared else 0) + 1
        members.max_version_seen = version
        new = assign(desired, version, self.clock.now_ms())
        log.info("%s: coordinating map v%d over %s", me, version, sorted(desired))
        acks = self._acks[version] = set()
        msg = {"type": "CLUSTER_PREPARE", "table": new.to_internal()}
        for node_id in new.nodes:
            if node_id != me:
                members.send(node_id, dict(msg))
        self.on_prepare(me, msg)
        deadline = self.clock.monotonic() + PREPARE_TIMEOUT_S
        while not set(new.nodes) <= acks:
            if self.closed:
                return
            if self._wake.is_set():
                if self.desired() != desired:
                    log.info("%s: membership changed during prepare of v%d; starting over", me, version)
                    return  # the loop runs again: the wake flag is still set
                self._wake.clear()
            if self.clock.monotonic() > deadline:
                log.warning("%s: prepare of v%d timed out (acks from %s)", me, version, sorted(acks))
                self._wake.set()
                return
            self._acked.wait(0.05)
            self._acked.clear()
        del self._acks[version]
        self.migrations += 1
        members.broadcast({"type": "CLUSTER_COMMIT", "table": new.to_internal()})
        self.adopt_committed(new)

    def on_prepared(self, peer: str, msg: Dict[str, Any]) -> None:
        acks = self._acks.get(int(msg.get("version") or 0))
        if acks is not None:
            acks.add(peer)
            self._acked.set()

    # -- every node

    def on_prepare(self, peer: str, msg: Dict[str, Any]) -> None:
        new = PartitionTable.from_internal(msg["table"])
        members = self.peers
        members.max_version_seen = max(members.max_version_seen, new.version)
        if new.version <= self.tables.version or (self.prepared and self.prepared.version >= new.version):
            return
        members.learn(new.nodes)  # a joiner may not have dialled us yet
        # Install the union of old and new holders as replication targets *before* taking any
        # snapshot: every write is then either in the snapshot or sent to the new holder.
        self.prepared_by = peer
        self.tables.prepare(new)
        self.spawn(self._copy, new, peer)

    def forget_coordinator(self, peer: str) -> None:
        """``peer`` died: drop the prepare it started (the next coordinator starts its own)."""
        if self.prepared is not None and self.prepared_by == peer:
            log.info("%s: dropping v%d prepared by dead %s", self.node_id, self.prepared.version, peer)
            self.tables.prepare(None)

    def _copy(self, new: PartitionTable, coordinator: str) -> None:
        me = self.node_id
        cur = self.tables.current
        jobs: Dict[str, List[int]] = {}
        if cur.version:
            for pid in range(len(cur.owners)):
                source = next((h for h in cur.holders(pid)
                               if h in new.nodes and new.nodes[h][1] == cur.nodes[h][1]), None)
                if source != me:
                    continue
                for target in new.holders(pid):
                    if target != me and not cur.holds(target, new.nodes[target][1], pid):
                        jobs.setdefault(target, []).append(pid)
        for target, pids in jobs.items():
            if not self._send_partitions(target, pids, new):
                log.warning("%s: copying %d partitions to %s failed", me, len(pids), target)
                return  # no ack: the coordinator times out or restarts with the new membership
        if self.prepared is not new:
            return
        log.info("%s: prepared v%d (sent %d partitions)", me, new.version, sum(len(p) for p in jobs.values()))
        if coordinator == me:
            self.on_prepared(me, {"version": new.version})
        else:
            self.peers.send(coordinator, {"type": "CLUSTER_PREPARED", "version": new.version})

    def _send_partitions(self, target: str, pids: List[int], new: PartitionTable) -> bool:
        store = self.store
        batch: List[Any] = []
        for i, pid in enumerate(pids):
            batch.extend(store.snapshot(pid))
            if len(batch) >= SNAPSHOT_CHUNK or i == len(pids) - 1:
                if self.prepared is not new or not self._call_wait(target, batch):
                    return False
                batch = []
        return True

    def _call_wait(self, target: str, writes: Sequence[Any]) -> bool:
        result: AsyncResult = AsyncResult()
        self.peers.call(target, {"type": "CLUSTER_SNAPSHOT", "writes": writes}, result.set,
                        timeout=PREPARE_TIMEOUT_S)
        return result.get() is not None

    def on_snapshot(self, peer: str, msg: Dict[str, Any]) -> None:
        self.store.apply_writes(msg["writes"])
        self.peers.reply(peer, msg, {})

    def on_commit(self, peer: str, msg: Dict[str, Any]) -> None:
        self.adopt_committed(PartitionTable.from_internal(msg["table"]))

    def adopt_committed(self, table: PartitionTable) -> None:
        members = self.peers
        members.max_version_seen = max(members.max_version_seen, table.version)
        if table.version <= self.tables.version:
            return
        if self.prepared is not None and self.prepared.version <= table.version:
            self.tables.prepared = None   # adopt() below recomputes the targets
        self.adopt(table)
        self.wake()  # the coordinator may have changed, or membership moved on meanwhile

    # -- healing a missed commit

    def on_newer_map(self, peer_id: str, version: int) -> None:
        """A heartbeat showed ``version`` > ours: fetch that table from ``peer_id`` (one at a time)."""
        if self._fetching:
            return
        self._fetching = True

        def got(reply: Optional[Dict[str, Any]]) -> None:
            self._fetching = False
            if reply is not None and reply.get("table"):
                self.adopt_committed(PartitionTable.from_internal(reply["table"]))

        self.peers.call(peer_id, {"type": "CLUSTER_TABLE_REQUEST"}, got, timeout=2.0)

    def on_table_request(self, peer_id: str, msg: Dict[str, Any]) -> None:
        table = self.tables.current
        self.peers.reply(peer_id, msg, {"table": table.to_internal() if table.version else None})

    def __repr__(self) -> str:
        prepared = f" preparing v{self.prepared.version}" if self.prepared else ""
        return f"<Rebalancer {self.node_id} migrations={self.migrations}{prepared}>"
