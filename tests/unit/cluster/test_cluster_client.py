"""ClusterProvider end to end over the in-memory FakeCluster (real Connection and WriteEngine, no sockets)."""
from __future__ import annotations

import time
from typing import Any, Callable, List

import gevent
import pytest
from fakecluster import FakeCluster, url_of

import topgun
from topgun.cluster.provider import ClusterProvider
from topgun.errors import ConfigurationError, RemoteProtocolError


def wait_until(check: Callable[[], bool], timeout: float = 3.0) -> None:
    with gevent.Timeout(timeout, AssertionError("condition not met in time")):
        while not check():
            gevent.sleep(0.002)


def make_client(fc: FakeCluster, seeds: Any = None, **kw: Any) -> topgun.TopGunClient:
    cluster = topgun.ClusterConfig(seeds=seeds or [url_of(sorted(fc.nodes)[0])],
                                   **{k: kw.pop(k) for k in list(kw) if k in
                                      ("connections_per_node", "smart_routing", "partition_map_refresh_interval",
                                       "retry")})
    kw.setdefault("connect_timeout", 2.0)
    kw.setdefault("request_timeout", 3.0)
    return topgun.TopGunClient(cluster=cluster, transport_factory=fc.transport_factory, ping_interval=None, **kw)


@pytest.fixture
def client_factory() -> Any:
    made: List[topgun.TopGunClient] = []

    def make(fc: FakeCluster, **kw: Any) -> topgun.TopGunClient:
        c = make_client(fc, **kw)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


# -- configuration (issue #4, item 1) ----------------------------------------------------------

def test_cluster_config_defaults_and_validation() -> None:
    cfg = topgun.ClusterConfig(seeds=["ws://127.0.0.1:8080"])
    assert (cfg.connections_per_node, cfg.smart_routing, cfg.partition_map_refresh_interval) == (2, True, 30.0)
    assert topgun.ClusterConfig(seeds="ws://h:1").seeds == ("ws://h:1",)
    with pytest.raises(ConfigurationError, match="at least one seed"):
        topgun.ClusterConfig(seeds=[])
    with pytest.raises(ConfigurationError, match="ws://host:port"):
        topgun.ClusterConfig(seeds=["http://h:1"])
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ConfigurationError, match="connections_per_node"):
            topgun.ClusterConfig(seeds=["ws://h:1"], connections_per_node=bad)
    with pytest.raises(ConfigurationError, match="partition_map_refresh_interval"):
        topgun.ClusterConfig(seeds=["ws://h:1"], partition_map_refresh_interval=0)
    with pytest.raises(TypeError):
        topgun.ClusterConfig(seeds=["ws://h:1"], conections_per_node=2)  # type: ignore[call-arg]


# -- discovery and routing ---------------------------------------------------------------------

def test_connects_to_every_node_in_the_map_not_only_the_seed(fake_cluster: Any, client_factory: Any) -> None:
    fc = fake_cluster(["a", "b", "c"])
    client = client_factory(fc)
    cluster: ClusterProvider = client.cluster
    assert cluster.map_version == 1
    states = cluster.node_states()
    assert set(states) == {"a", "b", "c"}
    assert all(s.state == "CONNECTED" and s.open_connections == 2 for s in states.values())
    assert sum(s.partitions for s in states.values()) == 271
    assert len(client.runtime.provider.open_connections()) == 6


def test_writes_go_to_the_partition_owner(fake_cluster: Any, client_factory: Any) -> None:
    fc = fake_cluster(["a", "b", "c"])
    client = client_factory(fc)
    users = client.map("users")
    keys = [f"user:{i}" for i in range(150)]
    users.put_all({k: {"i": i} for i, k in enumerate(keys)})
    for k in keys:
        users.set(k, {"again": True})
    for node in fc.nodes.values():
        assert node.received and all(fc.owner_of(k) == node.node_id for k in node.received)
    assert all(client.cluster.owner_of(k) == fc.owner_of(k) for k in keys)
    stats = client.cluster.stats
    assert stats["direct"] >= 300 and stats["forwarded"] == 0 and stats["misses"] == 0


def test_a_batch_of_writes_becomes_one_op_batch_per_owner(fake_cluster: Any, client_factory: Any) -> None:
    fc = fake_cluster(["a", "b", "c"])
    client = client_factory(fc, connections_per_node=1)
    client.map("users").put_all({f"user:{i}": i for i in range(300)})
    assert [fc.nodes[n].batches for n in "abc"] == [1, 1, 1]
    assert all(fc.owner_of(k) == n.node_id for n in fc.nodes.values() for k in n.received)


def test_a_key_always_uses_the_same_connection_of_its_node(fake_cluster: Any, client_factory: Any) -> None:
    fc = fake_cluster(["a"])
    client = client_factory(fc, connections_per_node=3)
    provider = client.cluster
    conns = {provider.connection_for_key(f"k{i}") for i in range(100)}
    assert len(conns) == 3
    assert all(provider.connection_for_key("k7") is provider.connection_for_key("k7") for _ in range(5))


def test_dumb_routing_goes_through_any_node(fake_cluster: Any, client_factory: Any) -> None:
    fc = fake_cluster(["a", "b", "c"])
    client = client_factory(fc, smart_routing=False)
    users = client.map("users")
    users.put_all({f"user:{i}": i for i in range(200)})
    stats = client.cluster.stats
    assert stats["forwarded"] > 0 and stats["direct"] + stats["forwarded"] >= 200
    assert sum(len(n.received) for n in fc.nodes.values()) == 200
    misrouted = [k for n in fc.nodes.values() for k in n.received if fc.owner_of(k) != n.node_id]
    assert misrouted


def test_a_map_with_the_wrong_partition_count_is_refused(fake_cluster: Any) -> None:
    fc = fake_cluster(["a"], partition_count=64)
    with gevent.Timeout(1.0):                                      # fails fast, not at connect_timeout
        with pytest.raises(RemoteProtocolError, match="partitionCount is 64"):
            make_client(fc)


def test_a_server_that_never_sends_a_map_is_one_node_owning_everything(fake_cluster: Any, client_factory: Any,
                                                                      monkeypatch: Any) -> None:
    monkeypatch.setattr("topgun.cluster.provider.MAP_WAIT_S", 0.1)
    fc = fake_cluster(["solo"], answer_map_requests=False, push_on_connect=False)
    client = client_factory(fc)
    assert client.cluster.map_version == 0
    assert client.cluster.owner_of("anything") == url_of("solo")
    client.map("m").set("k", 1)
    assert fc.nodes["solo"].received == ["k"]


def test_older_maps_are_ignored_and_newer_ones_followed(fake_cluster: Any, client_factory: Any) -> None:
    fc = fake_cluster(["a", "b"], version=5)
    updates: List[int] = []
    client = client_factory(fc)
    client.cluster.on_map_updated = lambda pmap: updates.append(pmap.version)
    fc.publish(bump=-2)                                   # v3: stale, ignored
    gevent.sleep(0.02)
    assert client.cluster.map_version == 5 and updates == []
    fc.publish(["a", "b", "c"], bump=5)                   # v8 adds node c
    wait_until(lambda: client.cluster.map_version == 8)
    wait_until(lambda: client.cluster.node_states().get("c") is not None
               and client.cluster.node_states()["c"].state == "CONNECTED")
    assert updates == [8]
    key = next(k for k in (f"k{i}" for i in range(1000)) if fc.owner_of(k) == "c")
    client.map("m").set(key, 1)
    assert fc.nodes["c"].received == [key]


def test_a_node_the_map_drops_is_disconnected(fake_cluster: Any, client_factory: Any) -> None:
    fc = fake_cluster(["a", "b", "c"])
    client = client_factory(fc)
    fc.publish(["a", "b"])
    wait_until(lambda: "c" not in client.cluster.node_states())
    wait_until(lambda: not fc.nodes["c"].conns or all(t.closed for t in fc.nodes["c"].conns))
    client.map("m").put_all({f"k{i}": i for i in range(50)})
    assert not fc.nodes["c"].received


# -- failover ------------------------------------------------------------------------------------

def test_killed_owner_writes_wait_for_the_new_map_then_succeed(fake_cluster: Any, client_factory: Any) -> None:
    fc = fake_cluster(["a", "b", "c"])
    lost: List[str] = []
    client = client_factory(fc)
    cluster = client.cluster
    cluster.on_node_lost = lambda node_id, exc: lost.append(node_id)
    key = next(k for k in (f"k{i}" for i in range(1000)) if fc.owner_of(k) == "b")
    fc.nodes["b"].hold_acks = True
    pending = client.map("m").set_async(key, "v1", timeout=5.0)
    wait_until(lambda: fc.nodes["b"].received == [key])
    fc.kill("b")
    wait_until(lambda: lost == ["b"])
    assert cluster.node_states()["b"].state == "DOWN"
    assert sum(n.map_requests for n in fc.nodes.values()) >= 1    # asked another node for a map
    gevent.sleep(0.05)
    assert not pending.ready()                                    # held: owner down, no new map yet
    fc.publish(["a", "c"])
    assert pending.get(timeout=3.0) in ("REPLICATED", "APPLIED")
    assert fc.store[("m", key)] == "v1"
    assert cluster.stats["misses"] >= 1 and cluster.stats["retries"] >= 1
    assert "b" not in cluster.node_states()


def test_forward_policy_sends_to_the_backup_while_the_owner_is_down(fake_cluster: Any,
                                                                    client_factory: Any) -> None:
    fc = fake_cluster(["a", "b", "c"])
    client = client_factory(fc)
    client.cluster.router.owner_down = "forward"
    key = next(k for k in (f"k{i}" for i in range(1000)) if fc.owner_of(k) == "b")
    fc.kill("b")
    wait_until(lambda: not client.cluster._pool.routable("b"))
    client.map("m").set(key, "v", timeout=2.0)                     # no new map needed
    assert fc.nodes["c"].received == [key]                          # b's backup in the fake map


def test_reconnects_after_every_node_restarts_with_lower_versions(fake_cluster: Any,
                                                                  client_factory: Any) -> None:
    fc = fake_cluster(["a", "b"], version=10)
    connected: List[str] = []
    client = client_factory(fc, reconnect=topgun.ReconnectPolicy(initial_s=0.01, max_s=0.05))
    client.cluster.on_node_connected = connected.append
    users = client.map("users")
    users.set("before", 1)
    for n in ("a", "b"):
        fc.kill(n)
    wait_until(lambda: not client.connected)
    fc.version = 1                                                  # restarted cluster counts again
    for n in ("a", "b"):
        fc.revive(n)
    users.set("after", 2, timeout=3.0)                              # same application code
    wait_until(lambda: client.cluster.map_version == 1)
    wait_until(lambda: sorted(connected) == ["a", "b"])


def test_periodic_refresh_keeps_one_request_in_flight(fake_cluster: Any, client_factory: Any) -> None:
    fc = fake_cluster(["a"], answer_map_requests=False)
    client_factory(fc, partition_map_refresh_interval=0.01)
    gevent.sleep(0.3)
    # Unanswered requests block the next one for REFRESH_TIMEOUT_S (1 s): at most 2 in 0.3 s.
    assert 1 <= fc.nodes["a"].map_requests <= 2


def test_the_partition_map_is_refreshed_at_the_configured_interval(fake_cluster: Any, client_factory: Any) -> None:
    fc = fake_cluster(["a"])
    started = time.monotonic()
    client_factory(fc, partition_map_refresh_interval=0.05)
    node = fc.nodes["a"]
    # The start-up request alone is 1: six need the 50 ms interval (a 30 s one sends no second).
    wait_until(lambda: node.map_requests >= 6, timeout=5.0)
    elapsed = time.monotonic() - started
    # Jittered to 0.8-1.2 x the interval: never more than one per 40 ms, plus the start-up one.
    assert node.map_requests <= 2 + elapsed / 0.04


def test_updates_right_behind_the_query_answer_are_kept(fake_cluster: Any, client_factory: Any) -> None:
    fc = fake_cluster(["a", "b"])
    fc.store[("chat", "old")] = 1
    fc.updates_behind_resp = [("held", 2)]
    client = client_factory(fc)
    changes: List[Any] = []
    sub = client.map("chat").subscribe(changes.append)
    assert sub.results == {"old": 1, "held": 2}
    node = sub.conn.node_id
    fc.store[("chat", "held")] = 2
    fc.updates_behind_resp = [("held-again", 3)]
    fc.kill(node)                                   # resubscribes on the other node
    wait_until(lambda: sub.resubscribes == 1)
    assert sub.results == {"old": 1, "held": 2, "held-again": 3}
    assert [c.kind for c in changes if c.key == "held-again"] == ["ENTER"]
    sub.close()


def test_client_close_ends_every_greenlet(fake_cluster: Any) -> None:
    fc = fake_cluster(["a", "b"])
    client = make_client(fc)
    group = client.cluster._pool.group
    assert len(group) > 0
    client.close()
    assert len(group) == 0 and not client.cluster.open_connections()
