"""Topics, locks and PN counters on the dev cluster as processes (marker: system).

Clients in cluster mode route each structure to its name's partition owner, so clients that
started from different seeds meet; a killed owner takes its locks with it (the holder is told)
and its counters (the clients restore them from their own totals).
"""
from __future__ import annotations

import time
import uuid
from typing import Any, List

import gevent
import gevent.event
import pytest
from structures_helpers import wait_until

import topgun

pytestmark = [pytest.mark.system, pytest.mark.timeout(180)]

LOSS_DEADLINE_S = 10.0   # a dead node's connections are noticed by the socket or, at worst, the heartbeat


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_clients_through_different_seeds_share_topics_locks_and_counters(
        topgun_process_cluster_factory: Any, topgun_client_factory: Any) -> None:
    cluster = topgun_process_cluster_factory(3)
    a = topgun_client_factory([cluster.urls[0]])
    b = topgun_client_factory([cluster.urls[2]])
    topic, lock_name, counter = _name("room"), _name("job"), _name("hits")

    with b.topic(topic).subscribe() as messages:
        a.topic(topic).publish("hello")
        assert messages.get(timeout=5.0).data == "hello"

    held = a.lock(lock_name)
    assert held.acquire(timeout=5.0)
    assert not b.lock(lock_name).acquire(blocking=False)
    held.release()
    assert b.lock(lock_name).acquire(timeout=5.0)

    a.counter(counter).increment(3)
    b.counter(counter).increment(4)
    assert a.counter(counter).value == b.counter(counter).value == 7


def test_a_lock_holder_is_told_when_the_owner_dies_and_the_new_owner_grants_it(
        topgun_process_cluster_factory: Any, topgun_client_factory: Any) -> None:
    cluster = topgun_process_cluster_factory(3)
    holder_client = topgun_client_factory([cluster.urls[0]])
    other = topgun_client_factory([cluster.urls[1]])
    name = _name("cron")
    owner = holder_client.cluster.owner_of(name)
    lost = gevent.event.Event()
    lock = holder_client.lock(name, on_lost=lambda lk: lost.set())
    assert lock.acquire(timeout=5.0)
    assert not other.lock(name).acquire(blocking=False)

    killed_at = time.monotonic()
    cluster.kill(owner)
    assert lost.wait(LOSS_DEADLINE_S), "the holder was not told that its lock was lost"
    print(f"\nlock loss reported {time.monotonic() - killed_at:.3f}s after SIGKILL of {owner}: {lock.lost_reason}")
    assert lock.lost and not lock.locked()

    successor = other.lock(name)
    assert successor.acquire(timeout=15.0)
    assert other.cluster.owner_of(name) != owner
    assert not holder_client.lock(name).acquire(blocking=False)     # the new owner holds it for `other`
    successor.release()


def test_a_counter_survives_a_node_restart_from_the_clients_totals(
        topgun_process_cluster_factory: Any, topgun_client_factory: Any) -> None:
    cluster = topgun_process_cluster_factory(3)
    clients = [topgun_client_factory([url]) for url in cluster.urls]
    name = _name("visits")
    for i, client in enumerate(clients):
        client.counter(name).increment(10 * (i + 1))
    clients[0].counter(name).decrement(5)
    total = 10 + 20 + 30 - 5
    owner = clients[0].cluster.owner_of(name)

    cluster.kill(owner)
    survivors = clients        # every client lives on; only the node died
    # Failover: the partition's new owner starts empty; the clients re-attach with their totals.
    wait_until(lambda: all(c.cluster.owner_of(name) != owner for c in survivors), 15.0, "failover map")
    seen: List[Any] = []

    def settled() -> bool:
        values = [c.counter(name).get(timeout=5.0) for c in survivors]
        seen.append(values)
        return values == [total] * len(values)

    wait_until(settled, 15.0, f"the counter back at {total} after failover (seen {seen[-3:]})")

    cluster.restart(owner)
    cluster.wait_converged(20.0)
    fresh = topgun_client_factory(cluster.urls)       # knows nothing of the counter itself
    # The restarted node owns the name again (placement is by node id) but came back empty:
    # the clients' re-attach after the map change is what restores the counter there.
    assert cluster.newest_map()["partitions"][topgun.partition_id(name)]["ownerNodeId"] == owner
    wait_until(lambda: all(c.cluster.owner_of(name) == owner for c in survivors + [fresh]), 15.0,
               "every client routes the name to the restarted node")
    wait_until(lambda: fresh.counter(name).get(timeout=5.0) == total, 20.0,
               f"a fresh client reads {total} after the restart")
    # Nothing was counted twice by re-attaching: more increments still add up exactly.
    clients[1].counter(name).increment(1)
    wait_until(lambda: fresh.counter(name).get(timeout=5.0) == total + 1, 10.0, "one more increment")
