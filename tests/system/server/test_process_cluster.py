"""The dev cluster as real processes: the command line, SIGKILL of an owner, restart, join, hang."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict

import gevent
import pytest

from topgun.protocol.hashing import merkle_path, partition_id
from topgun.server.rawclient import RawClient, lww_op

pytestmark = pytest.mark.system

ROOT = Path(__file__).resolve().parents[3]


def _ms() -> int:
    return int(time.time() * 1000)


def _keys_owned_by(pmap, node_id: str, n: int, prefix: str = "k"):
    owners = {p["partitionId"]: p["ownerNodeId"] for p in pmap["partitions"]}
    keys, i = [], 0
    while len(keys) < n:
        if owners[partition_id(f"{prefix}{i}")] == node_id:
            keys.append(f"{prefix}{i}")
        i += 1
    return keys


def _leaf_value(client: RawClient, m: str, key: str):
    """The key's value as its owner reports it, walking the routed Merkle tree (None if absent)."""
    path = f"{partition_id(key):03d}/{merkle_path(key)[:3]}"
    client.send({"type": "MERKLE_REQ_BUCKET", "payload": {"mapName": m, "path": path}})
    frame = client.recv(1.0)
    while frame is not None and frame["type"] != "SYNC_RESP_LEAF":
        frame = client.recv(1.0)
    if frame is None:
        return None
    values = [r["record"]["value"] for r in frame["payload"]["records"] if r["key"] == key]
    return values[0] if values else None


def test_module_runs_a_whole_cluster_and_stops_on_sigterm(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "topgun.server", "--nodes", "3", "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        lines = [proc.stdout.readline().decode() for _ in range(3)]
        ready = [re.fullmatch(r"READY (n\d) (ws://127\.0\.0\.1:\d+/ws)\n", line) for line in lines]
        assert all(ready), lines
        assert [m.group(1) for m in ready] == ["n1", "n2", "n3"]
        with RawClient(ready[2].group(2)) as client:
            pmap = client.expect("PARTITION_MAP", timeout=5.0)["payload"]
            assert len(pmap["nodes"]) == 3
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0


def test_sigkill_of_an_owner_under_load_loses_no_acked_write(process_cluster_factory, raw):
    cluster = process_cluster_factory(3)
    pmap = cluster.wait_converged()
    victim = "n2"
    keys = _keys_owned_by(pmap, victim, 30)
    watcher = raw(cluster.url("n1"))
    acked: Dict[str, int] = {}
    stop = gevent.event.Event()

    def load() -> None:
        with RawClient(cluster.url("n3")) as client:
            n = 0
            while not stop.is_set():
                n += 1
                ops = [lww_op("load", k, {"n": n}, _ms(), counter=n, op_id=f"{n}:{k}") for k in keys]
                client.send({"type": "OP_BATCH", "payload": {"ops": ops, "writeConcern": "REPLICATED"}})
                ack = client.expect("OP_ACK", timeout=15.0)["payload"]
                assert ack == {"lastId": ops[-1]["id"], "achievedLevel": "REPLICATED"}
                for k in keys:
                    acked[k] = n

    worker = gevent.spawn(load)
    gevent.sleep(0.5)
    cluster.kill(victim)
    gevent.sleep(1.0)
    stop.set()
    worker.get(timeout=20)
    new_map = cluster.wait_converged(10.0)
    assert victim not in {n["nodeId"] for n in new_map["nodes"]}
    pushed = watcher.expect("PARTITION_MAP", timeout=5.0,
                            where=lambda f: f["payload"]["version"] == new_map["version"])["payload"]
    assert pushed["version"] > pmap["version"]
    reader = raw(cluster.url("n1"))
    for k in keys:
        value = _leaf_value(reader, "load", k)
        assert value is not None and value["n"] >= acked[k], (k, value, acked[k])


def test_restarted_and_added_nodes_get_their_partitions_with_data(process_cluster_factory, raw):
    cluster = process_cluster_factory(3)
    writer = raw(cluster.url("n1"))
    t = _ms()
    items = {f"item{i}": i for i in range(300)}
    ops = [lww_op("inv", k, v, t, op_id=k) for k, v in items.items()]
    writer.request({"type": "OP_BATCH", "payload": {"ops": ops, "writeConcern": "REPLICATED"}}, "OP_ACK", 10.0)
    port = cluster.processes["n3"].port
    cluster.kill("n3")
    cluster.wait_converged(10.0)
    assert cluster.restart("n3").port == port
    cluster.add_node()
    pmap = cluster.wait_converged(10.0)
    assert [n["nodeId"] for n in pmap["nodes"]] == ["n1", "n2", "n3", "n4"]
    for node_id in ("n3", "n4"):
        reader = raw(cluster.url(node_id))
        for key in _keys_owned_by(pmap, node_id, 10, prefix="item"):
            assert _leaf_value(reader, "inv", key) == items[key], (node_id, key)


def test_a_hung_node_is_dropped_from_the_map(process_cluster_factory):
    cluster = process_cluster_factory(3)
    cluster.processes["n3"].signal(signal.SIGSTOP)
    try:
        deadline = time.monotonic() + 15.0
        while True:
            maps = [cluster.partition_map(n) for n in ("n1", "n2")]
            if all({x["nodeId"] for x in m["nodes"]} == {"n1", "n2"} for m in maps):
                break
            assert time.monotonic() < deadline, maps[0]["nodes"]
            gevent.sleep(0.1)
        assert maps[0]["version"] == maps[1]["version"]
    finally:
        cluster.processes["n3"].signal(signal.SIGCONT)
        cluster.kill("n3")


def test_a_jwt_process_cluster_starts_and_serves_authenticated_clients(topgun_process_cluster_factory,
                                                                        topgun_client_factory):
    # ProcessCluster asks each node for its map while it starts; in JWT mode it must authenticate
    # to do so (it used to time out waiting for a map the node never sends before AUTH).
    from topgun.errors import AuthError
    from topgun.testing.jwt import make_hs256_token
    secret = "process-cluster-secret"
    cluster = topgun_process_cluster_factory(3, jwt_secret=secret)
    assert sorted(n["nodeId"] for n in cluster.wait_converged()["nodes"]) == ["n1", "n2", "n3"]
    client = topgun_client_factory(cluster.urls, token=make_hs256_token(secret, sub="writer"))
    users = client.map("users")
    users.put_all({f"u{i}": i for i in range(50)})
    assert users.entries() == {f"u{i}": i for i in range(50)}
    with pytest.raises(AuthError):
        topgun_client_factory(cluster.urls, token=make_hs256_token("another secret"), connect_timeout=3.0)
