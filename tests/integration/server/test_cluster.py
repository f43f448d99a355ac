"""An in-process 3-node cluster: one map, owners and backups, forwarding, events, failover, joins."""
from __future__ import annotations

import time
from typing import Any, Dict, List

import gevent
import pytest

from topgun.protocol.hashing import merkle_path, partition_id
from topgun.server.rawclient import RawClient, lww_op

pytestmark = pytest.mark.integration


def _ms() -> int:
    return int(time.time() * 1000)


def _batch(client: RawClient, m: str, items: Dict[str, Any], op_id: str, wc: str = "REPLICATED",
           millis: int = 0) -> Dict[str, Any]:
    t = millis or _ms()
    ops = [lww_op(m, k, v, t, op_id=f"{op_id}:{k}") for k, v in items.items()]
    last = ops[-1]["id"]
    return client.request({"type": "OP_BATCH", "payload": {"ops": ops, "writeConcern": wc}}, "OP_ACK",
                          timeout=10.0, where=lambda f: f["payload"]["lastId"] == last)


def _stored(cluster, node_id: str, m: str, key: str) -> Any:
    rec = cluster.node(node_id).store.get(partition_id(key), m, key)
    return rec[1] if rec is not None and rec[3] else None


def _keys_owned_by(cluster, node_id: str, n: int, prefix: str = "k") -> List[str]:
    keys, i = [], 0
    while len(keys) < n:
        key = f"{prefix}{i}"
        if cluster.owner_of(key) == node_id:
            keys.append(key)
        i += 1
    return keys


def test_three_nodes_agree_on_one_partition_map(embedded_cluster_factory, raw):
    cluster = embedded_cluster_factory(3)
    maps = [raw(url).expect("PARTITION_MAP")["payload"] for url in cluster.urls]   # pushed on connect
    assert all(m == maps[0] for m in maps)
    pm = maps[0]
    assert pm["partitionCount"] == 271 and len(pm["partitions"]) == 271
    assert [n["nodeId"] for n in pm["nodes"]] == ["n1", "n2", "n3"]
    assert {n["endpoints"]["websocket"] for n in pm["nodes"]} == set(cluster.urls)
    for p in pm["partitions"]:
        assert len(p["backupNodeIds"]) == 1 and p["backupNodeIds"][0] != p["ownerNodeId"]
    owned = [sum(p["ownerNodeId"] == n for p in pm["partitions"]) for n in ("n1", "n2", "n3")]
    assert min(owned) > 60


def test_every_key_is_stored_on_its_owner_and_backup(embedded_cluster_factory, raw):
    cluster = embedded_cluster_factory(3)
    client = raw(cluster.urls[0])
    items = {f"user:{i}": {"i": i} for i in range(300)}
    ack = _batch(client, "users", items, "b1")
    assert ack["payload"]["achievedLevel"] == "REPLICATED"
    for key, value in items.items():
        assert _stored(cluster, cluster.owner_of(key), "users", key) == value
        assert _stored(cluster, cluster.backups_of(key)[0], "users", key) == value


def test_dumb_routed_writes_land_on_the_owner_and_the_client_gets_the_map(embedded_cluster_factory, raw):
    cluster = embedded_cluster_factory(3)
    key = _keys_owned_by(cluster, "n3", 1)[0]
    client = raw(cluster.url("n1"))
    client.expect("PARTITION_MAP")
    _batch(client, "m", {key: "v"}, "1")
    assert _stored(cluster, "n3", "m", key) == "v"
    assert _stored(cluster, "n1", "m", key) in (None, "v")   # n1 holds it only if it is the backup
    # the correction comes right before the ack
    corrections = [f["payload"] for f in client.skipped if f["type"] == "PARTITION_MAP"]
    assert corrections and corrections[-1]["partitions"][partition_id(key)]["ownerNodeId"] == "n3"


def test_strict_mode_answers_not_owner_and_applies_nothing(embedded_cluster_factory, raw):
    cluster = embedded_cluster_factory(3, strict=True)
    mine, foreign = _keys_owned_by(cluster, "n1", 1)[0], _keys_owned_by(cluster, "n2", 1)[0]
    client = raw(cluster.url("n1"))
    t = _ms()
    ops = [lww_op("m", mine, 1, t, op_id="a"), lww_op("m", foreign, 2, t, op_id="b")]
    client.send({"type": "OP_BATCH", "payload": {"ops": ops}})
    error = client.expect("ERROR")["payload"]
    assert error["code"] == "NOT_OWNER"
    assert error["details"] == {"partitionId": partition_id(foreign), "mapVersion": cluster.table.version,
                                "currentOwner": "n2", "lastId": "b"}
    assert _stored(cluster, "n1", "m", mine) is None
    assert _batch(client, "m", {mine: 1}, "c")["payload"]["achievedLevel"] == "REPLICATED"


def test_subscribers_on_every_node_see_writes_made_through_any_node(embedded_cluster_factory, raw):
    cluster = embedded_cluster_factory(3)
    key = _keys_owned_by(cluster, "n3", 1)[0]
    subs = {n: raw(cluster.url(n)) for n in ("n1", "n2", "n3")}
    for node_id, client in subs.items():
        client.request({"type": "QUERY_SUB", "payload": {"queryId": f"q-{node_id}", "mapName": "live",
                                                          "query": {"where": {"ok": True}}}}, "QUERY_RESP")
    _batch(subs["n2"], "live", {key: {"ok": True}}, "w")          # the writer is subscribed too
    for node_id in ("n1", "n3"):
        client = subs[node_id]
        event = client.expect("SERVER_EVENT", timeout=3.0)["payload"]
        assert event["key"] == key and event["record"]["value"] == {"ok": True}
        update = client.expect("QUERY_UPDATE", timeout=3.0)["payload"]
        assert (update["queryId"], update["changeType"]) == (f"q-{node_id}", "ENTER")
    assert [f for f in subs["n2"].drain(0.3) if f["type"] in ("SERVER_EVENT", "QUERY_UPDATE")] == []


def test_query_results_and_sync_cover_the_whole_cluster(embedded_cluster_factory, raw):
    cluster = embedded_cluster_factory(3)
    items = {f"doc{i}": {"n": i} for i in range(60)}
    writer = raw(cluster.url("n2"))
    _batch(writer, "docs", items, "w", millis=5000)
    client = raw(cluster.url("n1"))
    resp = client.request({"type": "QUERY_SUB", "payload": {"queryId": "q", "mapName": "docs", "query": {
        "predicate": {"op": "lt", "attribute": "n", "value": 50}, "sort": {"n": "asc"}, "limit": 45}}},
        "QUERY_RESP")["payload"]
    assert [r["key"] for r in resp["results"]] == [f"doc{i}" for i in range(45)]
    root = client.request({"type": "SYNC_INIT", "mapName": "docs"}, "SYNC_RESP_ROOT")["payload"]["rootHash"]
    buckets = client.request({"type": "MERKLE_REQ_BUCKET", "payload": {"mapName": "docs", "path": ""}},
                             "SYNC_RESP_BUCKETS")["payload"]["buckets"]
    assert sum(buckets.values()) & 0xFFFFFFFF == root != 0
    key = _keys_owned_by(cluster, "n3", 1, prefix="doc")[0]
    pid, path = partition_id(key), merkle_path(key)
    request = {"type": "MERKLE_REQ_BUCKET", "payload": {"mapName": "docs", "path": f"{pid:03d}/{path[:3]}"}}
    leaf = client.request(request, "SYNC_RESP_LEAF")["payload"]
    assert key in [r["key"] for r in leaf["records"]]


@pytest.mark.parametrize("victim, entry", [("n3", "n1"), ("n1", "n2")], ids=["member", "coordinator"])
def test_killing_the_owner_mid_load_loses_no_acked_write(embedded_cluster_factory, raw, victim, entry):
    cluster = embedded_cluster_factory(3)
    keys = _keys_owned_by(cluster, victim, 40)
    watcher = raw(cluster.url(entry))
    old_version = watcher.expect("PARTITION_MAP")["payload"]["version"]
    acked: Dict[str, int] = {}
    stop = gevent.event.Event()

    def load(url: str, tag: str) -> None:
        client = RawClient(url)
        try:
            n = 0
            while not stop.is_set():
                n += 1
                ops = [lww_op("load", k, {"n": n, "by": tag}, _ms(), counter=n, op_id=f"{tag}{n}:{k}") for k in keys]
                client.send({"type": "OP_BATCH", "payload": {"ops": ops, "writeConcern": "REPLICATED"}})
                frame = client.expect("OP_ACK", timeout=10.0)
                assert frame["payload"]["lastId"] == ops[-1]["id"]
                for k in keys:
                    acked[k] = n
        finally:
            client.close()

    workers = [gevent.spawn(load, cluster.url(entry), "a")]
    gevent.sleep(0.2)
    cluster.kill(victim)
    gevent.sleep(0.3)
    stop.set()
    gevent.joinall(workers, raise_error=True, timeout=15)
    table = cluster.wait_converged(5.0)
    assert victim not in table.nodes
    for k in keys:
        rec = cluster.node(cluster.owner_of(k)).store.get(partition_id(k), "load", k)
        assert rec is not None and rec[1]["n"] >= acked[k], k
        backup = cluster.backups_of(k)[0]
        assert cluster.node(backup).store.get(partition_id(k), "load", k) == rec
    pushed = watcher.expect("PARTITION_MAP", timeout=3.0, where=lambda f: victim not in
                            {n["nodeId"] for n in f["payload"]["nodes"]})["payload"]
    assert pushed["version"] > old_version


def test_a_joining_node_takes_its_share_with_the_data(embedded_cluster_factory, raw):
    cluster = embedded_cluster_factory(3)
    writer = raw(cluster.url("n1"))
    items = {f"item{i}": i for i in range(500)}
    _batch(writer, "inv", items, "w")
    writer.send({"type": "CLIENT_OP", "payload": lww_op("inv", "item7", None, _ms() + 10_000, op_type="REMOVE",
                                                        op_id="rm")})
    writer.expect("OP_ACK", where=lambda f: f["payload"]["lastId"] == "rm")
    before = cluster.table.version
    node = cluster.add_node()
    table = cluster.wait_converged(5.0)
    assert table.version > before and node.node_id in table.nodes
    assert sum(o == node.node_id for o in table.owners) > 30
    for key, value in items.items():
        owner = cluster.owner_of(key)
        expected = None if key == "item7" else value
        assert _stored(cluster, owner, "inv", key) == expected, (key, owner)
        assert _stored(cluster, cluster.backups_of(key)[0], "inv", key) == expected
    # an older put must not resurrect the removed key on its new holders either
    _batch(writer, "inv", {"item7": "stale"}, "late", millis=1000)
    assert _stored(cluster, cluster.owner_of("item7"), "inv", "item7") is None


def test_a_crossing_dial_delivers_what_the_replaced_link_still_had_queued(embedded_cluster_factory):
    # A joiner dials a seed while that seed dials it back: two links to one peer, the later
    # replaces the earlier. A reply queued on the earlier one (CI lost a snapshot reply this
    # way, and the join waited out its 15 s prepare) must still arrive.
    cluster = embedded_cluster_factory(2)
    n1, n2 = cluster.node("n1").membership, cluster.node("n2").membership
    got: List[int] = []
    n2.on("TEST_PING", lambda _peer, msg: got.append(msg["n"]))
    link, ident, _version = n1._handshake(cluster.url("n2"))
    peer = n1.peers["n2"]
    assert ident[0] == "n2" and peer.out is not None
    n1.send("n2", {"type": "TEST_PING", "n": 1})       # queued on the current link, not yet written
    n1._use_link(peer, link)                           # the crossing dial takes over in the same turn
    n1.send("n2", {"type": "TEST_PING", "n": 2})
    deadline = time.monotonic() + 5.0
    while sorted(got) != [1, 2] and time.monotonic() < deadline:
        gevent.sleep(0.01)
    assert sorted(got) == [1, 2]


def test_a_killed_node_restarts_empty_and_gets_its_partitions_back(embedded_cluster_factory, raw):
    cluster = embedded_cluster_factory(3)
    writer = raw(cluster.url("n1"))
    items = {f"r{i}": i for i in range(200)}
    _batch(writer, "m", items, "w")
    port = cluster.node("n2").port
    cluster.kill("n2")
    cluster.wait_converged(5.0)
    node = cluster.restart("n2")
    assert node.port == port
    table = cluster.wait_converged(5.0)
    assert "n2" in table.nodes
    for key, value in items.items():
        assert _stored(cluster, cluster.owner_of(key), "m", key) == value
        assert _stored(cluster, cluster.backups_of(key)[0], "m", key) == value
    with RawClient(cluster.url("n2")) as client:
        assert client.expect("PARTITION_MAP")["payload"]["version"] == table.version


def test_writes_during_a_join_are_not_lost(embedded_cluster_factory):
    cluster = embedded_cluster_factory(3)
    keys = [f"hot{i}" for i in range(200)]
    acked: Dict[str, int] = {}
    stop = gevent.event.Event()

    def load(url: str, tag: str, mine: List[str]) -> None:
        with RawClient(url) as client:
            n = 0
            while not stop.is_set():
                n += 1
                ops = [lww_op("hot", k, {"n": n}, _ms(), counter=n, op_id=f"{tag}{n}:{k}") for k in mine]
                client.send({"type": "OP_BATCH", "payload": {"ops": ops, "writeConcern": "REPLICATED"}})
                assert client.expect("OP_ACK", timeout=10.0)["payload"]["lastId"] == ops[-1]["id"]
                for k in mine:
                    acked[k] = n

    workers = [gevent.spawn(load, cluster.url("n1"), "a", keys[:100]),
               gevent.spawn(load, cluster.url("n2"), "b", keys[100:])]
    gevent.sleep(0.1)
    cluster.add_node()
    gevent.sleep(0.2)
    stop.set()
    gevent.joinall(workers, raise_error=True, timeout=15)
    cluster.wait_converged(5.0)
    assert "n4" in cluster.table.nodes
    for k in keys:
        for holder in [cluster.owner_of(k)] + cluster.backups_of(k):
            rec = cluster.node(holder).store.get(partition_id(k), "hot", k)
            assert rec is not None and rec[1]["n"] >= acked[k], (k, holder, rec, acked[k])
