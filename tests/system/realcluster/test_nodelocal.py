"""nodelocal.split: recorded histories on a timeline of stable periods, judged per register (no servers)."""
from __future__ import annotations

from typing import Tuple

from nodelocal import Period, Timeline, never_written, split

from topgun.protocol.hashing import PARTITION_COUNT, partition_id
from topgun.testing.history import UNKNOWN, History, check

KEY = "acct:1"
PID = partition_id(KEY)


def owners(node: str) -> Tuple[str, ...]:
    return tuple(node if p == PID else "r1" for p in range(PARTITION_COUNT))


def timeline(*spans: Tuple[float, float, str, int]) -> Timeline:
    """Periods (start, end, owner of KEY, that owner's pid); other partitions stay on r1 (pid 1)."""
    t = Timeline()
    for start, end, node, pid in spans:
        t.periods.append(Period(start, owners(node), {"r1": 1, node: pid}, end))
    return t


KILL_R2 = timeline((0.0, 10.0, "r2", 2), (11.0, float("inf"), "r1", 1))   # r2 killed at 10, r1 owns all from 11


def test_a_moved_key_is_two_registers_and_the_dead_ones_writes_are_not_owed() -> None:
    h = History()
    h.add("w", "write", KEY, f"{KEY}#1", 1.0, 1.1)            # on r2, gone with it
    h.add("r", "read", KEY, None, 11.5, 11.6)                 # r1 has nothing for the key yet
    h.add("w", "write", KEY, f"{KEY}#2", 12.0, 12.1)          # on r1
    h.add("final", "read", KEY, f"{KEY}#2", 20.0, 20.1)
    parts = split(h, KILL_R2)
    assert sorted({op.key for op in parts.ops}) == [f"{KEY}@r1:1", f"{KEY}@r2:2"]
    assert check(parts.ops).valid
    assert [a.kind for a in check(h).anomalies] == ["stale"]  # as one register, the None read is stale
    assert KEY not in parts.whole_run


def test_a_write_across_the_transition_is_unknown_in_both_and_a_read_across_it_is_left_out() -> None:
    h = History()
    h.add("w", "write", KEY, f"{KEY}#1", 9.9, 10.5)           # in flight at the kill: acked by whom?
    h.add("r", "read", KEY, None, 9.95, 11.5)                 # served by either
    h.add("final", "read", KEY, f"{KEY}#1", 20.0, 20.1)       # r1 got the resend
    parts = split(h, KILL_R2)
    copies = [op for op in parts.ops if op.kind == "write"]
    assert {op.key for op in copies} == {f"{KEY}@r1:1", f"{KEY}@r2:2"}
    assert all(op.status == UNKNOWN and op.end is None for op in copies)
    assert parts.unknown_copies == 1 and parts.dropped_reads == 1
    assert check(parts.ops).valid


def test_a_lost_ack_on_the_survivor_is_still_caught() -> None:
    other = next(k for k in (f"k{i}" for i in range(1000)) if partition_id(k) != PID)   # on r1 throughout
    h = History()
    h.add("w", "write", other, f"{other}#1", 1.0, 1.1)
    h.add("w", "write", other, f"{other}#2", 10.2, 10.3)      # acked during the transition: same register
    h.add("final", "read", other, f"{other}#1", 20.0, 20.1)  # #2 lost
    parts = split(h, KILL_R2)
    assert parts.whole_run == {other}
    summary = check(parts.ops)
    assert summary.lost == 1 and not summary.valid


def test_an_old_value_coming_back_after_a_restart_is_never_written_in_the_new_register() -> None:
    restart = timeline((0.0, 10.0, "r2", 2), (11.0, float("inf"), "r2", 3))   # r2 restarted: a new process
    h = History()
    h.add("w", "write", KEY, f"{KEY}#1", 1.0, 1.1)
    h.add("final", "read", KEY, f"{KEY}#1", 20.0, 20.1)       # a server that kept data across restarts
    summary = check(split(h, restart).ops)
    assert [a.kind for a in summary.anomalies] == ["never-written"]


def test_never_written_looks_at_every_read() -> None:
    h = History()
    h.add("w", "write", KEY, f"{KEY}#1", 1.0, 1.1)
    h.add("r", "read", KEY, f"{KEY}#1", 10.2, 10.4)
    assert never_written(h) == []
    h.add("r", "read", KEY, f"{KEY}#9", 10.2, 10.4)
    bad = h.add("w", "write", KEY, f"{KEY}#2", 3.0, 3.1, status="fail")
    h.add("r", "read", KEY, bad.value, 5.0, 5.1)
    assert len(never_written(h)) == 2
