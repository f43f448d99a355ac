"""How the engine packs and resends frames: partition-dense frames, bad values isolated,
oversized frames split, and resends only on evidence that the server lost a frame.

Uses the fake server and rig of test_engine.py.
"""
from __future__ import annotations

from typing import List

import gevent.queue
import pytest
from test_engine import ATTEMPT, WAIT, Rig, sync

from topgun.errors import ConfigurationError, OperationTimeout
from topgun.protocol import codec
from topgun.protocol.hashing import partition_id

pytestmark = pytest.mark.timeout(10)


@pytest.fixture
def rig():
    r = Rig()
    yield r
    r.close()


def _pids(batch) -> List[int]:
    return [partition_id(op.key) for op in batch.ops]


def test_frames_take_whole_partitions_in_turn():
    rig = Rig(batch_size=50, max_in_flight=50)
    try:
        keys = [f"k{i}" for i in range(2000)]        # spread over all 271 partitions
        writes = [rig.write(k) for k in keys]
        server = rig.connect()
        first = server.next_batch()
        pids = _pids(first)
        # Taken partition by partition: consecutive, never revisited within the frame.
        runs = [p for i, p in enumerate(pids) if i == 0 or p != pids[i - 1]]
        assert len(runs) == len(set(runs))
        assert len(set(pids)) <= 12                  # ~7 keys per partition: a handful, not 50
        for w in writes:
            w.result.get(timeout=WAIT)
    finally:
        rig.close()


def test_a_value_msgpack_cannot_encode_fails_only_its_own_write(rig):
    server = rig.connect()
    good = rig.write("good")
    bad = rig.write("bad", {"nested": object()})
    also_good = rig.write("also-good")
    with pytest.raises(ConfigurationError, match="cannot be stored"):
        bad.result.get(timeout=WAIT)
    assert good.result.get(timeout=WAIT) == "APPLIED"
    assert also_good.result.get(timeout=WAIT) == "APPLIED"
    assert "bad" not in [op.key for b in server.batches for op in b.ops]


def test_a_frame_over_the_server_limit_is_split_not_dropped(rig):
    server = rig.connect()
    big = "x" * (codec.MAX_FRAME_BYTES // 3)         # three of them do not fit one frame
    writes = [rig.write(f"big{i}", big) for i in range(3)]
    for w in writes:
        assert w.result.get(timeout=WAIT) == "APPLIED"
    assert len(server.batches) >= 2
    assert all(len(codec.encode(b)) <= codec.MAX_FRAME_BYTES for b in server.batches)


def test_one_value_over_the_limit_is_rejected_clearly(rig):
    rig.connect()
    w = rig.write("huge", [b"y" * (codec.MAX_FRAME_BYTES // 2), b"y" * (codec.MAX_FRAME_BYTES // 2)])
    with pytest.raises(ConfigurationError, match="at most"):
        w.result.get(timeout=WAIT)


def test_a_slow_server_is_not_sent_the_same_frame_again(rig):
    server = rig.connect(lambda b, n: "hold")
    w = rig.write("slow")
    batch = server.next_batch()
    # Three attempt timeouts pass without an ack and without any sign of loss: no resend.
    with pytest.raises(gevent.queue.Empty):
        server.next_batch(timeout=3 * ATTEMPT)
    server.ack(batch)
    assert w.result.get(timeout=WAIT) == "APPLIED"
    assert len(server.batches) == 1


def test_a_frame_overtaken_by_a_later_ack_is_resent(rig):
    decisions = iter(["drop", "ack", "ack"])
    server = rig.connect(lambda b, n: next(decisions, "ack"))
    lost = rig.write("a")
    server.next_batch()
    later = rig.write("b")
    assert later.result.get(timeout=WAIT) == "APPLIED"
    # "a" went out first and was never acknowledged although "b" was: resent on the next check.
    assert lost.result.get(timeout=2 * ATTEMPT + 0.5) == "APPLIED"
    assert [op.key for b in server.batches for op in b.ops].count("a") == 2
    sync(rig)


def test_a_blocking_wait_returns_by_the_deadline_without_an_ack(rig):
    rig.connect(lambda b, n: "drop")
    w = rig.write("never", timeout=0.3)
    start = rig.clock.monotonic()
    with pytest.raises(OperationTimeout):
        rig.engine.wait([w])
    assert 0.25 <= rig.clock.monotonic() - start < 0.3 + 0.3


def test_a_failing_reaper_pass_does_not_stop_deadlines(rig, monkeypatch):
    rig.connect(lambda b, n: "drop")
    real = rig.engine._reap
    calls = []

    def flaky(now):
        calls.append(now)
        if len(calls) == 1:
            raise RuntimeError("bug in one pass")
        real(now)

    monkeypatch.setattr(rig.engine, "_reap", flaky)
    w = rig.write("never", timeout=0.3)
    with pytest.raises(OperationTimeout):
        rig.engine.wait([w])


def test_the_queue_visits_partitions_from_its_cursor_upwards_then_wraps():
    from topgun.engine.writes import PendingWrite, WriteQueue
    queue = WriteQueue()
    by_pid = {}
    for i in range(400):
        key = f"q{i}"
        by_pid.setdefault(partition_id(key), key)
    chosen = sorted(by_pid)[::7]
    for pid in chosen:
        queue.append(PendingWrite("m", by_pid[pid], 1e9))
    for cursor in (0, chosen[3], chosen[3] + 1, chosen[-1], 270):
        queue._cursor = cursor
        order = [pid for pid, _ in queue.partitions()]
        assert order == [p for p in chosen if p >= cursor] + [p for p in chosen if p < cursor]
