"""The in-memory storage adapter: the default, and today's behaviour.

With :class:`MemoryStorage` (what ``storage=None`` means) the client keeps its offline queue in
the write engine only, as it always did: nothing survives the process, and no outbox runs
(``durable`` is False, so the write path pays nothing for storage). The adapter still implements
the whole :class:`~topgun.storage.base.StorageAdapter` contract, in a list, so the outbox rules
can be tested without a file.

Not in here: anything durable (``sqlite.py``), the outbox rules (``outbox.py``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Iterable, Iterator, List, Optional, Sequence

from .base import OutboxRow

__all__ = ["MemoryStorage", "MemoryAdapter"]


@dataclass(frozen=True)
class MemoryStorage:
    """Keep nothing beyond the process (the default).

    Args:
        max_age: only used with ``outbox=True``: see :class:`~topgun.storage.sqlite.SQLiteStorage`.
        outbox: run the outbox rules over memory (for tests; nothing survives the process).
    """

    max_age: Optional[float] = None
    outbox: bool = False

    def open(self) -> "MemoryAdapter":
        return MemoryAdapter(durable=self.outbox)


class MemoryAdapter:
    """Rows in a dict, in ``seq`` order."""

    description = "memory"

    def __init__(self, durable: bool = False) -> None:
        self.durable = durable
        self._rows: Dict[int, OutboxRow] = {}
        self._next = 1
        self.closed = False

    def append(self, rows: Sequence[OutboxRow]) -> None:
        for row in rows:
            self._rows[row.seq] = row
            self._next = max(self._next, row.seq + 1)

    def remove(self, seqs: Iterable[int]) -> None:
        for seq in seqs:
            self._rows.pop(seq, None)

    def rows(self, chunk: int = 2000) -> Iterator[List[OutboxRow]]:
        ordered = [self._rows[s] for s in sorted(self._rows)]
        for i in range(0, len(ordered), chunk):
            yield ordered[i:i + chunk]

    def next_seq(self) -> int:
        return self._next

    def count(self) -> int:
        return len(self._rows)

    def close(self) -> None:
        self.closed = True

    def __repr__(self) -> str:
        return f"<MemoryAdapter rows={len(self._rows)}{' durable' if self.durable else ''}>"
