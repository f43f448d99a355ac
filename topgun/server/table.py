"""LiveTable: the node's current partition table, its replication targets, and waiting for a newer one.

Every component that routes by partition reads ``tables.current`` (an immutable
:class:`~topgun.server.placement.PartitionTable`) and never keeps it across a wait. The node
switches to a newer table with :meth:`LiveTable.adopt`; a component that must wait for the
map to move on calls :meth:`LiveTable.wait_for_newer`, which returns at once if it already has.

``targets[pid]`` are the nodes (not us) that get copies of our writes to ``pid``: the other
holders under the current table, plus, while a migration is being prepared, the holders under
the prepared one (so every write is either in the snapshot or sent to the new holder).

Not here: placing partitions (``placement.py``), agreeing on a table (``rebalance.py``), and
telling clients (the node does that when ``adopt`` returns True).
"""
from __future__ import annotations

from typing import Optional, Tuple

from gevent.event import Event

from topgun.protocol.hashing import PARTITION_COUNT

from .placement import PartitionTable

__all__ = ["LiveTable"]


class LiveTable:
    """The current table of one node (``node_id``) and the targets derived from it."""

    def __init__(self, node_id: str) -> None:
        self.node_id = node_id
        # Version 0 owns nothing: writes wait (and retry) until a real map arrives.
        self.current = PartitionTable(0, 0, {}, ("",) * PARTITION_COUNT, ((),) * PARTITION_COUNT)
        self.prepared: Optional[PartitionTable] = None
        self.targets: Tuple[Tuple[str, ...], ...] = ((),) * PARTITION_COUNT
        self._event = Event()

    @property
    def version(self) -> int:
        return self.current.version

    def adopt(self, table: PartitionTable) -> bool:
        """Switch to ``table`` if it is newer (True); wakes every :meth:`wait_for_newer`."""
        if table.version <= self.current.version:
            return False
        self.current = table
        self._recompute()
        event, self._event = self._event, Event()
        event.set()
        return True

    def prepare(self, table: Optional[PartitionTable]) -> None:
        """Replicate to the holders of ``table`` too (None: only the current table's)."""
        self.prepared = table
        self._recompute()

    def wait_for_newer(self, version: int, timeout: float) -> bool:
        """Block until the table is newer than ``version`` (True) or ``timeout`` passes."""
        if self.current.version > version:
            return True
        return self._event.wait(timeout)

    def _recompute(self) -> None:
        me, table, prepared = self.node_id, self.current, self.prepared
        targets = []
        for pid in range(PARTITION_COUNT):
            holders = set(table.holders(pid))
            if prepared is not None:
                holders.update(prepared.holders(pid))
            holders.discard(me)
            targets.append(tuple(sorted(holders)))
        self.targets = tuple(targets)

    def __repr__(self) -> str:
        prepared = f" preparing v{self.prepared.version}" if self.prepared else ""
        return f"<LiveTable {self.node_id} v{self.current.version}{prepared}>"
