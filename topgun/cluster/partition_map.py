"""The routing view of a cluster: who owns which of the 271 partitions.

:class:`PartitionMap` is an immutable, versioned snapshot built from the wire frame
``messages.PartitionMap`` (WIRE.md 10.2); building one validates it, and a frame whose
``partitionCount`` is not 271 (or that names an owner missing from its node list, or leaves
a partition out) is refused with :class:`~topgun.errors.RemoteProtocolError`.
:func:`single_node_map` makes the stand-in used when a server never sends a map (a
standalone TopGun 2.2.0 server): one node owning everything, version 0.

:class:`LivePartitionMap` holds the current snapshot. ``apply()`` installs a map only if its
version is newer (``force=True`` accepts any: the first map after the whole cluster was
lost may come from restarted nodes that count from 1 again). ``wait_for_newer()`` blocks
until a different map is installed, so failover can wake the moment routing changes.

Not in here: fetching maps, connections, retries.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Tuple

from ..errors import RemoteProtocolError
from ..protocol import messages
from ..protocol.hashing import PARTITION_COUNT
from ..retry import VersionedEvent

log = logging.getLogger(__name__)

__all__ = ["PartitionMap", "LivePartitionMap", "NodeEntry", "single_node_map", "ROUTABLE_STATUSES"]

# Statuses whose nodes the client connects to (as the TypeScript ClusterClient does).
ROUTABLE_STATUSES = frozenset({"ACTIVE", "JOINING"})


@dataclass(frozen=True)
class NodeEntry:
    """One member as the map lists it."""

    node_id: str
    url: Optional[str]
    status: str = "ACTIVE"


@dataclass(frozen=True)
class PartitionMap:
    """An immutable routing table: partition id -> owner node id (and backups).

    Build it with :meth:`from_message` (validating) or :func:`single_node_map`.
    """

    version: int
    nodes: Mapping[str, NodeEntry]
    owners: Tuple[str, ...]
    backups: Tuple[Tuple[str, ...], ...] = ()
    generated_at: Optional[int] = None
    source: Optional[str] = field(default=None, compare=False)
    synthetic: bool = False

    @classmethod
    def from_message(cls, msg: messages.PartitionMap, source: Optional[str] = None) -> "PartitionMap":
        """Validate a PARTITION_MAP frame and build the routing view.

        Raises:
            RemoteProtocolError: the frame is not a usable 271-partition map.
        """
        where = f" from {source}" if source else ""
        if msg.partition_count != PARTITION_COUNT:
            raise RemoteProtocolError(
                f"refused partition map v{msg.version}{where}: partitionCount is {msg.partition_count}, "
                f"but TopGun keys hash to {PARTITION_COUNT} partitions; this server is incompatible")
        nodes: Dict[str, NodeEntry] = {}
        for info in msg.nodes:
            url = (info.endpoints or {}).get("websocket")
            nodes[info.node_id] = NodeEntry(info.node_id, url, info.status)
        owners: List[Optional[str]] = [None] * PARTITION_COUNT
        backups: List[Tuple[str, ...]] = [()] * PARTITION_COUNT
        for p in msg.partitions:
            if not 0 <= p.partition_id < PARTITION_COUNT:
                raise RemoteProtocolError(f"refused partition map v{msg.version}{where}: "
                                          f"partition id {p.partition_id} is out of range")
            if p.owner_node_id not in nodes:
                raise RemoteProtocolError(f"refused partition map v{msg.version}{where}: partition "
                                          f"{p.partition_id} is owned by unknown node {p.owner_node_id!r}")
            owners[p.partition_id] = p.owner_node_id
            backups[p.partition_id] = tuple(b for b in p.backup_node_ids if b in nodes)
        missing = [i for i, o in enumerate(owners) if o is None]
        if missing:
            raise RemoteProtocolError(f"refused partition map v{msg.version}{where}: {len(missing)} partitions "
                                      f"have no owner (first: {missing[0]})")
        return cls(int(msg.version), nodes, tuple(o for o in owners if o is not None), tuple(backups),
                   msg.generated_at, source)

    def owner(self, partition: int) -> str:
        """The node id owning ``partition``."""
        return self.owners[partition]

    def backups_of(self, partition: int) -> Tuple[str, ...]:
        return self.backups[partition] if self.backups else ()

    def url_of(self, node_id: str) -> Optional[str]:
        entry = self.nodes.get(node_id)
        return entry.url if entry is not None else None

    def connectable(self) -> Dict[str, str]:
        """node id -> URL of every node the client should stay connected to.

        ACTIVE and JOINING nodes, plus any node that owns a partition whatever its status
        (a map that still routes to a node must be able to reach it).
        """
        wanted = {n.node_id for n in self.nodes.values() if n.status in ROUTABLE_STATUSES}
        wanted.update(self.owners)
        return {nid: url for nid in sorted(wanted) if (url := self.url_of(nid))}

    def partitions_of(self, node_id: str) -> List[int]:
        return [p for p, owner in enumerate(self.owners) if owner == node_id]

    def moved_from(self, other: Optional["PartitionMap"]) -> int:
        """How many partitions have a different owner than in ``other``."""
        if other is None:
            return len(self.owners)
        return sum(1 for a, b in zip(self.owners, other.owners) if a != b)

    def __repr__(self) -> str:
        kind = " synthetic" if self.synthetic else ""
        return f"<PartitionMap v{self.version}{kind} nodes={sorted(self.nodes)}>"


def single_node_map(node_id: str, url: str) -> PartitionMap:
    """A version-0 map in which ``node_id`` at ``url`` owns every partition."""
    return PartitionMap(0, {node_id: NodeEntry(node_id, url)}, (node_id,) * PARTITION_COUNT,
                        ((),) * PARTITION_COUNT, None, url, synthetic=True)


class LivePartitionMap:
    """The current :class:`PartitionMap`; replaced only by a newer one (or a forced one)."""

    def __init__(self) -> None:
        self.current: Optional[PartitionMap] = None
        self._installs = VersionedEvent()  # its version counts the maps installed

    @property
    def applied(self) -> int:
        """How many maps have been installed so far."""
        return self._installs.version

    @property
    def version(self) -> int:
        """The current map's version; -1 before any map."""
        return self.current.version if self.current is not None else -1

    def is_newer(self, pmap: PartitionMap) -> bool:
        return self.current is None or pmap.version > self.current.version

    def apply(self, pmap: PartitionMap, *, force: bool = False) -> bool:
        """Install ``pmap`` if its version is newer than the current one (or ``force``).

        Returns:
            True if it was installed.
        """
        if not force and not self.is_newer(pmap):
            return False
        previous, self.current = self.current, pmap
        self._installs.bump()
        log.info("applied partition map v%d from %s (%d moved)", pmap.version, pmap.source,
                 pmap.moved_from(previous))
        return True

    def wait_for_newer(self, version: int, timeout: float) -> bool:
        """Block until a map other than ``version`` is installed (True) or ``timeout`` passes.

        Returns at once if that already happened. "Other" rather than "higher" because a
        forced map after a cluster restart may carry a lower version.
        """
        if self.version != version:
            return True
        self._installs.wait_for_change(self._installs.version, timeout)
        return self.version != version

    wait_for_change = wait_for_newer  # the name topgun.retry.Versioned waits on

    def wait_for_any(self, applied: int, timeout: float) -> bool:
        """Block until more than ``applied`` maps have been installed in total."""
        return self._installs.wait_for_change(applied, timeout)

    def __repr__(self) -> str:
        return f"<LivePartitionMap v{self.version} applied={self.applied}>"
