"""PartitionRouter: key -> partition -> owner node -> Connection. Never retries.

Smart routing (the default) sends a key to its partition owner. When the owner has no
usable connection it is a *miss*, and then:

- the owner was never reached yet (still connecting): the key goes through another node,
  which forwards it (counted as *forwarded*);
- the owner's connection was lost: by default (``owner_down="wait"``) the router raises a
  retryable :class:`~topgun.errors.ClusterUnavailable`, so the engine holds the write until a
  newer map (or the owner's reconnection) changes the answer; with ``owner_down="forward"``
  it goes to the partition's backup, else any live node, which forwards.

Dumb routing (``smart=False``) sends every key through one live node chosen by the key's
hash (stable while the set of live nodes is), and lets the cluster forward. Routing to a
node that happens to own the key still counts as *direct*.

Counters live in :class:`RoutingStats`; the router only counts, it never sleeps or retries.

With smart routing and one connection per node, every key of a partition goes to the same
connection, so a direct answer is kept per partition and reused for as long as the map
object is the same and that connection is open (a lost or removed connection is closed;
a new map replaces the object): routing a write costs a dict lookup, not a walk through
the map and the pool.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Dict, Optional

from ..errors import ClusterUnavailable
from ..protocol.hashing import partition_id
from ..transport.connection import Connection
from .partition_map import LivePartitionMap, PartitionMap
from .pool import ConnectionPool, key_slot

__all__ = ["PartitionRouter", "RoutingStats", "unavailable", "OWNER_DOWN_POLICIES"]

OWNER_DOWN_POLICIES = ("wait", "forward")
_NODE_SEED = 0x7467  # a different murmur seed for picking a node than for picking a slot


@dataclass
class RoutingStats:
    """Routing counters: ``direct`` to the owner, ``forwarded`` via another node, ``misses``
    (the owner had no usable connection), ``retries`` (attempts repeated by failover)."""

    direct: int = 0
    forwarded: int = 0
    misses: int = 0
    retries: int = 0

    def as_dict(self) -> Dict[str, int]:
        return asdict(self)


def unavailable(message: str) -> ClusterUnavailable:
    """A ClusterUnavailable that failover may retry (the next map may fix it)."""
    exc = ClusterUnavailable(message)
    exc.retryable = True
    return exc


class PartitionRouter:
    """Chooses the connection for a key from the current partition map and the pool."""

    def __init__(self, pmap: LivePartitionMap, pool: ConnectionPool, *, smart: bool = True,
                 owner_down: str = "wait", stats: Optional[RoutingStats] = None) -> None:
        if owner_down not in OWNER_DOWN_POLICIES:
            raise ValueError(f"owner_down must be one of {OWNER_DOWN_POLICIES}, got {owner_down!r}")
        self._map = pmap
        self._pool = pool
        self.smart = smart
        self.owner_down = owner_down
        self.stats = stats or RoutingStats()
        # One connection per node: the key does not choose the slot, so an answer holds for the
        # whole partition (a pool without a size, such as a test's stub, is asked every time).
        self._per_partition = getattr(pool, "size", 0) == 1
        self._direct: Dict[int, Connection] = {}   # pid -> owner's connection, for _direct_map only
        self._direct_map: Optional[PartitionMap] = None

    def owner_of(self, key: str) -> Optional[str]:
        """The node id owning ``key`` in the current map (None before the first map)."""
        current = self._map.current
        return current.owner(partition_id(key)) if current is not None else None

    def route(self, key: str) -> Connection:
        """The connection that should carry ``key``.

        Raises:
            ClusterUnavailable: (retryable) no map yet, no live node, or the owner is down
                and the policy is to wait for a new map.
        """
        current = self._map.current
        if current is None:
            raise unavailable("no partition map yet")
        pid = partition_id(key)
        if current is not self._direct_map:
            self._direct.clear()
            self._direct_map = current
        conn = self._direct.get(pid)
        if conn is not None and conn.is_open:
            self.stats.direct += 1
            return conn
        owner = current.owner(pid)
        if not self.smart:
            return self._via_any(key, owner)
        conn = self._pool.connection(owner, key)
        if conn is not None:
            self.stats.direct += 1
            if self._per_partition:
                self._direct[pid] = conn
            return conn
        self.stats.misses += 1
        node = self._pool.node(owner)
        owner_lost = node is not None and node.ever_connected
        if owner_lost and self.owner_down == "wait":
            raise unavailable(f"partition {pid} owner {owner} is unreachable (map v{current.version}); "
                              f"waiting for a new partition map")
        for backup in current.backups_of(pid):
            conn = self._pool.connection(backup, key)
            if conn is not None:
                self.stats.forwarded += 1
                return conn
        return self._via_any(key, owner)

    def _via_any(self, key: str, owner: str) -> Connection:
        live = self._pool.routable_nodes()
        if not live:
            raise unavailable("no cluster node is connected")
        node_id = live[key_slot(key, len(live), _NODE_SEED)]
        conn = self._pool.connection(node_id, key)
        if conn is None:  # pragma: no cover - routable_nodes() just said it had one
            raise unavailable(f"node {node_id} has no open connection")
        if node_id == owner:
            self.stats.direct += 1
        else:
            self.stats.forwarded += 1
        return conn

    def __repr__(self) -> str:
        mode = "smart" if self.smart else "dumb"
        return f"<PartitionRouter {mode} v{self._map.version} {self.stats.as_dict()}>"
