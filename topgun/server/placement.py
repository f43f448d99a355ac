"""Partition placement: rendezvous (highest-random-weight) hashing with mmh3, and the table.

For each partition every live node gets the score ``mmh3.hash64("<nodeId>/<pid>")[0]``; the highest
score owns the partition and the next ``backup_count`` are its backups. Adding or removing a
node only moves the partitions whose top scores involve that node, and when an owner dies its
first backup becomes the owner (it already has the data).

:class:`PartitionTable` is one immutable, versioned assignment. ``to_internal()`` is what nodes
exchange; ``client_frame()`` is the PARTITION_MAP frame pushed to clients (encoded once).
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import mmh3

from topgun.protocol import codec
from topgun.protocol.hashing import PARTITION_COUNT

__all__ = ["PartitionTable", "assign", "BACKUP_COUNT"]

BACKUP_COUNT = 1


def _ranked(pid: int, node_ids: Sequence[str]) -> List[str]:
    return sorted(node_ids, key=lambda n: (mmh3.hash64(f"{n}/{pid}", signed=False)[0], n), reverse=True)


class PartitionTable:
    """Owner and backups of every partition under one map version.

    ``nodes`` maps node id -> (websocket url, incarnation); the incarnation tells a restarted
    node (empty) from the one that held data under this table.
    """

    __slots__ = ("version", "generated_at", "nodes", "owners", "backups", "_frame")

    def __init__(self, version: int, generated_at: int, nodes: Dict[str, Tuple[str, str]],
                 owners: Sequence[str], backups: Sequence[Sequence[str]]) -> None:
        self.version = version
        self.generated_at = generated_at
        self.nodes = dict(nodes)
        self.owners: Tuple[str, ...] = tuple(owners)
        self.backups: Tuple[Tuple[str, ...], ...] = tuple(tuple(b) for b in backups)
        self._frame: Optional[bytes] = None

    def holders(self, pid: int) -> Tuple[str, ...]:
        return (self.owners[pid],) + self.backups[pid]

    def holds(self, node_id: str, incarnation: str, pid: int) -> bool:
        """Whether this incarnation of ``node_id`` held ``pid``'s data under this table."""
        entry = self.nodes.get(node_id)
        return entry is not None and entry[1] == incarnation and node_id in self.holders(pid)

    def owned_by(self, node_id: str) -> List[int]:
        return [p for p, o in enumerate(self.owners) if o == node_id]

    def client_payload(self) -> Dict[str, Any]:
        return {
            "version": self.version,
            "partitionCount": PARTITION_COUNT,
            "nodes": [{"nodeId": n, "endpoints": {"websocket": url}, "status": "ACTIVE"}
                      for n, (url, _inc) in sorted(self.nodes.items())],
            "partitions": [{"partitionId": p, "ownerNodeId": self.owners[p],
                            "backupNodeIds": list(self.backups[p])} for p in range(PARTITION_COUNT)],
            "generatedAt": self.generated_at,
        }

    def client_frame(self) -> bytes:
        """The encoded PARTITION_MAP frame (built once)."""
        if self._frame is None:
            self._frame = codec.encode_wire({"type": "PARTITION_MAP", "payload": self.client_payload()})
        return self._frame

    def to_internal(self) -> Dict[str, Any]:
        return {"version": self.version, "generatedAt": self.generated_at,
                "nodes": [[n, url, inc] for n, (url, inc) in sorted(self.nodes.items())],
                "owners": list(self.owners), "backups": [list(b) for b in self.backups]}

    @classmethod
    def from_internal(cls, d: Dict[str, Any]) -> "PartitionTable":
        return cls(int(d["version"]), int(d["generatedAt"]),
                   {str(n): (str(url), str(inc)) for n, url, inc in d["nodes"]},
                   d["owners"], d["backups"])

    def __repr__(self) -> str:
        return f"<PartitionTable v{self.version} nodes={sorted(self.nodes)}>"


def assign(nodes: Dict[str, Tuple[str, str]], version: int, generated_at: int,
           backup_count: int = BACKUP_COUNT) -> PartitionTable:
    """Place all partitions over ``nodes`` (id -> (url, incarnation)) by rendezvous hashing."""
    ids = sorted(nodes)
    if not ids:
        raise ValueError("cannot place partitions on zero nodes")
    owners, backups = [], []
    for pid in range(PARTITION_COUNT):
        ranked = _ranked(pid, ids)
        owners.append(ranked[0])
        backups.append(ranked[1:1 + backup_count])
    return PartitionTable(version, generated_at, nodes, owners, backups)
