"""Issue 10 with real processes: a --jwt-secret cluster forms and replicates over authenticated
/cluster links (and a node with another secret is refused); nodes that all list each other
as seeds form one cluster."""
from __future__ import annotations

import socket as stdsocket
import time
from pathlib import Path
from typing import Any, Dict, List, Sequence

import gevent
import pytest

from topgun.clock import GeventClock
from topgun.server.process import NodeProcess
from topgun.server.rawclient import RawClient, lww_op
from topgun.testing.jwt import make_hs256_token

pytestmark = pytest.mark.system

SECRET = "process-cluster-secret"


@pytest.fixture
def node_processes(tmp_path: Path, request: pytest.FixtureRequest):
    """``make(node_id, *args) -> NodeProcess`` (not started); every one is killed after the test."""
    made: List[NodeProcess] = []

    def make(node_id: str, *args: str, port: int = 0) -> NodeProcess:
        proc = NodeProcess(node_id, tmp_path, GeventClock(), list(args))
        proc.port = port
        made.append(proc)
        return proc

    yield make
    for proc in made:
        proc.stop(timeout=5.0)


def _free_ports(n: int) -> List[int]:
    socks = []
    for _ in range(n):
        s = stdsocket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _map(url: str, secret: str | None = None) -> Dict[str, Any]:
    with RawClient(url) as client:
        if secret is not None:
            client.expect("AUTH_REQUIRED")
            client.request({"type": "AUTH", "token": make_hs256_token(secret)}, "AUTH_ACK")
        return client.request({"type": "PARTITION_MAP_REQUEST", "payload": {"currentVersion": 0}},
                              "PARTITION_MAP", 3.0)["payload"]


def _wait_same_map(urls: Sequence[str], ids: Sequence[str], secret: str | None = None,
                   timeout: float = 10.0) -> Dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        maps = [_map(u, secret) for u in urls]
        if len({m["version"] for m in maps}) == 1 and {n["nodeId"] for n in maps[0]["nodes"]} == set(ids):
            return maps[0]
        assert time.monotonic() < deadline, [(m["version"], [n["nodeId"] for n in m["nodes"]]) for m in maps]
        gevent.sleep(0.05)


def test_a_jwt_process_cluster_forms_and_replicates_and_refuses_another_secret(node_processes):
    first = node_processes("n1", "--jwt-secret", SECRET).start((), 20.0)
    others = [node_processes(f"n{i}", "--jwt-secret", SECRET) for i in (2, 3)]
    gevent.joinall([gevent.spawn(p.start, (first.url,), 20.0) for p in others], raise_error=True)
    pmap = _wait_same_map([first.url] + [p.url for p in others], ["n1", "n2", "n3"], SECRET)
    assert all(p["backupNodeIds"] for p in pmap["partitions"])
    with RawClient(others[1].url) as client:
        client.expect("AUTH_REQUIRED")
        client.request({"type": "AUTH", "token": make_hs256_token(SECRET)}, "AUTH_ACK")
        ops = [lww_op("m", f"k{i}", i, int(time.time() * 1000), op_id=str(i)) for i in range(20)]
        ack = client.request({"type": "OP_BATCH", "payload": {"ops": ops, "writeConcern": "REPLICATED"}},
                             "OP_ACK", 10.0)["payload"]
    assert ack == {"lastId": "19", "achievedLevel": "REPLICATED"}     # every backup confirmed over /cluster
    # A node with another secret reaches no seed it can link to: after FOUND_AFTER_S it founds a
    # cluster of its own (the lowest reachable id is its own), and is never in the real one.
    intruder = node_processes("n0", "--jwt-secret", "another secret").start((first.url,), 20.0)
    assert [n["nodeId"] for n in _map(intruder.url, "another secret")["nodes"]] == ["n0"]
    assert [n["nodeId"] for n in _map(first.url, SECRET)["nodes"]] == ["n1", "n2", "n3"]
    assert "refused a /cluster link claiming to be 'n0'" in first.log_tail()


def test_processes_that_all_list_each_other_as_seeds_form_one_cluster(node_processes):
    ports = _free_ports(3)
    urls = [f"ws://127.0.0.1:{p}/ws" for p in ports]
    procs = [node_processes(f"n{i + 1}", port=ports[i]) for i in range(3)]
    jobs = [gevent.spawn(p.start, [u for j, u in enumerate(urls) if j != i], 25.0)
            for i, p in reversed(list(enumerate(procs)))]
    gevent.joinall(jobs, raise_error=True)
    assert [p.url for p in procs] == urls
    pmap = _wait_same_map(urls, ["n1", "n2", "n3"])
    assert pmap["version"] >= 2
