"""MapChoice: which of the partition maps the nodes sent the client routes with.

The rule: keep the latest map from each node the client is connected to; route with the map
from the **lowest node id** among them, skipping a node that most of the other nodes' maps
have dropped (not listed, or FAILED). A node's own maps replace each other only by a higher
version (its versions count up, WIRE.md 10.2); a node that was lost is forgotten, so its next
map is taken whatever its version (a restarted node counts from 1 again).

Why the skip: a hung node (SIGSTOP, a long pause) keeps its connections open until the
client's heartbeat gives up on them (15 s), and its map still lists itself. The other nodes
drop it from theirs within seconds; without the skip the client would go on routing the hung
node's partitions to it until its connection closed. Most, not any: one node's odd view (a
split, probe_notes.md 13.3) does not move every client off the master. If every node is
dropped by most of the others (two nodes that dropped each other), the lowest id is used.

Why this rule and not "the highest version wins":

* TopGun 2.2.0 versions are per node and not comparable (WIRE.md 10.2): the same table is v3 on
  the master and v1 on a joiner, and after the master dies the survivor's v2 is *newer* than the
  dead master's v5. "Highest wins" pins the dead master's map (seen live: the client never
  followed the survivor after a SIGKILL of the master) and lets two clients route the same key
  to different nodes depending on which maps reached them first.
* The lowest id is the node 2.2.0 elects as master (10.4), and the only one that keeps its table
  up to date (non-masters keep their join snapshot, probe_notes.md 13.5). So its map is the
  freshest, and every client connected to the same live nodes picks the same map, whatever order
  the maps arrived in and whatever the versions say.
* A majority vote needs three or more views and still a tie-break for two; the lowest id gives
  the same answer where a majority exists in 2.2.0 (master and fresh joiners agree) and one
  where it does not.

Maps from a connection whose node id is not known yet (the seed connection during discovery)
are *provisional*: used only while no node's map is known.

Not here: fetching maps, validating them (``partition_map.py``), which nodes to connect to.
Nor anything that makes a split cluster consistent: if node A lists B as FAILED and B lists A,
clients that only ever reached B route with B's map (the README says so).
"""
from __future__ import annotations

from typing import Dict, Optional

from .partition_map import PartitionMap

__all__ = ["MapChoice"]


def _drops(pmap: PartitionMap, node_id: str) -> bool:
    entry = pmap.nodes.get(node_id)
    return entry is None or entry.status == "FAILED"


class MapChoice:
    """The latest map per source node; :meth:`trusted` is the one to route with."""

    def __init__(self) -> None:
        self._by_node: Dict[str, PartitionMap] = {}
        self._provisional: Optional[PartitionMap] = None

    def offer(self, source: Optional[str], pmap: PartitionMap) -> bool:
        """Record ``pmap`` as ``source``'s latest map (``None``: a provisional map).

        Returns:
            False if it was ignored: ``source`` already sent this version or a higher one.
        """
        if source is None:
            self._provisional = pmap
            return True
        held = self._by_node.get(source)
        if held is not None and pmap.version <= held.version:
            return False
        self._by_node[source] = pmap
        return True

    def forget(self, source: str) -> None:
        """Drop ``source``'s map (its connections are gone); its next map counts whatever its version."""
        self._by_node.pop(source, None)

    def clear(self) -> None:
        """Forget everything (every connection was lost)."""
        self._by_node.clear()
        self._provisional = None

    def trusted(self) -> Optional[PartitionMap]:
        """The map of the lowest node id that sent one and that most others still list; else
        the provisional map; else None."""
        by_node = self._by_node
        if not by_node:
            return self._provisional
        ids = sorted(by_node)
        for node_id in ids:
            others = [m for source, m in by_node.items() if source != node_id]
            dropped = sum(1 for m in others if _drops(m, node_id))
            if dropped * 2 <= len(others):
                return by_node[node_id]
        return by_node[ids[0]]

    def sources(self) -> Dict[str, int]:
        """source node id -> version of its latest map."""
        return {nid: pmap.version for nid, pmap in sorted(self._by_node.items())}

    def __repr__(self) -> str:
        trusted = self.trusted()
        return f"<MapChoice trusted={trusted.source if trusted else None} sources={self.sources()}>"
