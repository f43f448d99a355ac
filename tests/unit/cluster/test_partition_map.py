"""PartitionMap validation and LivePartitionMap's version rules and waiting."""
from __future__ import annotations

import time

import gevent
import pytest

from topgun.cluster.partition_map import LivePartitionMap, PartitionMap, single_node_map
from topgun.errors import RemoteProtocolError
from topgun.protocol import messages as m
from topgun.protocol.hashing import PARTITION_COUNT


def frame(version: int = 3, nodes=("a", "b"), count: int = PARTITION_COUNT, owners=None, status=None) -> m.PartitionMap:
    owners = owners or [nodes[p % len(nodes)] for p in range(PARTITION_COUNT)]
    return m.PartitionMap(
        version=version, partition_count=count,
        nodes=[m.NodeInfo(n, {"websocket": f"ws://{n}:1"}, (status or {}).get(n, "ACTIVE")) for n in nodes],
        partitions=[m.PartitionInfo(p, owners[p], (nodes[(p + 1) % len(nodes)],)) for p in range(len(owners))])


def test_from_message_builds_owner_table() -> None:
    pmap = PartitionMap.from_message(frame(), source="a")
    assert pmap.version == 3
    assert pmap.owner(0) == "a" and pmap.owner(1) == "b"
    assert pmap.backups_of(0) == ("b",)
    assert pmap.url_of("b") == "ws://b:1"
    assert pmap.connectable() == {"a": "ws://a:1", "b": "ws://b:1"}
    assert len(pmap.partitions_of("a")) == 136


def test_partition_count_other_than_271_is_refused_clearly() -> None:
    with pytest.raises(RemoteProtocolError, match="partitionCount is 64.*271"):
        PartitionMap.from_message(frame(count=64), source="a")


def test_unknown_owner_and_missing_partitions_are_refused() -> None:
    owners = ["a"] * PARTITION_COUNT
    owners[7] = "ghost"
    with pytest.raises(RemoteProtocolError, match="unknown node 'ghost'"):
        PartitionMap.from_message(frame(owners=owners))
    with pytest.raises(RemoteProtocolError, match="no owner"):
        PartitionMap.from_message(frame(owners=["a"] * 200))


def test_failed_nodes_are_not_connected_unless_they_own_partitions() -> None:
    pmap = PartitionMap.from_message(frame(nodes=("a", "b", "c"), owners=["a"] * PARTITION_COUNT,
                                           status={"c": "FAILED"}))
    assert set(pmap.connectable()) == {"a", "b"}


def test_single_node_map_owns_everything() -> None:
    pmap = single_node_map("ws://h:1", "ws://h:1")
    assert pmap.version == 0 and pmap.synthetic
    assert set(pmap.owners) == {"ws://h:1"}


def test_apply_only_newer_unless_forced() -> None:
    live = LivePartitionMap()
    assert live.version == -1
    assert live.apply(PartitionMap.from_message(frame(version=5)))
    assert not live.apply(PartitionMap.from_message(frame(version=5)))
    assert not live.apply(PartitionMap.from_message(frame(version=4)))
    assert live.version == 5
    assert live.apply(PartitionMap.from_message(frame(version=1)), force=True)
    assert live.version == 1 and live.applied == 2


def test_wait_for_newer_returns_at_once_when_already_newer() -> None:
    live = LivePartitionMap()
    live.apply(PartitionMap.from_message(frame(version=2)))
    start = time.monotonic()
    assert live.wait_for_newer(1, timeout=5.0)
    assert time.monotonic() - start < 0.1


def test_wait_for_newer_wakes_when_a_map_lands_and_times_out_otherwise() -> None:
    live = LivePartitionMap()
    live.apply(PartitionMap.from_message(frame(version=2)))
    assert not live.wait_for_newer(2, timeout=0.01)
    g = gevent.spawn_later(0.02, live.apply, PartitionMap.from_message(frame(version=3)))
    start = time.monotonic()
    assert live.wait_for_newer(2, timeout=5.0)
    assert time.monotonic() - start < 1.0
    g.join(timeout=1)
