"""Topics, locks and counters when the partition map moves their names (embedded dev cluster).

Adding a node moves some partitions to it. A held lock whose name moved is reported lost (other
clients are granted it on the new owner), one whose name stayed is still held; topic and counter
subscriptions follow their names to the new owner.
"""
from __future__ import annotations

import uuid
from typing import Any, Dict, List

import gevent
import pytest
from structures_helpers import wait_until

import topgun
from topgun.errors import LockLost

pytestmark = pytest.mark.integration


def test_structures_follow_their_names_when_a_node_joins(topgun_cluster_factory: Any,
                                                         topgun_client_factory: Any) -> None:
    cluster = topgun_cluster_factory(2)
    a = topgun_client_factory(cluster.urls)
    b = topgun_client_factory(cluster.urls)
    names = [f"s-{uuid.uuid4().hex[:6]}-{i}" for i in range(24)]
    before = {n: a.cluster.owner_of(n) for n in names}
    lost: List[str] = []
    locks = {n: a.lock(n, on_lost=lambda lk: lost.append(lk.name)) for n in names}
    for lock in locks.values():
        assert lock.acquire(timeout=5.0)
    subs = {n: b.topic(n).subscribe() for n in names}
    for n in names:
        a.counter(n).increment(2)

    version = a.cluster.map_version
    cluster.add_node()
    wait_until(lambda: a.cluster.map_version != version and b.cluster.map_version != version
               and a.cluster.owner_of(names[0]) == cluster.owner_of(names[0]), 15.0, "new map at both clients")
    moved = [n for n in names if cluster.owner_of(n) != before[n]]
    stayed = [n for n in names if n not in moved]
    assert moved and stayed, "no name moved (or all did): pick more names"

    wait_until(lambda: sorted(lost) == sorted(moved), 10.0, f"locks of moved names lost: {sorted(moved)}")
    assert all(locks[n].locked() for n in stayed)
    for n in moved:
        assert b.lock(n).acquire(timeout=5.0)            # granted by the new owner
        with pytest.raises(LockLost):
            locks[n].release()
    for n in stayed:
        locks[n].release()

    # Topic subscriptions and counters were made again on the new owner.
    wait_until(lambda: b.runtime.topics.bindings.rebinds >= len(moved), 10.0, "topics re-subscribed")
    wait_until(lambda: a.runtime.counters.bindings.rebinds >= len(moved), 10.0, "counters re-attached")
    for n in names:
        a.topic(n).publish(n)
    got: Dict[str, Any] = {n: subs[n].get(timeout=5.0).data for n in names}
    assert got == {n: n for n in names}
    assert [b.counter(n).value for n in moved] == [2] * len(moved)
    for sub in subs.values():
        sub.close()
    gevent.sleep(0)


def test_a_client_on_one_node_only_does_not_meet_one_on_another_node(topgun_cluster_factory: Any) -> None:
    """What routing buys: two url= clients on different nodes see separate, node-local counters."""
    cluster = topgun_cluster_factory(2)
    name = "node-local-counter"
    with topgun.TopGunClient(url=cluster.urls[0]) as one, topgun.TopGunClient(url=cluster.urls[1]) as two:
        one.counter(name).increment(1)
        two.counter(name).increment(1)
        assert one.counter(name).value == 1 and two.counter(name).value == 1
