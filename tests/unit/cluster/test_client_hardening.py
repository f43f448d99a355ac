"""Issue 10 (client side) over the in-memory FakeCluster: hostile maps, bounded dialling,
reconnect counting, the unreachable-node ConnectTimeout and the lost-partitions warning."""
from __future__ import annotations

import logging
import time
from typing import Any, Dict, List

import gevent
import pytest
from fakecluster import FakeCluster, url_of
from test_cluster_client import make_client, wait_until

import topgun
from topgun.cluster.partition_map import MAX_NODES, PartitionMap, lost_partitions
from topgun.cluster.pool import MAX_DIALS
from topgun.errors import ConnectionLost, ConnectTimeout, RemoteProtocolError, TopGunError
from topgun.protocol import codec
from topgun.protocol import messages as m
from topgun.protocol.hashing import PARTITION_COUNT


def payload(nodes: List[str], owners: List[str], *, version: int = 1, url: Any = url_of) -> Dict[str, Any]:
    return {"version": version, "partitionCount": PARTITION_COUNT,
            "nodes": [{"nodeId": n, "endpoints": {"websocket": url(n)}, "status": "ACTIVE"} for n in nodes],
            "partitions": [{"partitionId": p, "ownerNodeId": owners[p % len(owners)],
                            "backupNodeIds": [owners[(p + 1) % len(owners)]]} for p in range(PARTITION_COUNT)],
            "generatedAt": 1}


def decode(d: Dict[str, Any]) -> m.PartitionMap:
    # Let the hub run between parses: a test parsing maps back to back would otherwise hold it
    # past the hub monitor's 0.1 s (one 1,000-node map takes about 30 ms to decode and check).
    gevent.sleep(0)
    msg = codec.decode(codec.encode_wire({"type": "PARTITION_MAP", "payload": d}))
    assert isinstance(msg, m.PartitionMap)
    return msg


def push(fc: FakeCluster, d: Dict[str, Any]) -> None:
    frame = codec.encode_wire({"type": "PARTITION_MAP", "payload": d})
    for node in fc.nodes.values():
        for t in list(node.conns):
            try:
                t.send(frame)
            except ConnectionLost:
                pass


@pytest.fixture
def client_factory() -> Any:
    made: List[topgun.TopGunClient] = []

    def make(fc: FakeCluster, **kw: Any) -> topgun.TopGunClient:
        made.append(make_client(fc, **kw))
        return made[-1]

    yield make
    for c in made:
        c.close()


# -- item 2: validation at the boundary -------------------------------------------------------

@pytest.mark.parametrize("version", [2**64 - 1, 2**32, -1, "7", True, 1.5])
def test_maps_with_a_version_that_is_not_a_u32_int_are_refused(version: Any) -> None:
    d = payload(["a", "b"], ["a", "b"])
    d["version"] = version
    with pytest.raises(RemoteProtocolError, match="version must be an int within 0..4294967295"):
        PartitionMap.from_message(decode(d))


@pytest.mark.parametrize("url", ["http://a.test:1", "ws://a.test", "ws://:1", "", None, 7, "ws://a.test:99999"])
def test_maps_with_a_missing_or_non_ws_endpoint_are_refused(url: Any) -> None:
    d = payload(["a", "b"], ["a", "b"])
    d["nodes"][0]["endpoints"] = {"websocket": url} if url is not None else {}
    with pytest.raises(RemoteProtocolError, match="node 'a' has .*(websocket endpoint|no websocket)"):
        PartitionMap.from_message(decode(d))


def test_maps_with_too_many_nodes_duplicates_or_junk_ids_are_refused() -> None:
    many = [f"n{i}" for i in range(MAX_NODES + 1)]
    with pytest.raises(RemoteProtocolError, match="1001 nodes, more than the 1000"):
        PartitionMap.from_message(decode(payload(many, many[:3])))
    assert len(PartitionMap.from_message(decode(payload(many[:MAX_NODES], many[:3]))).nodes) == MAX_NODES
    with pytest.raises(RemoteProtocolError, match="more than the 10"):
        PartitionMap.from_message(decode(payload(many[:11], many[:3])), max_nodes=10)
    d = payload(["a", "b", "a"], ["a", "b"])
    with pytest.raises(RemoteProtocolError, match="'a' is listed twice"):
        PartitionMap.from_message(decode(d))
    d = payload(["a", "b"], ["a", "b"])
    d["partitions"][5]["partitionId"] = "7"
    with pytest.raises(RemoteProtocolError, match="partition id '7'"):
        PartitionMap.from_message(decode(d))
    d = payload(["a", "b"], ["a", "b"])
    d["partitions"][5]["partitionId"] = 4
    with pytest.raises(RemoteProtocolError, match="partition 4 is listed twice"):
        PartitionMap.from_message(decode(d))
    d = payload(["a", "b"], ["a", "b"])
    d["nodes"][1]["nodeId"] = 2
    with pytest.raises(RemoteProtocolError, match="node id 2"):
        PartitionMap.from_message(decode(d))


def test_only_owners_and_live_backups_are_dialled_not_every_listed_node() -> None:
    nodes = [f"n{i}" for i in range(MAX_NODES)]
    pmap = PartitionMap.from_message(decode(payload(nodes, ["n1", "n2", "n3"])))
    assert sorted(pmap.connectable()) == ["n1", "n2", "n3"]


def test_a_refused_map_after_a_good_one_changes_nothing(fake_cluster: Any, client_factory: Any,
                                                        caplog: Any) -> None:
    fc = fake_cluster(["a", "b", "c"])
    client = client_factory(fc)
    wait_until(lambda: len(client.cluster.node_states()) == 3)
    before = (client.cluster.map_version, client.cluster.partition_map, sorted(client.cluster.node_states()))
    bad = payload(["a", "b", "c", "evil"], ["evil"], version=99,
                  url=lambda n: "http://evil.test:1" if n == "evil" else url_of(n))
    with caplog.at_level(logging.ERROR, logger="topgun.cluster"):
        push(fc, bad)
        wait_until(lambda: "refused partition map v99" in caplog.text)
    assert "keeping partition map v1" in caplog.text
    assert (client.cluster.map_version, client.cluster.partition_map,
            sorted(client.cluster.node_states())) == before
    users = client.map("users")
    users.set("k", 1, timeout=2.0)
    assert fc.store[("users", "k")] == 1 and fc.nodes[fc.owner_of("k")].received == ["k"]


class HangingDials:
    """A transport factory: live nodes answer; dead ones hang until the connect timeout."""

    def __init__(self, fc: FakeCluster) -> None:
        self.fc = fc
        self.in_flight = 0
        self.most = 0
        self.dialled: List[str] = []

    def __call__(self, url: str, timeout: float) -> Any:
        if any(n.url == url.rstrip("/") for n in self.fc.nodes.values()):
            return self.fc.transport_factory(url, timeout)
        self.dialled.append(url)
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        try:
            gevent.sleep(timeout)
        finally:
            self.in_flight -= 1
        raise ConnectTimeout(f"connect to {url} timed out")


def test_a_map_routing_to_hundreds_of_dead_nodes_dials_a_bounded_few_and_keeps_deadlines(
        fake_cluster: Any) -> None:
    fc = fake_cluster(["seed"])
    dead = [f"dead{i}" for i in range(PARTITION_COUNT)]
    nodes = ["seed"] + dead + [f"idle{i}" for i in range(MAX_NODES - 1 - len(dead))]
    fc.map_payload = lambda: payload(nodes, dead)  # type: ignore[method-assign]
    dials = HangingDials(fc)
    cluster = topgun.ClusterConfig(seeds=[url_of("seed")], retry=topgun.RetryPolicy(deadline_s=2.0))
    client = topgun.TopGunClient(cluster=cluster, transport_factory=dials, ping_interval=None, wait_connected=False,
                                 connect_timeout=1.0, request_timeout=2.0)
    try:
        wait_until(lambda: client.cluster.map_version == 1)
        wait_until(lambda: dials.most >= MAX_DIALS)
        users = client.map("users")
        for call in (lambda: users.get("k", timeout=2.0), lambda: users.put_all({"a": 1, "b": 2}, timeout=2.0)):
            start = time.monotonic()
            with pytest.raises(TopGunError):
                call()
            assert time.monotonic() - start < 2.0 + 1.5
        assert dials.most <= MAX_DIALS
        assert client.cluster._pool.max_dialing <= MAX_DIALS
        assert not any("idle" in u for u in dials.dialled)
    finally:
        client.close()


# -- item 6: ConnectTimeout names the dead endpoints; reconnects are counted -------------------

def test_connect_timeout_names_the_unreachable_owner_not_the_reachable_seed(fake_cluster: Any) -> None:
    fc = fake_cluster(["seed"])
    fc.map_payload = lambda: payload(["seed", "gone"], ["gone"])  # type: ignore[method-assign]
    with pytest.raises(ConnectTimeout) as info:
        make_client(fc, connect_timeout=1.0)
    text = str(info.value)
    assert "gone at ws://gone.test:1" in text
    assert "connection refused" in text
    assert "no connection to ws://seed.test:1" not in text


def test_the_reconnects_counter_counts_each_restart_of_a_node(fake_cluster: Any, client_factory: Any) -> None:
    fc = fake_cluster(["a", "b", "c"])
    client = client_factory(fc, reconnect=topgun.ReconnectPolicy(initial_s=0.005, max_s=0.02))
    wait_until(lambda: all(s.state == "CONNECTED" for s in client.cluster.node_states().values())
               and len(client.cluster.node_states()) == 3)
    def state() -> str:
        node = client.cluster.node_states().get("c")
        return node.state if node is not None else "GONE"

    for i in range(20):
        fc.kill("c")
        wait_until(lambda: state() != "CONNECTED")
        if i % 2:  # every other time the map drops the node and lists it again, as a cluster does
            fc.publish(["a", "b"])
            wait_until(lambda: "c" not in client.cluster.node_states())
            fc.revive("c")
            fc.publish(["a", "b", "c"])
        else:
            fc.revive("c")
        wait_until(lambda: state() == "CONNECTED", timeout=5.0)
    assert client.cluster.node_states()["c"].reconnects == 20
    assert client.cluster.node_states()["a"].reconnects == 0


# -- item 7: a map change that loses a partition's owner and every backup ----------------------

def test_lost_partitions_needs_owner_and_all_backups_gone_in_one_change() -> None:
    three = PartitionMap.from_message(decode(payload(["a", "b", "c"], ["a", "b", "c"])))
    one = PartitionMap.from_message(decode(payload(["a"], ["a"], version=2)))
    two = PartitionMap.from_message(decode(payload(["a", "b"], ["a", "b"], version=2)))
    lost = lost_partitions(three, one)
    # Partition p is owned by the p % 3-th node and backed up by the next: only b's (backup c) are lost.
    assert lost == [p for p in range(PARTITION_COUNT) if p % 3 == 1]
    assert lost_partitions(three, two) == []
    assert lost_partitions(None, one) == []


def test_losing_two_of_three_nodes_at_once_warns_and_counts_but_one_does_not(fake_cluster: Any,
                                                                            client_factory: Any,
                                                                            caplog: Any) -> None:
    fc = fake_cluster(["a", "b", "c"])
    client = client_factory(fc)
    wait_until(lambda: len(client.cluster.node_states()) == 3)
    with caplog.at_level(logging.WARNING, logger="topgun.cluster"):
        fc.kill("c")
        fc.publish(["a", "b"])
        wait_until(lambda: client.cluster.map_version == 2)
    assert client.cluster.stats["partitions_lost"] == 0
    assert "lost their owner" not in caplog.text
    fc.revive("c")
    fc.publish(["a", "b", "c"])
    wait_until(lambda: client.cluster.map_version == 3)
    with caplog.at_level(logging.WARNING, logger="topgun.cluster"):
        fc.kill("b")
        fc.kill("c")
        fc.publish(["a"])
        wait_until(lambda: client.cluster.map_version == 4)
    records = [r for r in caplog.records if "lost their owner and every backup" in r.getMessage()]
    assert len(records) == 1 and records[0].levelno == logging.WARNING
    assert records[0].name.startswith("topgun.cluster")
    # b owned 90 partitions backed up on c; c's 90 were backed up on a, which survived.
    assert "90 partitions" in records[0].getMessage() and "b, c" in records[0].getMessage()
    assert client.cluster.stats["partitions_lost"] == 90
