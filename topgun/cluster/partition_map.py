"""The routing view of a cluster: who owns which of the 271 partitions.

:class:`PartitionMap` is an immutable, versioned snapshot built from the wire frame
``messages.PartitionMap`` (WIRE.md 10.2); building one validates the whole frame before
anything is built, so a map is taken whole or not at all. Refused with
:class:`~topgun.errors.RemoteProtocolError`: a ``partitionCount`` other than 271; a
``version`` that is not an int within the wire's u32 (a bool or a string is not an int);
more than ``max_nodes`` nodes (default :data:`MAX_NODES`); a node id that is empty, not a
string or listed twice; a websocket endpoint that is missing or not ``ws://``/``wss://``
with a host and a port; a partition listed twice, out of range, left out, or owned by a node
the map does not list.
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
from urllib.parse import urlsplit

from ..errors import RemoteProtocolError
from ..protocol import messages
from ..protocol.hashing import PARTITION_COUNT
from ..retry import VersionedEvent

log = logging.getLogger(__name__)

__all__ = ["PartitionMap", "LivePartitionMap", "NodeEntry", "single_node_map", "ROUTABLE_STATUSES",
           "MAX_NODES", "MAX_VERSION", "lost_partitions"]

# Statuses of backups the client connects to (as the TypeScript ClusterClient does).
ROUTABLE_STATUSES = frozenset({"ACTIVE", "JOINING"})
#: Most nodes a map may list: far above any real TopGun cluster, far below what would let a
#: hostile or broken server make the client hold thousands of node entries.
MAX_NODES = 1000
#: ``version`` is a u32 on the wire (WIRE.md 10.2).
MAX_VERSION = 2**32 - 1


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _endpoint_problem(url: object) -> Optional[str]:
    """Why ``url`` is not a usable ws:// endpoint (None if it is one)."""
    if not isinstance(url, str) or not url:
        return f"no websocket endpoint (got {url!r})"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return f"a bad websocket endpoint {url!r}"
    if parts.scheme not in ("ws", "wss") or not parts.hostname or port is None:
        return f"websocket endpoint {url!r} is not ws:// or wss:// with a host and a port"
    return None


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
    def from_message(cls, msg: messages.PartitionMap, source: Optional[str] = None, *,
                     max_nodes: int = MAX_NODES) -> "PartitionMap":
        """Validate a PARTITION_MAP frame and build the routing view.

        Args:
            msg: the decoded frame.
            source: where it came from (for messages).
            max_nodes: refuse maps listing more nodes than this.

        Raises:
            RemoteProtocolError: the frame is not a usable 271-partition map.
        """
        where = f" from {source}" if source else ""
        version = msg.version
        shown = f"v{version}" if _is_int(version) else f"version {version!r}"

        def refuse(why: str) -> RemoteProtocolError:
            return RemoteProtocolError(f"refused partition map {shown}{where}: {why}")

        if not _is_int(version) or not 0 <= version <= MAX_VERSION:
            raise refuse(f"version must be an int within 0..{MAX_VERSION}")
        if msg.partition_count != PARTITION_COUNT:
            raise refuse(f"partitionCount is {msg.partition_count!r}, but TopGun keys hash to "
                         f"{PARTITION_COUNT} partitions; this server is incompatible")
        if msg.generated_at is not None and not _is_int(msg.generated_at):
            raise refuse(f"generatedAt {msg.generated_at!r} is not an int")
        if not isinstance(msg.nodes, (list, tuple)) or len(msg.nodes) > max_nodes:
            count = len(msg.nodes) if isinstance(msg.nodes, (list, tuple)) else msg.nodes
            raise refuse(f"it lists {count} nodes, more than the {max_nodes} a client accepts")
        nodes: Dict[str, NodeEntry] = {}
        for info in msg.nodes:
            node_id = info.node_id
            if not isinstance(node_id, str) or not node_id:
                raise refuse(f"node id {node_id!r} is not a non-empty string")
            if node_id in nodes:
                raise refuse(f"node {node_id!r} is listed twice")
            if not isinstance(info.status, str):
                raise refuse(f"node {node_id!r} has status {info.status!r}")
            endpoints = info.endpoints
            url = endpoints.get("websocket") if isinstance(endpoints, dict) else None
            problem = _endpoint_problem(url)
            if problem is not None:
                raise refuse(f"node {node_id!r} has {problem}")
            nodes[node_id] = NodeEntry(node_id, url, info.status)
        if not isinstance(msg.partitions, (list, tuple)) or len(msg.partitions) > PARTITION_COUNT:
            raise refuse(f"it lists more than {PARTITION_COUNT} partitions")
        owners: List[Optional[str]] = [None] * PARTITION_COUNT
        backups: List[Tuple[str, ...]] = [()] * PARTITION_COUNT
        for p in msg.partitions:
            pid = p.partition_id
            if not _is_int(pid) or not 0 <= pid < PARTITION_COUNT:
                raise refuse(f"partition id {pid!r} is out of range")
            if owners[pid] is not None:
                raise refuse(f"partition {pid} is listed twice")
            if not isinstance(p.owner_node_id, str) or p.owner_node_id not in nodes:
                raise refuse(f"partition {pid} is owned by unknown node {p.owner_node_id!r}")
            if not isinstance(p.backup_node_ids, tuple) or not all(isinstance(b, str) for b in p.backup_node_ids):
                raise refuse(f"partition {pid} has backups {p.backup_node_ids!r}")
            owners[pid] = p.owner_node_id
            # A backup the map does not list cannot be reached: routing just skips it.
            backups[pid] = tuple(b for b in p.backup_node_ids if b in nodes)
        missing = [i for i, o in enumerate(owners) if o is None]
        if missing:
            raise refuse(f"{len(missing)} partitions have no owner (first: {missing[0]})")
        return cls(version, nodes, tuple(o for o in owners if o is not None), tuple(backups),
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

        Every node that owns a partition, whatever its status (a map that still routes to a
        node must be able to reach it), and ACTIVE or JOINING backups (forwarding uses them).
        Nodes that hold nothing are not dialled: at most 271 owners, however many nodes the
        map lists.
        """
        wanted = set(self.owners)
        wanted.update(b for group in self.backups for b in group
                      if self.nodes[b].status in ROUTABLE_STATUSES)
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


def lost_partitions(old: Optional[PartitionMap], new: PartitionMap) -> List[int]:
    """Partitions whose owner and every backup under ``old`` are gone in ``new``.

    Gone means not listed, or listed as FAILED. Such a partition's acknowledged writes
    lived only on nodes that vanished in this one change, so they may be lost. A synthetic
    map (one standalone server) has no backups to lose.
    """
    if old is None or old.synthetic or new.synthetic:
        return []
    gone = {nid for nid in old.nodes
            if nid not in new.nodes or new.nodes[nid].status == "FAILED"}
    if not gone:
        return []
    return [p for p, owner in enumerate(old.owners)
            if owner in gone and all(b in gone for b in old.backups_of(p))]


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
