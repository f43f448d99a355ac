"""Cluster mode against the embedded dev cluster (in this process, 127.0.0.1, OS-chosen ports).

Every test runs with smart routing on and off. Server-side checks read what each node
received from clients (``record_arrivals``), not what the client believes it sent.
"""
from __future__ import annotations

import time
from typing import Any, List

import gevent
import pytest
from serverside import arrival_order, record_arrivals, where_arrived
from steadyload import SteadyLoad, percentile, wait_for

import topgun

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

SMART = pytest.mark.parametrize("smart", [True, False], ids=["smart", "dumb"])


def keys_owned_by(client: topgun.TopGunClient, node_id: str, n: int, prefix: str = "k") -> List[str]:
    out = []
    for i in range(100_000):
        key = f"{prefix}{i}"
        if client.cluster.owner_of(key) == node_id:
            out.append(key)
            if len(out) == n:
                return out
    raise AssertionError(f"no {n} keys owned by {node_id}")


@SMART
def test_writes_are_routed_to_the_partition_owner(embedded_cluster: Any, cluster_client: Any, smart: bool) -> None:
    cluster = embedded_cluster(3)
    arrivals = record_arrivals(cluster.nodes.values())
    client = cluster_client([cluster.urls[0]], smart_routing=smart)
    users = client.map("users")
    keys = [f"user:{i}" for i in range(300)]
    users.put_all({k: {"i": i} for i, k in enumerate(keys)})
    for k in keys[:60]:
        users.set(k, {"again": True})
    arrived = where_arrived(arrivals, "users")
    assert set(arrived) == set(keys)
    assert all(client.cluster.owner_of(k) == cluster.owner_of(k) for k in keys)
    misrouted = [k for k in keys if arrived[k] != {cluster.owner_of(k)}]
    stats = client.cluster.stats
    if smart:
        assert misrouted == []
        assert stats["forwarded"] == 0 and stats["direct"] >= 360
    else:
        assert misrouted and stats["forwarded"] > 0       # sent through other nodes, which forwarded
    assert users.get("user:7") == ({"again": True})
    assert len(users.entries()) == 300


@SMART
def test_killing_a_node_under_steady_load_loses_no_write(embedded_cluster: Any, cluster_client: Any,
                                                         smart: bool) -> None:
    cluster = embedded_cluster(3)
    arrivals = record_arrivals(cluster.nodes.values())
    client = cluster_client([cluster.urls[0]], smart_routing=smart)
    keys = [f"acct:{i}" for i in range(45)]
    load = SteadyLoad(client, keys, interval=0.01).start()
    wait_for(lambda: load.total_acked >= 300, what="load warm-up")
    victim = client.cluster.owner_of(keys[0])
    victim_keys = [k for k in keys if client.cluster.owner_of(k) == victim]
    version = client.cluster.map_version
    killed_at = time.monotonic()
    cluster.kill(victim)
    wait_for(lambda: len(load.failover_times(victim_keys, killed_at)) == len(victim_keys), timeout=20.0,
             what="every key of the killed node written again")
    wait_for(lambda: load.total_acked >= 600, what="load continuing after the kill")
    load.stop()
    assert load.failures == []
    assert load.out_of_order() == []
    assert client.cluster.map_version > version and victim not in client.cluster.node_states()
    data = client.map("load").entries()
    assert {k: data[k]["seq"] for k in keys} == load.last_seq        # nothing lost, last write wins
    for key in keys:                                                  # per-key order at the servers
        seqs = [v["seq"] for v in arrival_order(arrivals, "load", key)]
        assert seqs == sorted(seqs), key
    times = sorted(load.failover_times(victim_keys, killed_at).values())
    print(f"\nfailover ({'smart' if smart else 'dumb'}, embedded): first {times[0]:.3f}s "
          f"p95 {percentile(times, 95):.3f}s max {times[-1]:.3f}s over {len(times)} keys")
    assert times[0] < 10.0                                            # generous; targets go in benchmarks/


@SMART
def test_map_follows_nodes_added_and_removed(embedded_cluster: Any, cluster_client: Any, smart: bool) -> None:
    cluster = embedded_cluster(2)
    client = cluster_client([cluster.urls[0]], smart_routing=smart)
    seen: List[int] = []
    client.cluster.on_map_updated = lambda pmap: seen.append(pmap.version)
    v0 = client.cluster.map_version
    new = cluster.add_node()
    arrivals = record_arrivals([new])
    wait_for(lambda: client.cluster.map_version >= cluster.table.version > v0, what="map with the new node")
    wait_for(lambda: getattr(client.cluster.node_states().get(new.node_id), "state", None) == "CONNECTED",
             what="connected to the added node")
    assert seen and seen[-1] == client.cluster.map_version
    keys = keys_owned_by(client, new.node_id, 20)
    assert all(cluster.owner_of(k) == new.node_id for k in keys)
    client.map("m").put_all({k: 1 for k in keys})
    if smart:
        assert set(where_arrived(arrivals, "m")) == set(keys)         # straight to the new owner
    # Remove the first node: the map drops it, the client stops routing to (and reconnecting to) it.
    gone = sorted(cluster.nodes)[0]
    v1 = client.cluster.map_version
    cluster.kill(gone)
    cluster.wait_converged()
    wait_for(lambda: client.cluster.map_version > v1 and gone not in client.cluster.node_states(),
             what="map without the removed node")
    assert gone not in client.cluster.partition_map.nodes
    moved = keys_owned_by(client, new.node_id, 10, prefix="after")
    client.map("m").put_all({k: 2 for k in moved + keys})
    assert all(client.map("m").get(k) == 2 for k in moved + keys)


@SMART
def test_reconnects_after_every_node_restarts(embedded_cluster: Any, cluster_client: Any, smart: bool) -> None:
    cluster = embedded_cluster(3)
    client = cluster_client([cluster.urls[0]], smart_routing=smart)

    def application_write(i: int, timeout: float = 10.0) -> None:    # the app's code never changes
        client.map("app").set(f"item:{i}", {"n": i}, timeout=timeout)

    application_write(1)
    ids = sorted(cluster.nodes)
    for node_id in ids:
        cluster.kill(node_id)
    wait_for(lambda: not client.connected, what="client sees every node gone")
    during = gevent.spawn(application_write, 2, 30.0)                 # issued while the cluster is down
    for node_id in ids:
        cluster.restart(node_id)
    cluster.wait_converged()
    during.get(timeout=30.0)
    application_write(3)
    wait_for(lambda: client.cluster.map_version == cluster.table.version, what="client on the new map")
    assert client.map("app").get("item:3") == {"n": 3}
    assert client.map("app").get("item:2") == {"n": 2}


@SMART
def test_live_query_keeps_delivering_after_its_node_dies(embedded_cluster: Any, cluster_client: Any,
                                                          smart: bool) -> None:
    cluster = embedded_cluster(3)
    watcher = cluster_client([cluster.urls[0]], smart_routing=smart)
    writer = cluster_client([cluster.urls[1]], smart_routing=smart)
    changes: List[Any] = []
    sub = watcher.map("chat").subscribe(changes.append)
    writer.map("chat").put_all({f"before:{i}": i for i in range(30)})
    wait_for(lambda: len(sub.results) == 30, what="events from every owner before the kill")
    node = sub.conn.node_id
    cluster.kill(node)
    writer.map("chat").put_all({f"after:{i}": i for i in range(30)})  # keys on every surviving node
    wait_for(lambda: all(f"after:{i}" in sub.results for i in range(30)), timeout=15.0,
             what="changes after the subscription's node died")
    assert sub.conn is not None and sub.conn.node_id != node
    writer.map("chat").set("last", "x")
    wait_for(lambda: sub.results.get("last") == "x", what="a later change")
    sub.close()
