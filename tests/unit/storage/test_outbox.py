"""The outbox rules (topgun.storage.outbox) over the memory adapter, and the SQLite adapter itself.

No engine and no server: ``submit`` stands in for ``WriteEngine.submit_put`` (it builds the
PendingWrite and calls the ``added`` hook, as the engine does), and the test plays the acks.
"""
from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any, List, Tuple

import pytest

from topgun.clock import FakeClock
from topgun.engine.writes import PendingWrite
from topgun.errors import ClientClosed, ConfigurationError, OperationTimeout, StorageLocked
from topgun.storage import MemoryStorage, SQLiteStorage, parse_storage
from topgun.storage.memory import MemoryAdapter
from topgun.storage.outbox import Outbox, decode_value
from topgun.storage.sqlite import SQLiteAdapter


class Harness:
    def __init__(self, adapter: Any = None, max_age: Any = None) -> None:
        self.clock = FakeClock()
        self.adapter = adapter if adapter is not None else MemoryAdapter(durable=True)
        self.queued: List[PendingWrite] = []
        self.dropped: List[Any] = []
        self.outbox = Outbox(self.adapter, clock=self.clock, submit=self.submit, max_age=max_age,
                             resend_timeout=5.0, on_dropped=self.dropped.extend)
        self.counter = 0

    def submit(self, map_name: str, key: str, value: Any, ts: Tuple[int, int, str], op_type: str = "PUT",
               timeout: float = 5.0) -> PendingWrite:
        w = PendingWrite(map_name, key, 99.0, op_type=op_type, value=value, ts=ts)
        self.outbox.added(w)   # what WriteEngine._enqueue does first
        self.queued.append(w)
        return w

    def write(self, key: str, value: Any) -> PendingWrite:
        self.counter += 1
        return self.submit("m", key, value, (self.clock.now_ms(), self.counter, "client"))

    def rows(self) -> List[Tuple[str, Any]]:
        return [(r.key, decode_value(r)) for chunk in self.adapter.rows() for r in chunk]


def test_a_row_is_stored_before_added_returns_and_leaves_on_its_ack() -> None:
    h = Harness()
    a1, b1, a2 = h.write("a", 1), h.write("b", 1), h.write("a", 2)
    assert h.rows() == [("a", 1), ("b", 1), ("a", 2)]
    h.outbox.acked([b1])
    assert h.rows() == [("a", 1), ("a", 2)]
    h.outbox.acked([a2])                                  # a later write of a key supersedes the earlier one
    assert h.rows() == []
    assert (a1.done, a1.error, h.outbox.rows) == (True, None, 0)   # superseded: nothing left to send


def test_a_value_that_cannot_be_stored_is_refused_before_it_is_queued() -> None:
    h = Harness()
    with pytest.raises(ConfigurationError):
        h.write("a", {"x": object()})
    assert h.rows() == [] and h.outbox.rows == 0


def test_replay_queues_what_is_left_in_order_and_drops_what_is_too_old() -> None:
    first = Harness(max_age=60.0)
    first.write("old", "x")
    first.clock.sleep(120.0)
    first.write("a", 1)
    first.write("b", 1)
    first.write("a", 2)
    second = Harness(adapter=first.adapter, max_age=60.0)
    second.clock.t = first.clock.t                        # the same wall clock, a new process
    assert second.outbox.replay() == 3
    assert [(w.key, w.value) for w in second.queued] == [("a", 1), ("b", 1), ("a", 2)]
    assert [w.ts for w in second.queued] == [w.ts for w in first.queued[1:]]   # the original stamps
    assert [r.key for r in second.dropped] == ["old"] and second.outbox.stats["dropped"] == 1
    assert second.rows() == [("a", 1), ("b", 1), ("a", 2)]
    third = second.write("a", 3)                          # new writes come after, with new rows
    second.outbox.acked([third])
    assert second.rows() == [("b", 1)]


def test_the_sweeper_resends_the_newest_unacknowledged_write_of_a_key_only() -> None:
    h = Harness(max_age=60.0)
    a1, a2, b1, c1, d1 = h.write("a", 1), h.write("a", 2), h.write("b", 1), h.write("c", 1), h.write("d", 1)
    for w in (a1, a2, b1):
        w.finish(exc=OperationTimeout("deadline"))
    c1.finish(exc=ClientClosed("closed"))                 # kept for the next start, not resent
    h.outbox.sweep()
    again = h.queued[5:]
    assert [(w.key, w.value, w.ts) for w in again] == [("a", 2, a2.ts), ("b", 1, b1.ts)]
    assert h.outbox.stats["resent"] == 2
    h.outbox.acked([again[0]])
    assert h.rows() == [("b", 1), ("c", 1), ("d", 1)]
    assert not d1.done


def test_a_late_ack_of_the_first_copy_ends_the_queued_copy() -> None:
    h = Harness()
    a1 = h.write("a", 1)
    a1.finish(exc=OperationTimeout("deadline"))          # the caller gave up; the frame was still on its way
    h.outbox.sweep()
    copy = h.queued[-1]
    h.outbox.acked([a1])
    assert copy.done and h.rows() == []                   # the engine skips done writes: not sent twice


def test_rows_past_max_age_and_refused_values_are_dropped_and_reported() -> None:
    h = Harness(max_age=10.0)
    a1, b1 = h.write("a", 1), h.write("b", 1)
    a1.finish(exc=ConfigurationError("too big for a frame"))
    h.outbox.sweep()
    assert [r.key for r in h.dropped] == ["a"]
    b1.finish(exc=OperationTimeout("deadline"))
    h.clock.sleep(11.0)
    h.outbox.sweep()
    assert [r.key for r in h.dropped] == ["a", "b"] and h.rows() == []


def test_deferred_writes_a_window_in_one_transaction() -> None:
    h = Harness()
    appends: List[int] = []
    inner = h.adapter.append
    h.adapter.append = lambda rows: (appends.append(len(rows)), inner(rows))  # type: ignore[method-assign]
    with h.outbox.deferred():
        for i in range(50):
            h.write(f"k{i}", i)
        assert h.rows() == []                             # nothing can be sent inside the block
    assert appends == [50] and len(h.rows()) == 50


# -- the SQLite adapter

def test_sqlite_rows_survive_a_reopen_in_wal_mode(tmp_path: Path) -> None:
    path = str(tmp_path / "o.db")
    h = Harness(adapter=SQLiteAdapter(path))
    h.write("a", {"n": [1, 2]})
    h.submit("m", "b", None, (1, 0, "c"), "REMOVE")
    h.adapter.close()
    again = SQLiteAdapter(path)
    rows = [r for chunk in again.rows() for r in chunk]
    assert [(r.key, r.op_type, decode_value(r)) for r in rows] == [("a", "PUT", {"n": [1, 2]}), ("b", "REMOVE", None)]
    assert again.next_seq() == 3
    again.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_one_owner_at_a_time(tmp_path: Path) -> None:
    path = str(tmp_path / "o.db")
    first = SQLiteAdapter(path)
    with pytest.raises(StorageLocked, match="this process"):
        SQLiteAdapter(path)
    probe = ("import sys\nfrom topgun.storage.sqlite import SQLiteAdapter\nfrom topgun.errors import StorageLocked\n"
             "try:\n    SQLiteAdapter(sys.argv[1])\nexcept StorageLocked as e:\n    print('LOCKED', e)\n")
    out = subprocess.run([sys.executable, "-c", probe, path], capture_output=True, text=True, timeout=30)
    assert out.stdout.startswith("LOCKED") and "another process" in out.stdout, out.stderr
    first.close()
    SQLiteAdapter(path).close()                           # free again once closed


@pytest.mark.parametrize("spec, expected", [
    (None, MemoryStorage()), ("memory", MemoryStorage()),
    ("out.db", SQLiteStorage("out.db")), ("sqlite:///rel/out.db", SQLiteStorage("rel/out.db")),
    ("sqlite:////abs/out.db", SQLiteStorage("/abs/out.db")),
])
def test_storage_strings(spec: Any, expected: Any) -> None:
    assert parse_storage(spec) == expected


@pytest.mark.parametrize("spec", ["sqlite://x.db", "sqlite:///", ":memory:", 42])
def test_bad_storage_is_refused(spec: Any) -> None:
    with pytest.raises(ConfigurationError):
        parse_storage(spec)


@pytest.mark.parametrize("kw", [{"max_age": 0}, {"max_age": -1.0}, {"synchronous": "OFF"}, {"on_dropped": 3}])
def test_bad_sqlite_options_are_refused(kw: Any) -> None:
    with pytest.raises(ConfigurationError):
        SQLiteStorage("x.db", **kw)
