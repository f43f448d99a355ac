"""Cluster mode against one server process per node, with real SIGKILLs (marker: system).

Each test runs with smart routing on and off and with default client settings. Failover times
are printed (``-s``) and, when ``TOPGUN_FAILOVER_RESULTS`` names a file, appended to it as JSON
lines for benchmarks/failover_results.md; the assertions only use generous bounds.
"""
from __future__ import annotations

import json
import os
import time
from typing import Any, List

import gevent
import pytest
from steadyload import SteadyLoad, percentile, wait_for

pytestmark = [pytest.mark.system, pytest.mark.timeout(240)]

SMART = pytest.mark.parametrize("smart", [True, False], ids=["smart", "dumb"])


def record(result: dict) -> None:
    path = os.environ.get("TOPGUN_FAILOVER_RESULTS")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(result) + "\n")


@SMART
def test_sigkill_under_steady_load_loses_no_write(proc_cluster: Any, cluster_client: Any, smart: bool) -> None:
    cluster = proc_cluster(3)
    client = cluster_client([cluster.urls[0]], smart_routing=smart)
    policy = os.environ.get("TOPGUN_OWNER_DOWN", "wait")          # benchmark knob; default is "wait"
    client.cluster.router.owner_down = policy
    keys = [f"acct:{i}" for i in range(45)]
    load = SteadyLoad(client, keys, interval=0.01).start()
    rounds = int(os.environ.get("TOPGUN_FAILOVER_ROUNDS", "2"))
    all_first: List[float] = []
    for r in range(rounds):
        wait_for(lambda: load.total_acked >= 300 * (r + 1), timeout=30.0, what="load running")
        victim = sorted(client.cluster.node_states())[r % 3]           # a different node each round
        victim_keys = [k for k in keys if client.cluster.owner_of(k) == victim]
        version = client.cluster.map_version
        killed_at = time.monotonic()                                    # SIGKILL goes out right after
        cluster.kill(victim)
        wait_for(lambda: len(load.failover_times(victim_keys, killed_at)) == len(victim_keys), timeout=30.0,
                 what="every key of the killed node written again")
        times = sorted(load.failover_times(victim_keys, killed_at).values())
        assert client.cluster.map_version != version
        all_first.append(times[0])
        print(f"\nround {r} ({'smart' if smart else 'dumb'}): killed {victim}; first write to one of its "
              f"{len(victim_keys)} keys after {times[0]:.3f}s, all keys after {times[-1]:.3f}s "
              f"(p95 {percentile(times, 95):.3f}s); map v{version} -> v{client.cluster.map_version}")
        record({"smart": smart, "owner_down": policy, "round": r, "victim": victim, "keys": len(victim_keys),
                "first": times[0], "per_key": times,
                "p95": percentile(times, 95), "all": times[-1], "stats": client.cluster.stats})
        cluster.restart(victim)
        wait_for(lambda: victim in client.cluster.node_states()
                 and client.cluster.node_states()[victim].state == "CONNECTED", timeout=30.0,
                 what="restarted node back in the map and connected")
    load.stop()
    assert load.failures == []
    assert load.out_of_order() == []
    data = client.map("load").entries()
    assert {k: data[k]["seq"] for k in keys} == load.last_seq          # every write is there, in order
    assert max(all_first) < 10.0                                         # generous; target is p95 < 1 s


@SMART
def test_map_follows_added_and_removed_nodes(proc_cluster: Any, cluster_client: Any, smart: bool) -> None:
    cluster = proc_cluster(2)
    client = cluster_client([cluster.urls[0]], smart_routing=smart)
    v0 = client.cluster.map_version
    new = cluster.add_node()
    wait_for(lambda: client.cluster.map_version != v0
             and getattr(client.cluster.node_states().get(new.node_id), "state", None) == "CONNECTED",
             timeout=30.0, what="map with the added node, connected")
    owned = [k for k in (f"k{i}" for i in range(2000)) if client.cluster.owner_of(k) == new.node_id][:20]
    assert owned
    assert all(cluster.owner_of(k) == new.node_id for k in owned[:3])  # the servers agree
    before = client.cluster.stats["direct"]
    client.map("m").put_all({k: 1 for k in owned})
    if smart:
        assert client.cluster.stats["direct"] - before >= len(owned)
    gone = "n1"
    v1 = client.cluster.map_version
    cluster.kill(gone)
    wait_for(lambda: client.cluster.map_version != v1 and gone not in client.cluster.node_states(),
             timeout=30.0, what="map without the killed node")
    client.map("m").put_all({f"x{i}": i for i in range(100)})
    assert client.map("m").get("x7") == 7 and client.map("m").get(owned[0]) == 1


@SMART
def test_reconnects_after_every_node_restarts(proc_cluster: Any, cluster_client: Any, smart: bool) -> None:
    cluster = proc_cluster(3)
    client = cluster_client([cluster.urls[0]], smart_routing=smart)

    def application_write(i: int, timeout: float = 10.0) -> None:       # the app's code never changes
        client.map("app").set(f"item:{i}", {"n": i}, timeout=timeout)

    application_write(1)
    ids = cluster.live
    for node_id in ids:
        cluster.kill(node_id)
    wait_for(lambda: not client.connected, what="client sees every node gone")
    during = gevent.spawn(application_write, 2, 60.0)
    for node_id in ids:
        cluster.restart(node_id)
    during.get(timeout=60.0)
    application_write(3)
    assert client.map("app").get("item:2") == {"n": 2}
    wait_for(lambda: len(client.cluster.node_states()) == 3
             and all(s.state == "CONNECTED" for s in client.cluster.node_states().values()),
             timeout=30.0, what="connected to every restarted node")


@SMART
def test_live_query_keeps_delivering_after_its_node_is_killed(proc_cluster: Any, cluster_client: Any,
                                                               smart: bool) -> None:
    cluster = proc_cluster(3)
    watcher = cluster_client([cluster.urls[0]], smart_routing=smart)
    writer = cluster_client([cluster.urls[1]], smart_routing=smart)
    sub = watcher.map("chat").subscribe(lambda change: None)
    writer.map("chat").put_all({f"before:{i}": i for i in range(30)})
    wait_for(lambda: len(sub.results) == 30, what="events before the kill")
    node = sub.conn.node_id
    killed_at = time.monotonic()
    cluster.kill(node)
    writer.map("chat").put_all({f"after:{i}": i for i in range(30)})
    wait_for(lambda: all(f"after:{i}" in sub.results for i in range(30)), timeout=30.0,
             what="changes after the subscription's node was killed")
    print(f"\nlive query moved from {node} to {sub.conn.node_id}; all 30 changes seen "
          f"{time.monotonic() - killed_at:.3f}s after the kill")
    sub.close()
