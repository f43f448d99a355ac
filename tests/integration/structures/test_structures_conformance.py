"""Topics, locks and PN counters through the client, the same cases against the real 2.2.0
server and one embedded dev node (``server_url`` is parametrized over both).

Concurrency is greenlets on the test's hub (the clients run in direct mode there, and an embedded
server shares that hub), so nothing here blocks the hub with a thread join or ``time.sleep``.
"""
from __future__ import annotations

import threading
import time
import uuid
from typing import List

import gevent
import gevent.event
import pytest
from structures_helpers import drop_connections, wait_until

import topgun
from topgun.errors import LockLost, LockNotHeld

pytestmark = pytest.mark.integration


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


# -- topics ------------------------------------------------------------------------------------

def test_two_clients_exchange_topic_messages_and_the_publisher_is_excluded(connect):
    a, b = connect(), connect()
    name = _name("chat/room")
    with a.topic(name).subscribe() as at_a, b.topic(name).subscribe() as at_b:
        a.topic(name).publish({"text": "hi", "n": 1})
        got = at_b.get(timeout=5.0)
        assert (got.topic, got.data) == (name, {"text": "hi", "n": 1})
        assert isinstance(got.timestamp, int)
        b.topic(name).publish("second")
        # A's first message would be queued before B's (it was sent to B first): A never got its own.
        assert at_a.get(timeout=5.0).data == "second"
        assert at_a.received == 1


def test_a_closed_topic_subscription_receives_nothing_more(connect):
    a, b = connect(), connect()
    name = _name("news")
    got: List[object] = []
    sub = b.topic(name).subscribe(lambda msg: got.append(msg.data))
    keep = b.topic(name).subscribe()          # a second subscription of the same client
    a.topic(name).publish(1)
    assert keep.get(timeout=5.0).data == 1
    sub.close()
    a.topic(name).publish(2)
    assert keep.get(timeout=5.0).data == 2
    assert got == [1]
    keep.close()


def test_a_topic_subscription_comes_back_after_a_reconnect(connect, server_url):
    a, b = connect(), connect()
    name = _name("events")
    sub = b.topic(name).subscribe()
    drop_connections(b)                       # as if the network dropped it
    wait_until(lambda: b.runtime.topics.bindings.rebinds >= 1, 10.0, "topic re-subscribed")
    a.topic(name).publish("after")
    assert sub.get(timeout=5.0).data == "after"


# -- locks -------------------------------------------------------------------------------------

def test_two_clients_contend_for_a_lock_and_tokens_increase(connect):
    a, b = connect(), connect()
    name = _name("res")
    la, lb = a.lock(name, ttl=30.0), b.lock(name)
    assert la.acquire(timeout=5.0)
    first = la.fencing_token
    assert not lb.acquire(blocking=False)
    la.release()
    assert lb.acquire(timeout=5.0)
    assert lb.fencing_token > first
    second = lb.fencing_token
    assert not la.acquire(blocking=False)
    b.close()                                 # the holder disconnects: the server frees the lock
    assert la.acquire(timeout=10.0)
    assert la.fencing_token > second
    la.release()


def test_exactly_one_holder_at_a_time(connect):
    clients = [connect(), connect()]
    name = _name("job")
    inside, overlaps, done, tokens = [0], [0], [0], []

    def worker(client: topgun.TopGunClient) -> None:
        lock = client.lock(name, ttl=30.0)
        for _ in range(5):
            assert lock.acquire(timeout=20.0)
            tokens.append(lock.fencing_token)
            inside[0] += 1
            overlaps[0] += inside[0] > 1
            gevent.sleep(0.005)       # others run meanwhile, and find the lock busy
            inside[0] -= 1
            lock.release()
            done[0] += 1

    # two clients, two Lock objects in each: the server sees two holders, the client four
    workers = [gevent.spawn(worker, c) for c in clients for _ in range(2)]
    gevent.joinall(workers, timeout=60.0, raise_error=True)
    assert done[0] == 20 and overlaps[0] == 0
    assert tokens == sorted(set(tokens)), tokens   # every grant a new, larger fencing token


def test_acquire_of_a_lock_that_is_never_freed_returns_at_its_deadline(connect):
    a, b = connect(), connect(request_timeout=1.5)
    name = _name("stuck")
    holder = a.lock(name)
    assert holder.acquire()
    waiter = b.lock(name)
    start = time.monotonic()
    assert waiter.acquire(timeout=1.0) is False
    took = time.monotonic() - start
    assert 0.9 <= took < 2.0, took
    start = time.monotonic()
    with pytest.raises(topgun.OperationTimeout):
        with b.lock(name):
            pass                                # never entered
    # the context manager waits the client's request_timeout (1.5 s here), never longer
    assert 1.4 <= time.monotonic() - start < b.request_timeout + 1.0
    holder.release()


def test_release_reports_a_lost_lock_and_a_lock_not_held(connect):
    a = connect()
    lost: List[str] = []
    lock = a.lock(_name("guard"), on_lost=lambda lk: lost.append(lk.lost_reason or ""))
    with pytest.raises(LockNotHeld):
        lock.release()
    assert lock.acquire()
    drop_connections(a)                               # the holding connection drops
    wait_until(lambda: lost, 5.0, "on_lost called")
    assert lock.lost and not lock.locked()
    with pytest.raises(LockLost):
        lock.release()
    assert lock.acquire(timeout=10.0)                 # a lost lock can be taken again, explicitly
    lock.release()


def test_a_lock_with_a_ttl_is_reported_lost_when_it_runs_out(connect):
    a, b = connect(), connect()
    name = _name("lease")
    lost = gevent.event.Event()
    lease = a.lock(name, ttl=0.3, on_lost=lambda lk: lost.set())
    assert lease.acquire()
    assert lost.wait(5.0)
    assert b.lock(name).acquire(timeout=5.0)         # the server freed it too
    with pytest.raises(LockLost):
        lease.release()


def test_a_lock_name_the_server_would_ignore_is_refused_locally(connect):
    a = connect()
    with pytest.raises(topgun.ConfigurationError, match="bad lock name"):
        a.lock("bad name!")


# -- counters ----------------------------------------------------------------------------------

def test_three_clients_increment_one_counter_and_all_see_the_same_value(connect):
    clients = [connect(), connect(), connect()]
    name = _name("hits")
    per_client = 20

    def bump(client: topgun.TopGunClient) -> None:
        counter = client.counter(name)
        for i in range(per_client):
            counter.increment(2 if i % 2 else 1)
            if i % 5 == 0:
                counter.decrement()

    gevent.joinall([gevent.spawn(bump, c) for c in clients], timeout=60.0, raise_error=True)
    expected = 3 * (per_client // 2 * 3 - per_client // 5)
    assert [c.counter(name).value for c in clients] == [expected] * 3


def test_counter_updates_reach_subscribers_and_a_resend_never_counts_twice(connect):
    a, b = connect(), connect()
    name = _name("visits")
    seen: List[object] = []
    sub = b.counter(name).subscribe(seen.append)
    counter = a.counter(name)
    assert counter.increment(5) == 5
    wait_until(lambda: seen and seen[-1] == 5, 5.0, "subscriber saw 5")
    # Reconnect: the client sends its cumulative totals again; the server merges, not adds.
    drop_connections(a)
    wait_until(lambda: a.runtime.counters.bindings.rebinds >= 1, 10.0, "counter re-attached")
    assert counter.get() == 5
    assert counter.decrement(2) == 3
    wait_until(lambda: seen[-1] == 3, 5.0, "subscriber saw 3")
    assert b.counter(name).value == 3
    sub.close()


def test_fifty_greenlets_incrementing_one_counter_share_a_few_syncs_and_count_exactly(connect):
    a, reader = connect(), connect()
    name = _name("views")
    counter = a.counter(name)
    assert counter.get() == 0                    # connected and attached (COUNTER_REQUEST)
    syncs: List[object] = []
    for conn in a.runtime.provider.open_connections():  # a spy on what the client sends
        def spy(msg, _send=conn.send):
            if type(msg).__name__ == "CounterSync":
                syncs.append(msg)
            _send(msg)
        conn.send = spy
    bumps = [gevent.spawn(counter.increment) for _ in range(50)]
    gevent.joinall(bumps, timeout=30.0, raise_error=True)
    assert all(g.successful() for g in bumps)
    assert max(g.value for g in bumps) == 50
    assert reader.counter(name).value == 50      # every change counted once, on the node
    # One sync carried the first change, the next the 49 made while it was in flight.
    assert len(syncs) <= 5, len(syncs)


def test_changes_waiting_behind_a_sync_lost_with_its_connection_fail_over_and_count_once(connect):
    a, reader = connect(), connect()
    name = _name("views")
    counter = a.counter(name)
    assert counter.get() == 0
    lost: List[object] = []
    for conn in a.runtime.provider.open_connections():
        def cut(msg, _send=conn.send, _conn=conn):
            _send(msg)
            if type(msg).__name__ == "CounterSync" and not lost:
                lost.append(_conn)
                gevent.spawn(_conn.close)  # after the other greenlets made their changes, before the reply
        conn.send = cut
    bumps = [gevent.spawn(counter.increment) for _ in range(50)]
    gevent.joinall(bumps, timeout=30.0, raise_error=True)
    assert len(lost) == 1 and not lost[0].is_open and all(g.successful() for g in bumps)
    assert reader.counter(name).value == 50      # none lost, none counted twice
    assert counter.get() == 50


@pytest.mark.realserver
def test_fifty_threads_of_a_loop_mode_client_share_syncs_too(topgun_real_server_factory):
    # Threads, not greenlets: the client runs on its own loop thread, and the server is a process,
    # so joining the threads blocks nothing that has to run (no embedded server on this hub).
    url = topgun_real_server_factory().url
    a, reader = topgun.TopGunClient(url=url, thread_mode="loop"), topgun.TopGunClient(url=url, thread_mode="loop")
    try:
        name = _name("views")
        counter = a.counter(name)
        assert counter.get() == 0
        syncs: List[object] = []

        def install() -> None:
            for conn in a.runtime.provider.open_connections():
                def spy(msg, _send=conn.send):
                    if type(msg).__name__ == "CounterSync":
                        syncs.append(msg)
                    _send(msg)
                conn.send = spy
        a.runtime.home.run(install, timeout=5.0)
        start = threading.Barrier(50)
        results: List[object] = []

        def bump() -> None:
            start.wait(timeout=10.0)
            results.append(counter.increment())
        threads = [threading.Thread(target=bump) for _ in range(50)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30.0)
        assert len(results) == 50 and max(results) == 50
        assert reader.counter(name).value == 50
        assert len(syncs) < 25, len(syncs)
    finally:
        a.close()
        reader.close()
