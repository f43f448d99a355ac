"""OR-maps and search on the embedded 3-node cluster: routing by partition, node-local search, failover."""
from __future__ import annotations

from typing import Any, Callable, List

import pytest
from ormap_search_support import drain, eventually

from topgun import TopGunClient
from topgun.protocol.hashing import partition_id
from topgun.server.ormaps import shadow

pytestmark = pytest.mark.integration


def _or_values_on(cluster: Any, node_id: str, map_name: str, key: str) -> List[Any]:
    mp = cluster.node(node_id).store.parts[partition_id(key)].get(shadow(map_name))
    if mp is None:
        return []
    return sorted(str(rec[1]) for skey, rec in mp.records.items() if skey.startswith(key + "\x00") and rec[3])


def _keys_on_each_node(cluster: Any, per_node: int) -> List[str]:
    keys: List[str] = []
    for node_id in sorted(cluster.table.nodes):
        i = 0
        found = 0
        while found < per_node:
            key = f"{node_id}-k{i}"
            if cluster.owner_of(key) == node_id:
                keys.append(key)
                found += 1
            i += 1
    return keys


@pytest.fixture
def cluster(topgun_cluster_factory: Callable[..., Any]) -> Any:
    return topgun_cluster_factory(3)


@pytest.fixture
def clients(cluster: Any, topgun_client_factory: Callable[..., TopGunClient]) -> Any:
    # Through different seeds: each client learns the map and routes by partition itself.
    return topgun_client_factory(cluster.urls[0]), topgun_client_factory(cluster.urls[2])


def test_or_map_writes_land_on_the_owner_and_its_backup(cluster: Any, clients: Any) -> None:
    a, b = clients
    keys = _keys_on_each_node(cluster, 2)
    for key in keys:
        a.ormap("tags").add(key, "from-a")
        b.ormap("tags").add(key, "from-b")
    for key in keys:
        assert sorted(b.ormap("tags").get(key)) == ["from-a", "from-b"]
        owner = cluster.owner_of(key)
        assert _or_values_on(cluster, owner, "tags", key) == ["from-a", "from-b"]
        for backup in cluster.backups_of(key):
            eventually(lambda: _or_values_on(cluster, backup, "tags", key) == ["from-a", "from-b"],
                       what=f"{key} replicated to {backup}")
    assert set(a.ormap("tags").entries()) == set(keys)
    a.ormap("tags").remove(keys[0], "from-a")
    assert b.ormap("tags").get(keys[0]) == ["from-b"]


def test_or_map_subscription_through_another_seed(cluster: Any, clients: Any) -> None:
    a, b = clients
    keys = _keys_on_each_node(cluster, 1)
    with b.ormap("tags").subscribe() as sub:
        for key in keys:
            a.ormap("tags").add(key, "x")
        eventually(lambda: all(sub.results.get(k) == ["x"] for k in keys), what="adds from every owner")
        a.ormap("tags").remove(keys[1], "x")
        eventually(lambda: keys[1] not in sub.results, what="remove seen")
        changes = drain(sub)
    adds = [c for c in changes if c.kind == "ADD"]
    assert len(adds) == len({(c.key, c.tag) for c in adds})   # an add seen by several nodes is reported once


def test_or_map_survives_its_owners_death(cluster: Any, clients: Any) -> None:
    a, b = clients
    key = _keys_on_each_node(cluster, 1)[1]
    owner = cluster.owner_of(key)
    a.ormap("tags").add(key, "one")
    a.ormap("tags").add(key, "two")
    seed_node = sorted(cluster.table.nodes)[0]
    survivor_client = a if owner != seed_node else b
    cluster.kill(owner)
    assert eventually(lambda: sorted(survivor_client.ormap("tags").get(key, timeout=5.0)) == ["one", "two"],
                      timeout=15.0, what="values served by the new owner")
    survivor_client.ormap("tags").add(key, "three", timeout=10.0)
    assert sorted(survivor_client.ormap("tags").get(key)) == ["one", "three", "two"]


def test_search_asks_every_node_and_merges(cluster: Any, clients: Any) -> None:
    a, b = clients
    keys = _keys_on_each_node(cluster, 3)
    a.map("docs").put_all({k: {"text": f"needle number {i}"} for i, k in enumerate(keys)})
    a.map("docs").put_all({f"hay{i}": "just hay" for i in range(10)})
    hits = b.map("docs").search("needle", limit=100)
    assert {h.key for h in hits} == set(keys)
    assert {cluster.owner_of(h.key) for h in hits} == set(cluster.table.nodes)   # hits from every node
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert all(h.value == {"text": f"needle number {keys.index(h.key)}"} for h in hits)
    assert len(b.map("docs").search("needle", limit=4)) == 4


def test_live_search_hears_writes_owned_by_every_node(cluster: Any, clients: Any) -> None:
    a, b = clients
    keys = _keys_on_each_node(cluster, 1)
    with b.map("docs").search_subscribe("zebra") as live:
        assert live.results == {}
        for key in keys:
            a.map("docs").set(key, "a zebra")
        eventually(lambda: set(live.results) == set(keys), what="an ENTER from every owner")
        a.map("docs").remove(keys[0])
        eventually(lambda: set(live.results) == set(keys[1:]), what="LEAVE")
