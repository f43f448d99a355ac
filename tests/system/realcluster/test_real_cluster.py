"""Cluster mode against a real 2-node TopGun 2.2.0 cluster (marker: system, realserver).

The cluster comes from ``topgun_real_cluster_factory``, which forms it with retries on split views
(``topgun.testing.realcluster``). 2.2.0 stores every write on the node that received it: no
forwarding, no replication (WIRE.md 10.6). So reading a map from one node alone shows exactly which
keys the client sent there, and "routed right" can be checked key by key.
"""
from __future__ import annotations

import json
import os
import time
from typing import Any, Callable, Dict

import gevent
import pytest
from steadyload import SteadyLoad, percentile, wait_for

from topgun.testing.realcluster import RealCluster

pytestmark = [pytest.mark.system, pytest.mark.realserver, pytest.mark.timeout(240)]

KEYS = [f"user:{i}" for i in range(200)]


def record(result: Dict[str, Any]) -> None:
    """Append one failover measurement to ``TOPGUN_FAILOVER_RESULTS`` (benchmarks/failover.py --real)."""
    path = os.environ.get("TOPGUN_FAILOVER_RESULTS")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(result) + "\n")


def placement(cluster: RealCluster, node_entries: Callable[..., Dict[str, Any]], map_name: str) -> Dict[str, set]:
    """node id -> keys of ``map_name`` that node holds."""
    return {nid: set(node_entries(cluster.url(nid), map_name)) for nid in cluster.live}


def client_agrees_with(client: Any, cluster: RealCluster) -> bool:
    owners = cluster.owners()
    pmap = client.cluster.partition_map
    return pmap is not None and tuple(pmap.owners) == owners


def test_every_key_is_stored_on_the_node_the_map_says_owns_it(
        topgun_real_cluster_factory: Any, topgun_client_factory: Any, node_entries: Any) -> None:
    cluster = topgun_real_cluster_factory(2)
    client = topgun_client_factory([cluster.urls[0]])
    wait_for(lambda: client_agrees_with(client, cluster), timeout=10.0, what="client holds the servers' map")
    owners = {k: cluster.owner_of(k) for k in KEYS}
    assert set(owners.values()) == {"r1", "r2"}
    users = client.map("routing")
    for i, key in enumerate(KEYS[:100]):
        users.set(key, {"i": i})                                    # one write per call
    users.put_all({k: {"i": i} for i, k in enumerate(KEYS[100:], 100)})   # batched per owner
    held = placement(cluster, node_entries, "routing")
    for nid in ("r1", "r2"):
        assert held[nid] == {k for k in KEYS if owners[k] == nid}   # on its owner, and nowhere else
    assert client.cluster.stats["direct"] >= len(KEYS)
    assert client.cluster.stats["forwarded"] == 0


def test_smart_routing_off_sends_each_key_to_one_node_and_reads_it_back(
        topgun_real_cluster_factory: Any, topgun_client_factory: Any, node_entries: Any) -> None:
    cluster = topgun_real_cluster_factory(2)
    client = topgun_client_factory([cluster.urls[0]], smart_routing=False)
    wait_for(lambda: len(client.cluster.node_states()) == 2, timeout=10.0, what="connected to both nodes")
    users = client.map("dumb")
    users.put_all({k: i for i, k in enumerate(KEYS)})
    held = placement(cluster, node_entries, "dumb")
    assert held["r1"].isdisjoint(held["r2"])                        # 2.2.0 does not forward nor copy
    assert held["r1"] | held["r2"] == set(KEYS)
    misplaced = [k for k in KEYS if k not in held[cluster.owner_of(k)]]
    assert misplaced                                                # so data lands off its owner
    assert all(users.get(k) == i for i, k in enumerate(KEYS))       # yet this client reads its own writes
    assert client.cluster.stats["forwarded"] > 0


@pytest.mark.parametrize("victim", ["r2", "r1"], ids=["kill-non-master", "kill-master"])
def test_map_followed_after_a_kill_and_after_the_rejoin(
        topgun_real_cluster_factory: Any, topgun_client_factory: Any, node_entries: Any, victim: str) -> None:
    cluster = topgun_real_cluster_factory(2)
    survivor = "r1" if victim == "r2" else "r2"
    client = topgun_client_factory(cluster.urls)
    wait_for(lambda: client_agrees_with(client, cluster), timeout=10.0, what="client holds the servers' map")
    version = client.cluster.map_version
    cluster.kill(victim)
    wait_for(lambda: set(client.cluster.partition_map.owners) == {survivor}, timeout=20.0,
             what=f"client routes everything to {survivor}")
    assert (client.cluster.map_version, client.cluster.partition_map.source) != (version, victim)
    m = client.map("follow")
    m.put_all({f"down:{i}": i for i in range(50)}, timeout=10.0)
    assert set(node_entries(cluster.url(survivor), "follow")) == {f"down:{i}" for i in range(50)}

    cluster.restart(victim)
    wait_for(lambda: client_agrees_with(client, cluster)
             and getattr(client.cluster.node_states().get(victim), "state", None) == "CONNECTED",
             timeout=30.0, what="client follows the map with the rejoined node")
    m.put_all({k: 1 for k in KEYS}, timeout=10.0)
    held = placement(cluster, node_entries, "follow")
    assert {k for k in KEYS if cluster.owner_of(k) == victim} == held[victim] & set(KEYS)


def test_steady_writes_through_a_kill_none_failed_none_lost_on_the_survivor(
        topgun_real_cluster_factory: Any, topgun_client_factory: Any, node_entries: Any) -> None:
    """SIGKILL a node under a steady pipelined load (the master first; benchmarks/failover.py --real
    runs more rounds, restarting the victim after each). "Lost" here means: an acknowledged write
    whose value the node now owning its key does not hold as the key's latest. Writes the dead node
    stored before the kill stay on it (2.2.0 replicates nothing), so a key is whole on the survivor
    only once written again: asserted too, with keys written once before the kill.
    """
    cluster = topgun_real_cluster_factory(2)
    client = topgun_client_factory([cluster.urls[1]])
    wait_for(lambda: client_agrees_with(client, cluster), timeout=10.0, what="client holds the servers' map")
    cold = [k for k in (f"cold:{i}" for i in range(100)) if cluster.owner_of(k) == "r1"][:10]
    client.map("load").put_all({k: {"seq": 0} for k in cold})
    keys = [f"acct:{i}" for i in range(40)]
    load = SteadyLoad(client, keys, interval=0.01).start()
    rounds = int(os.environ.get("TOPGUN_FAILOVER_ROUNDS", "1"))
    for r in range(rounds):
        wait_for(lambda: load.total_acked >= 400 * (r + 1), timeout=30.0, what="load running")
        victim = ("r1", "r2")[r % 2]
        survivor = "r2" if victim == "r1" else "r1"
        victim_keys = [k for k in keys if cluster.owner_of(k) == victim]
        killed_at = time.monotonic()
        cluster.kill(victim)
        wait_for(lambda: len(load.failover_times(victim_keys, killed_at)) == len(victim_keys), timeout=30.0,
                 what="every key of the killed node written again")
        times = sorted(load.failover_times(victim_keys, killed_at).values())
        print(f"\nreal 2-node cluster, round {r}, SIGKILL {victim}: {len(victim_keys)} keys rerouted, first "
              f"after {times[0]:.3f}s, all after {times[-1]:.3f}s (p95 {percentile(times, 95):.3f}s)")
        record({"real": True, "smart": True, "owner_down": client.cluster.router.owner_down, "round": r,
                "victim": victim, "keys": len(victim_keys), "first": times[0], "per_key": times,
                "p95": percentile(times, 95), "all": times[-1]})
        if r == 0:
            held = node_entries(cluster.url(survivor), "load")
            assert not set(cold) & set(held)                        # the dead node's data is not there
        if r + 1 < rounds:
            cluster.restart(victim)
            wait_for(lambda: client_agrees_with(client, cluster)
                     and getattr(client.cluster.node_states().get(victim), "state", None) == "CONNECTED",
                     timeout=30.0, what="restarted node back in the client's map and connected")
    acked = load.total_acked
    wait_for(lambda: load.total_acked >= acked + 400, timeout=30.0, what="load going on after the last kill")
    load.stop()
    print(f"formations: {cluster.history}")
    assert load.failures == []
    assert load.out_of_order() == []
    held = {nid: node_entries(cluster.url(nid), "load") for nid in cluster.live}
    latest = {k: held[cluster.owner_of(k)][k]["seq"] for k in keys}
    assert latest == load.last_seq                                  # every key's last write, on its owner


def test_client_reconnects_after_every_node_restarted(
        topgun_real_cluster_factory: Any, topgun_client_factory: Any) -> None:
    cluster = topgun_real_cluster_factory(2)
    client = topgun_client_factory([cluster.urls[0]])

    def application_write(i: int, timeout: float = 10.0) -> None:   # the application's code never changes
        client.map("app").set(f"item:{i}", {"n": i}, timeout=timeout)

    application_write(1)
    for nid in cluster.live:
        cluster.kill(nid)
    wait_for(lambda: not client.connected, timeout=10.0, what="client sees every node gone")
    during = gevent.spawn(application_write, 2, 150.0)
    cluster.restart_all()
    during.get(timeout=150.0)
    application_write(3)
    wait_for(lambda: client_agrees_with(client, cluster)
             and all(s.state == "CONNECTED" for s in client.cluster.node_states().values())
             and len(client.cluster.node_states()) == 2, timeout=30.0, what="connected to both restarted nodes")
    assert client.map("app").get("item:3") == {"n": 3}
    application_write(2)                                            # and again, to its owner now
    assert client.map("app").get("item:2") == {"n": 2}


def test_nodes_report_per_node_versions_for_the_same_table(topgun_real_cluster_factory: Any) -> None:
    cluster = topgun_real_cluster_factory(2)
    views = cluster.views()
    assert views["r1"] is not None and views["r2"] is not None
    assert views["r1"].owners == views["r2"].owners                   # one table ...
    assert views["r1"].version != views["r2"].version                 # ... two version numbers (WIRE.md 10.2)
    assert views["r1"].counts() == {"r1": 136, "r2": 135}
    assert views["r1"].endpoints == {nid: cluster.url(nid).removesuffix("/ws") for nid in ("r1", "r2")}
    assert [f.kind for f in cluster.history] == ["start"] and 1 <= cluster.history[0].tries <= cluster.tries


