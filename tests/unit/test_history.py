"""The history checker (topgun.testing.history) on recorded histories with known anomalies and clean ones."""
from __future__ import annotations

import random
import threading
from typing import List, Tuple

import gevent
import pytest
from gevent.event import AsyncResult

from topgun.clock import FakeClock
from topgun.errors import ConfigurationError, OperationTimeout
from topgun.testing.history import FAIL, OK, UNKNOWN, History, check


def kinds(history: History, **kw: object) -> List[str]:
    return sorted(a.kind for a in check(history, **kw).anomalies)  # type: ignore[arg-type]


# -- clean histories --------------------------------------------------------------------------------

def test_sequential_writes_and_reads_are_valid_and_searched() -> None:
    h = History()
    h.add("w", "write", "k", "k#1", 0, 1)
    h.add("r", "read", "k", "k#1", 2, 3)
    h.add("w", "write", "k", "k#2", 4, 5)
    h.add("r", "read", "k", "k#2", 6, 7)
    summary = check(h)
    assert summary.valid, str(summary)
    assert (summary.ops, summary.ok, summary.lost, summary.stale) == (4, 4, 0, 0)
    assert summary.checkers == {"k": "wgl"}


def test_a_read_before_any_write_may_see_no_value() -> None:
    h = History()
    h.add("r", "read", "k", None, 0, 1)
    h.add("w", "write", "k", "k#1", 2, 3)
    h.add("r", "read", "k", "k#1", 4, 5)
    assert check(h).valid


@pytest.mark.parametrize("first", ["k#1", "k#2"])
def test_concurrent_writes_may_land_in_either_order(first: str) -> None:
    h = History()
    h.add("w1", "write", "k", "k#1", 0, 4)
    h.add("w2", "write", "k", "k#2", 1, 3)
    h.add("r", "read", "k", first, 2, 5)                 # overlaps both: either value is allowed
    second = "k#2" if first == "k#1" else "k#1"
    h.add("r", "read", "k", second, 6, 7)                # and the other can win in the end
    summary = check(h)
    assert summary.valid, str(summary)


def test_a_concurrent_later_write_supersedes_an_acknowledged_one() -> None:
    h = History()
    h.add("w1", "write", "k", "k#1", 0, 2)
    h.add("w2", "write", "k", "k#2", 1, 10)              # still running when w1 was acked
    h.add("r", "read", "k", "k#2", 11, 12)
    assert check(h).valid


@pytest.mark.parametrize("last", ["k#1", "k#2"])
def test_an_unknown_write_may_or_may_not_have_happened(last: str) -> None:
    h = History()
    h.add("w", "write", "k", "k#1", 0, 1)
    h.add("w", "write", "k", "k#2", 2, None, status=UNKNOWN)   # timed out: it may still land
    h.add("r", "read", "k", last, 5, 6)
    summary = check(h)
    assert summary.valid, str(summary)
    assert (summary.ok, summary.unknown) == (2, 1)


def test_a_failed_write_is_not_visible_and_that_is_fine() -> None:
    h = History()
    h.add("w", "write", "k", "k#1", 0, 1)
    h.add("w", "write", "k", "k#2", 2, 3, status=FAIL)
    h.add("r", "read", "k", "k#1", 4, 5)
    summary = check(h)
    assert summary.valid and summary.fail == 1, str(summary)


def test_pipelined_writes_of_one_process_acked_in_order_are_valid() -> None:
    h = History()
    a = h.add("p", "write", "k", "k#1", 0, 3)
    b = h.add("p", "write", "k", "k#2", 1, 4)
    a.done_seq, b.done_seq = 0, 1
    h.add("r", "read", "k", "k#2", 5, 6)
    assert check(h).valid


def test_a_random_linearizable_history_passes_the_search() -> None:
    h, _ = simulated_history(seed=7, ops=400)
    summary = check(h)
    assert summary.valid, str(summary)
    assert set(summary.checkers.values()) == {"wgl"}


# -- known anomalies ----------------------------------------------------------------------------------

def test_a_lost_acknowledged_write_is_found() -> None:
    h = History()
    h.add("w", "write", "k", "k#1", 0, 1)
    h.add("w", "write", "k", "k#2", 2, 3)                # acknowledged ...
    h.add("r", "read", "k", "k#1", 10, 11)               # ... and gone from the final read
    summary = check(h)
    assert kinds(h) == ["lost"]
    assert (summary.lost, summary.stale) == (1, 0)
    assert "k#2" in str(summary) and "lost 1" in str(summary)


def test_a_lost_write_cannot_hide_behind_an_empty_key() -> None:
    h = History()
    h.add("w", "write", "k", "k#1", 0, 1)
    h.add("r", "read", "k", None, 2, 3)
    assert kinds(h) == ["lost"]


def test_a_stale_read_is_found() -> None:
    h = History()
    h.add("w", "write", "k", "k#1", 0, 1)
    h.add("w", "write", "k", "k#2", 2, 3)
    h.add("r", "read", "k", "k#1", 4, 5)                 # begins after k#2 was acknowledged
    h.add("r", "read", "k", "k#2", 6, 7)
    summary = check(h)
    assert kinds(h) == ["stale"]
    assert (summary.stale, summary.lost) == (1, 0)


def test_a_value_going_backwards_is_found() -> None:
    h = History()
    h.add("w", "write", "k", "k#1", 0, 1)
    h.add("w", "write", "k", "k#2", 2, None, status=UNKNOWN)   # never acknowledged ...
    h.add("r1", "read", "k", "k#2", 3, 4)                # ... but seen
    h.add("r2", "read", "k", "k#1", 5, 6)                # and then the older value again
    assert kinds(h) == ["backwards"]


def test_a_read_of_a_value_never_written_is_found() -> None:
    h = History()
    h.add("w", "write", "k", "k#1", 0, 1)
    h.add("r", "read", "k", "k#9", 2, 3)
    h.add("r", "read", "k", "k#1", 4, 5)
    assert kinds(h) == ["never-written"]


def test_a_read_of_a_failed_write_is_found() -> None:
    h = History()
    h.add("w", "write", "k", "k#1", 0, 1, status=FAIL)
    h.add("r", "read", "k", "k#1", 2, 3)
    assert kinds(h) == ["never-written"]


def test_a_read_from_the_future_is_found() -> None:
    h = History()
    h.add("r", "read", "k", "k#1", 0, 1)
    h.add("w", "write", "k", "k#1", 2, 3)
    assert kinds(h) == ["never-written"]


def test_acks_out_of_invocation_order_within_one_process_are_reordered() -> None:
    h = History()
    a = h.add("p", "write", "k", "k#1", 0, 3)
    b = h.add("p", "write", "k", "k#2", 1, 2)            # invoked second, acknowledged first
    a.done_seq, b.done_seq = 1, 0
    h.add("r", "read", "k", "k#2", 5, 6)
    assert kinds(h) == ["reordered"]
    assert kinds(h, fifo=False) == []                    # a client without the promise


def test_an_earlier_write_of_the_same_process_winning_is_lost_under_fifo() -> None:
    h = History()
    h.add("p", "write", "k", "k#1", 0, 3)
    h.add("p", "write", "k", "k#2", 1, 4)                # overlaps k#1 in time, but was sent after it
    h.add("r", "read", "k", "k#1", 5, 6)
    assert kinds(h) == ["lost"]
    assert kinds(h, fifo=False) == []


def test_a_flip_back_only_the_linearizability_search_can_see() -> None:
    h = History()
    h.add("a", "write", "k", "k#1", 0, 10)               # two concurrent writes ...
    h.add("b", "write", "k", "k#2", 0, 10)
    h.add("r", "read", "k", "k#1", 1, 2)                 # ... seen as 1, 2, 1: each write happens once
    h.add("r", "read", "k", "k#2", 3, 4)
    h.add("r", "read", "k", "k#1", 5, 6)
    summary = check(h)
    assert kinds(h) == ["not-linearizable"], str(summary)
    assert check(h, max_ops=2).valid                     # the simple checks alone cannot see it
    assert "simple: 5 ops > max_ops 2" in str(check(h, max_ops=2))


def test_a_corrupted_random_history_fails() -> None:
    h, reads = simulated_history(seed=11, ops=300)
    victim = reads[len(reads) // 2]
    victim.value = None                                   # one read in the middle sees an empty key
    assert not check(h).valid


def test_a_search_past_its_step_budget_falls_back_to_the_simple_checks() -> None:
    h, _ = simulated_history(seed=3, ops=200)
    summary = check(h, max_steps=5)
    assert summary.valid
    assert all(c.startswith("simple: search passed max_steps") for c in summary.checkers.values())


def test_duplicate_values_are_refused() -> None:
    h = History()
    h.add("w", "write", "k", "same", 0, 1)
    h.add("w", "write", "k", "same", 2, 3)
    with pytest.raises(ValueError, match="unique"):
        check(h)


def test_the_summary_shows_counts_and_the_first_examples() -> None:
    h = History()
    for i in range(8):                                    # 8 keys, each with a lost write
        key = f"k{i}"
        h.add("w", "write", key, f"{key}#1", 0, 1)
        h.add("w", "write", key, f"{key}#2", 2, 3)
        h.add("r", "read", key, f"{key}#1", 4, 5)
    h.add("w", "write", "x", "x#1", 0, None, status=UNKNOWN)
    text = str(check(h))
    assert "25 ops (24 ok, 0 fail, 1 unknown) on 9 keys" in text
    assert "lost 8" in text and "  lost: 8" in text
    assert text.count("acknowledged write") + text.count("acknowledged ") >= 5
    assert "'k0#2'" in text and "'k7#2'" not in text     # the first five examples only


# -- recording live -------------------------------------------------------------------------------

def test_invoke_and_complete_use_the_clock_and_complete_once() -> None:
    clock = FakeClock()
    h = History(clock)
    op = h.invoke("p", "write", "k", h.next_value("k"))
    clock.advance(0.5)
    h.ok(op)
    assert (op.value, op.start, op.end, op.status) == ("k#1", 0.0, 0.5, OK)
    assert h.next_value("k") == "k#2" and h.next_value("j") == "j#1"
    with pytest.raises(ValueError, match="already completed"):
        h.unknown(op)
    with pytest.raises(ValueError, match="kind"):
        h.invoke("p", "delete", "k")


def test_an_op_still_in_flight_counts_as_unknown() -> None:
    h = History(FakeClock())
    h.add("w", "write", "k", "k#1", 0, 1)
    h.invoke("w", "write", "k", "k#2")                    # never completed
    h.add("r", "read", "k", "k#2", 5, 6)
    summary = check(h)
    assert summary.valid and summary.unknown == 1, str(summary)


def test_track_completes_in_the_order_results_are_set_not_waited_for() -> None:
    h = History()
    first, second, failed, rejected = AsyncResult(), AsyncResult(), AsyncResult(), AsyncResult()
    a = h.invoke("p", "write", "k", "k#1")
    b = h.invoke("p", "write", "k", "k#2")
    c = h.invoke("p", "write", "k", "k#3")
    d = h.invoke("p", "write", "k", "k#4")
    for op, res in ((a, first), (b, second), (c, failed), (d, rejected)):
        h.track(op, res, fail_on=(ConfigurationError,))
    second.set("REPLICATED")
    first.set("REPLICATED")
    failed.set_exception(OperationTimeout("late"))
    rejected.set_exception(ConfigurationError("bad value"))
    gevent.sleep(0)                                       # rawlink callbacks run in the hub
    assert (a.status, b.status, c.status, d.status) == (OK, OK, UNKNOWN, FAIL)
    assert b.done_seq is not None and a.done_seq is not None and b.done_seq < a.done_seq
    assert "OperationTimeout" in (c.error or "")
    assert [x.kind for x in check(h).anomalies] == ["reordered"]


def test_call_records_reads_and_exceptions() -> None:
    h = History()
    boom = h.call("w", "write", "k", lambda: (_ for _ in ()).throw(OperationTimeout("x")), value="k#1")
    bad = h.call("w", "write", "k", lambda: (_ for _ in ()).throw(ConfigurationError("y")), value="k#2",
                 fail_on=(ConfigurationError,))
    read = h.call("r", "read", "k", lambda: "k#1")
    assert (read.status, read.value) == (OK, "k#1")
    assert (boom.status, bad.status) == (UNKNOWN, FAIL)
    assert check(h).valid                                 # the read can follow the unknown write


def test_recording_from_many_threads_keeps_every_op() -> None:
    h = History()

    def work(t: int) -> None:
        for i in range(200):
            h.ok(h.invoke(f"t{t}", "write", f"k{t}", h.next_value(f"k{t}")))

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    ops = h.ops
    assert len(ops) == 800 and sorted(o.index for o in ops) == list(range(800))
    assert sorted(o.done_seq for o in ops) == list(range(800))   # type: ignore[type-var]
    assert len({o.value for o in ops}) == 800


# -- helpers ----------------------------------------------------------------------------------------

def simulated_history(seed: int, ops: int) -> Tuple[History, list]:
    """A linearizable history: 3 writers and 2 readers on one key, overlapping, with random delays."""
    rng = random.Random(seed)
    h = History()
    state = [None]
    events: List[Tuple[float, int, str, object]] = []   # (time, order, what, op)
    procs = {p: 0.0 for p in ("w1", "w2", "w3", "r1", "r2")}
    counter = [0]
    pending = []
    for _ in range(ops):
        p = rng.choice(sorted(procs))
        start = procs[p] + rng.random()
        point = start + rng.random()
        end = point + rng.random()
        procs[p] = end
        pending.append((point, p, start, end))
    reads = []
    for point, p, start, end in sorted(pending):          # apply in linearization-point order
        if p.startswith("w"):
            counter[0] += 1
            value = f"k#{counter[0]}"
            state[0] = value
            h.add(p, "write", "k", value, start, end)
        else:
            reads.append(h.add(p, "read", "k", state[0], start, end))
    del events
    return h, reads
