"""The storage adapter contract: what the client keeps locally, and where.

``TopGunClient(storage=...)`` takes a *storage spec*: a frozen, picklable description
(:class:`~topgun.storage.memory.MemoryStorage`, the default, or
:class:`~topgun.storage.sqlite.SQLiteStorage`). Each client runtime calls ``spec.open()`` once and
gets a :class:`StorageAdapter`: the live object (a file handle, a lock) that belongs to that
runtime only, so a forked child opens its own instead of sharing its parent's.

An adapter holds the *outbox*: one :class:`OutboxRow` per write that was queued and not yet
acknowledged, numbered by ``seq`` in the order the writes were made. The outbox logic itself
(when rows are added, removed, replayed) is :mod:`topgun.storage.outbox`; an adapter only stores
rows durably (or not: ``durable`` says which) and gives them back in ``seq`` order.

Not in here: the outbox rules (``outbox.py``), the near cache (``nearcache.py``: it lives in
memory whatever the storage), parsing ``storage=`` strings (``parse_storage`` in ``__init__``).
"""
from __future__ import annotations

from typing import Iterable, Iterator, List, NamedTuple, Optional, Protocol, Sequence, Tuple

__all__ = ["OutboxRow", "StorageAdapter", "StorageSpec"]


class OutboxRow(NamedTuple):
    """One queued write as the outbox keeps it."""

    seq: int            # order of the writes on this storage, across restarts
    map_name: str
    key: str
    op_type: str        # "PUT" or "REMOVE"
    value: bytes        # the value, msgpack-encoded (b"" for a REMOVE)
    millis: int         # the write's HLC timestamp, kept so a replay merges as the original write
    counter: int
    node_id: str
    created_ms: int     # wall clock when it was queued; the replay bound (``max_age``) looks at it

    @property
    def ts(self) -> Tuple[int, int, str]:
        return (self.millis, self.counter, self.node_id)


class StorageAdapter(Protocol):
    """One runtime's handle on its storage (see the module docstring)."""

    durable: bool    # True: rows survive the process (the client then runs an outbox)
    description: str  # for logs and reprs: "memory", "sqlite:///var/lib/app/outbox.db"

    def append(self, rows: Sequence[OutboxRow]) -> None:
        """Store ``rows``; once this returns they survive a crash of the process (if durable)."""

    def remove(self, seqs: Iterable[int]) -> None:
        """Forget the rows with these ``seq`` numbers (unknown ones are ignored)."""

    def rows(self, chunk: int = 2000) -> Iterator[List[OutboxRow]]:
        """Every row, in ``seq`` order, in lists of at most ``chunk`` (so a caller can yield between)."""

    def next_seq(self) -> int:
        """One more than the highest ``seq`` ever stored (1 for an empty outbox)."""

    def count(self) -> int:
        """How many rows are held."""

    def close(self) -> None:
        """Release the storage (its lock, its file); idempotent."""


class StorageSpec(Protocol):
    """What ``storage=`` takes: opens one adapter per client runtime."""

    max_age: Optional[float]

    def open(self) -> StorageAdapter: ...
