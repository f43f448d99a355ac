"""PartitionRouter over a stub pool: owner routing, misses, both owner-down policies, dumb mode."""
from __future__ import annotations

from typing import Dict, List, Optional

import pytest

from topgun.cluster.partition_map import LivePartitionMap, PartitionMap
from topgun.cluster.router import PartitionRouter
from topgun.errors import ClusterUnavailable
from topgun.protocol import messages as m
from topgun.protocol.hashing import PARTITION_COUNT, partition_id


class StubNode:
    def __init__(self, ever_connected: bool) -> None:
        self.ever_connected = ever_connected


class StubConn:
    def __init__(self, node_id: str) -> None:
        self.node_id = node_id


class StubPool:
    """Nodes in ``up`` are routable; nodes in ``lost`` were connected once and are now down."""

    def __init__(self, up: List[str], lost: List[str] = ()) -> None:
        self.up = set(up)
        self.lost = set(lost)
        self.conns: Dict[str, StubConn] = {n: StubConn(n) for n in list(up) + list(lost)}

    def connection(self, node_id: str, key: str) -> Optional[StubConn]:
        return self.conns[node_id] if node_id in self.up else None

    def node(self, node_id: str) -> Optional[StubNode]:
        if node_id in self.up or node_id in self.lost:
            return StubNode(True)
        return StubNode(False) if node_id in self.conns else None

    def routable_nodes(self) -> List[str]:
        return sorted(self.up)


def live_map(nodes=("a", "b", "c"), version: int = 1) -> LivePartitionMap:
    frame = m.PartitionMap(version, PARTITION_COUNT, [m.NodeInfo(n, {"websocket": f"ws://{n}:1"}) for n in nodes],
                           [m.PartitionInfo(p, nodes[p % len(nodes)], (nodes[(p + 1) % len(nodes)],))
                            for p in range(PARTITION_COUNT)])
    live = LivePartitionMap()
    live.apply(PartitionMap.from_message(frame))
    return live


def key_owned_by(node: str, nodes=("a", "b", "c")) -> str:
    return next(k for k in (f"k{i}" for i in range(10_000)) if nodes[partition_id(k) % len(nodes)] == node)


def test_smart_routing_sends_each_key_to_its_owner() -> None:
    router = PartitionRouter(live_map(), StubPool(["a", "b", "c"]))  # type: ignore[arg-type]
    for node in "abc":
        key = key_owned_by(node)
        assert router.owner_of(key) == node
        assert router.route(key).node_id == node
    assert router.stats.as_dict() == {"direct": 3, "forwarded": 0, "misses": 0, "retries": 0}


def test_lost_owner_raises_retryable_cluster_unavailable_by_default() -> None:
    router = PartitionRouter(live_map(), StubPool(["b", "c"], lost=["a"]))  # type: ignore[arg-type]
    with pytest.raises(ClusterUnavailable, match="owner a is unreachable") as info:
        router.route(key_owned_by("a"))
    assert info.value.retryable
    assert router.stats.misses == 1


def test_lost_owner_forwards_to_backup_with_forward_policy() -> None:
    router = PartitionRouter(live_map(), StubPool(["b", "c"], lost=["a"]), owner_down="forward")  # type: ignore[arg-type]
    assert router.route(key_owned_by("a")).node_id == "b"   # a's partitions are backed up on b
    assert router.stats.forwarded == 1 and router.stats.misses == 1


def test_owner_never_reached_is_forwarded_through_a_live_node() -> None:
    pool = StubPool(["b"])
    pool.conns["a"] = StubConn("a")   # in the pool, still connecting
    router = PartitionRouter(live_map(("a", "b")), pool)  # type: ignore[arg-type]
    assert router.route(key_owned_by("a", ("a", "b"))).node_id == "b"
    assert router.stats.forwarded == 1


def test_dumb_routing_is_stable_per_key_and_counts_direct_and_forwarded() -> None:
    router = PartitionRouter(live_map(), StubPool(["a", "b", "c"]), smart=False)  # type: ignore[arg-type]
    keys = [f"user:{i}" for i in range(300)]
    first = [router.route(k).node_id for k in keys]
    assert [router.route(k).node_id for k in keys] == first
    assert set(first) == {"a", "b", "c"}
    stats = router.stats
    assert stats.direct + stats.forwarded == 600 and stats.forwarded > 0 and stats.misses == 0


def test_no_map_or_no_node_is_retryable() -> None:
    router = PartitionRouter(LivePartitionMap(), StubPool(["a"]))  # type: ignore[arg-type]
    with pytest.raises(ClusterUnavailable, match="no partition map") as info:
        router.route("k")
    assert info.value.retryable
    router = PartitionRouter(live_map(), StubPool([]), smart=False)  # type: ignore[arg-type]
    with pytest.raises(ClusterUnavailable, match="no cluster node"):
        router.route("k")


def test_unknown_owner_down_policy_is_rejected() -> None:
    with pytest.raises(ValueError):
        PartitionRouter(live_map(), StubPool([]), owner_down="pray")  # type: ignore[arg-type]
