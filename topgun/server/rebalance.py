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
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Set

from gevent.event import AsyncResult, Event

from .placement import PartitionTable, assign

if TYPE_CHECKING:
    from .node import Node

__all__ = ["Rebalancer", "PREPARE_TIMEOUT_S", "SNAPSHOT_CHUNK"]

log = logging.getLogger(__name__)

PREPARE_TIMEOUT_S = 15.0
SNAPSHOT_CHUNK = 20_000
SETTLE_S = 0.02


class Rebalancer:
    """Runs the coordinator loop of one node and its share of every migration."""

    def __init__(self, node: "Node") -> None:
        self.node = node
        self.prepared: Optional[PartitionTable] = None
        self.prepared_by = ""
        self._wake = Event()
        self._acks: Dict[int, Set[str]] = {}
        self._acked = Event()
        self.migrations = 0

    def start(self) -> None:
        self.node.spawn(self._loop)

    def wake(self) -> None:
        self._wake.set()

    def found_cluster(self) -> None:
        """Start a new cluster of this node alone (map version 1)."""
        node = self.node
        node.adopt(assign({node.node_id: (node.url, node.incarnation)}, 1, node.clock.now_ms()))

    def is_coordinator(self) -> bool:
        node = self.node
        table = node.table
        if node.node_id not in table.nodes:
            return False
        live = [n for n in table.nodes if node.membership.is_alive(n)]
        return min(live) == node.node_id

    def desired(self) -> Dict[str, Any]:
        node = self.node
        nodes = {node.node_id: (node.url, node.incarnation)}
        for peer in node.membership.peers.values():
            if peer.alive:
                nodes[peer.node_id] = (peer.url, peer.incarnation)
        return nodes

    # -- coordinator

    def _loop(self) -> None:
        node = self.node
        while not node.stopped:
            self._wake.wait()
            self._wake.clear()
            node.clock.sleep(SETTLE_S)  # let a burst of membership news settle first
            if node.stopped or not self.is_coordinator():
                continue
            desired = self.desired()
            if desired == node.table.nodes:
                continue
            try:
                self._rebalance(desired)
            except Exception:
                log.exception("%s: rebalance failed", node.node_id)
                self._wake.set()

    def _rebalance(self, desired: Dict[str, Any]) -> None:
        node, members = self.node, self.node.membership
        version = max(node.table.version, members.max_version_seen,
                      self.prepared.version if self.prepared else 0) + 1
        members.max_version_seen = version
        new = assign(desired, version, node.clock.now_ms())
        log.info("%s: coordinating map v%d over %s", node.node_id, version, sorted(desired))
        acks = self._acks[version] = set()
        msg = {"type": "CLUSTER_PREPARE", "table": new.to_internal()}
        for node_id in new.nodes:
            if node_id != node.node_id:
                members.send(node_id, dict(msg))
        self.on_prepare(node.node_id, msg)
        deadline = node.clock.monotonic() + PREPARE_TIMEOUT_S
        while not set(new.nodes) <= acks:
            if node.stopped:
                return
            if self._wake.is_set():
                if self.desired() != desired:
                    log.info("%s: membership changed during prepare of v%d; starting over", node.node_id, version)
                    return  # the loop runs again: the wake flag is still set
                self._wake.clear()
            if node.clock.monotonic() > deadline:
                log.warning("%s: prepare of v%d timed out (acks from %s)", node.node_id, version, sorted(acks))
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
        node = self.node
        new = PartitionTable.from_internal(msg["table"])
        node.membership.max_version_seen = max(node.membership.max_version_seen, new.version)
        if new.version <= node.table.version or (self.prepared and self.prepared.version >= new.version):
            return
        node.membership.learn(new.nodes)  # a joiner may not have dialled us yet
        # Install the union of old and new holders as replication targets *before* taking any
        # snapshot: every write is then either in the snapshot or sent to the new holder.
        self.prepared, self.prepared_by = new, peer
        node.recompute_targets()
        node.spawn(self._copy, new, peer)

    def forget_coordinator(self, peer: str) -> None:
        """``peer`` died: drop the prepare it started (the next coordinator starts its own)."""
        if self.prepared is not None and self.prepared_by == peer:
            log.info("%s: dropping v%d prepared by dead %s", self.node.node_id, self.prepared.version, peer)
            self.prepared = None
            self.node.recompute_targets()

    def _copy(self, new: PartitionTable, coordinator: str) -> None:
        node, me = self.node, self.node.node_id
        cur = node.table
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
            node.membership.send(coordinator, {"type": "CLUSTER_PREPARED", "version": new.version})

    def _send_partitions(self, target: str, pids: List[int], new: PartitionTable) -> bool:
        store = self.node.store
        batch: List[List[Any]] = []
        for i, pid in enumerate(pids):
            batch.extend(store.snapshot(pid))
            if len(batch) >= SNAPSHOT_CHUNK or i == len(pids) - 1:
                if self.prepared is not new or not self._call_wait(target, batch):
                    return False
                batch = []
        return True

    def _call_wait(self, target: str, writes: List[List[Any]]) -> bool:
        result: AsyncResult = AsyncResult()
        self.node.membership.call(target, {"type": "CLUSTER_SNAPSHOT", "writes": writes}, result.set,
                                  timeout=PREPARE_TIMEOUT_S)
        return result.get() is not None

    def on_snapshot(self, peer: str, msg: Dict[str, Any]) -> None:
        self.node.store.apply_writes(msg["writes"])
        self.node.membership.reply(peer, msg, {})

    def on_commit(self, peer: str, msg: Dict[str, Any]) -> None:
        self.adopt_committed(PartitionTable.from_internal(msg["table"]))

    def adopt_committed(self, table: PartitionTable) -> None:
        node = self.node
        node.membership.max_version_seen = max(node.membership.max_version_seen, table.version)
        if table.version <= node.table.version:
            return
        if self.prepared is not None and self.prepared.version <= table.version:
            self.prepared = None
        node.adopt(table)
        self.wake()  # the coordinator may have changed, or membership moved on meanwhile

    def __repr__(self) -> str:
        prepared = f" preparing v{self.prepared.version}" if self.prepared else ""
        return f"<Rebalancer {self.node.node_id} migrations={self.migrations}{prepared}>"
