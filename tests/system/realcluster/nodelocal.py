"""Judge a chaos history on a real 2.2.0 cluster, where every node keeps its own data.

TopGun 2.2.0 neither replicates, forwards nor migrates data (WIRE.md 10.6), and a restarted
node comes back empty (its redb file is not read back; checked by these tests). So a key is
not one register over a chaos run: it is one register per *node incarnation that owned it*.
When a node dies, the survivor takes its partitions with no data for them; when it comes back
(a new process), it takes them back, empty again.

A :class:`Timeline` records *stable periods*: spans in which every client routes by the one
table the servers agree on, each with that table's owners and the pid of every node. Between
two periods lies a *transition* (a kill, a pause, a rejoin, until every client follows the new
table). :func:`split` renames every op's key to its register, ``"<key>@<node>:<pid>"``:

* an op that falls (with its whole span, transitions it overlaps counting as both neighbours)
  into periods that all give the key the same register keeps its status in that register. A
  key whose owner never changed (the survivor's keys) is therefore one register for the whole
  run, faults included, and is checked with all of :func:`topgun.testing.history.check`;
* a write that may have reached two registers is put into each as ``unknown`` (it may have
  taken effect there, or never): sound, and it weakens only the writes in flight across a
  transition;
* a read that may have been served by either of two registers is left out of the register
  checks (which of them answered is not known); :func:`never_written` still checks it.

So "lost" is checked for every register that is alive at the end (the final reads), and only
for those: a register that ended with its node (a killed node's data) has no final read, and
losing it is what 2.2.0 does. Stale, backwards, reordered and linearizability are checked
within every register.

Not here: the load, the faults, or anything that needs replication to hold.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from typing import Any, Dict, Iterable, List, Optional, Set, Tuple

from topgun.protocol.hashing import partition_id
from topgun.testing.history import FAIL, OK, READ, UNKNOWN, WRITE, History, Op


@dataclass
class Period:
    start: float
    owners: Tuple[str, ...]
    pids: Dict[str, int]
    end: float = math.inf

    def register(self, key: str) -> str:
        owner = self.owners[partition_id(key)]
        return f"{key}@{owner}:{self.pids.get(owner)}"


@dataclass
class Timeline:
    periods: List[Period] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)

    def stable(self, owners: Iterable[str], pids: Dict[str, Optional[int]], note: str = "") -> None:
        """A stable period starts now (the previous one must have been ended)."""
        if self.periods and math.isinf(self.periods[-1].end):
            raise AssertionError("a stable period is still open: call transition() first")
        self.periods.append(Period(time.monotonic(), tuple(owners), {k: v for k, v in pids.items() if v}))
        self.notes.append(f"stable: {note}")

    def transition(self, note: str = "") -> float:
        """The open period ends now; returns the time."""
        now = time.monotonic()
        self.periods[-1].end = now
        self.notes.append(f"transition: {note}")
        return now

    def touched(self, start: float, end: Optional[float]) -> List[Period]:
        """Periods an op spanning ``[start, end]`` may have met (a transition counts as both its neighbours)."""
        end = math.inf if end is None else end
        out: List[Period] = []
        for i, p in enumerate(self.periods):
            if start <= p.end and end >= p.start:
                out.append(p)
            if i + 1 < len(self.periods) and start <= self.periods[i + 1].start and end >= p.end:
                out += [p, self.periods[i + 1]]                  # it overlaps the transition after p
        return list({id(p): p for p in out}.values())


@dataclass
class Split:
    ops: List[Op]
    whole_run: Set[str]          # keys that are one register from the first period to the last
    unknown_copies: int          # writes put into two registers as unknown
    dropped_reads: int           # reads left out of the register checks


def split(history: History, timeline: Timeline) -> Split:
    """Rename each op's key to its register (see the module docstring)."""
    out: List[Op] = []
    copies = dropped = 0
    keys: Set[str] = set()
    for op in history.ops:
        keys.add(op.key)
        end = op.end if op.status in (OK, FAIL) else None
        registers = sorted({p.register(op.key) for p in timeline.touched(op.start, end)})
        if not registers:
            raise AssertionError(f"op before the first stable period: {op.describe()}")
        if len(registers) == 1:
            out.append(replace(op, key=registers[0]))
        elif op.kind == WRITE:
            copies += 1
            out += [replace(op, key=r, status=UNKNOWN, end=None) for r in registers]
        else:
            dropped += 1
    first, last = timeline.periods[0], timeline.periods[-1]
    whole = {k for k in keys if first.register(k) == last.register(k)
             and all(p.register(k) == first.register(k) for p in timeline.periods)}
    return Split(out, whole, copies, dropped)


def never_written(history: History) -> List[str]:
    """Reads (any, transitions included) that returned a value no write of that key could have put there."""
    writes: Dict[Tuple[str, Any], Op] = {}
    for op in history.ops:
        if op.kind == WRITE:
            writes[(op.key, op.value)] = op
    bad = []
    for op in history.ops:
        if op.kind != READ or op.status != OK or op.value is None:
            continue
        w = writes.get((op.key, op.value))
        if w is None or w.status == FAIL or (op.end is not None and w.start > op.end):
            bad.append(f"{op.key!r}: {op.describe()}")
    return bad
