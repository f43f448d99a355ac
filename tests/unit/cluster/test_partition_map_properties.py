"""Property-based tests of partition-map validation (issue 10, item 2).

Generated valid maps are accepted and route exactly as the frame says, after a trip through
the codec. The same maps with any one field broken are refused with RemoteProtocolError, and
a LivePartitionMap holding a good map still holds it afterwards.
"""
from __future__ import annotations

import copy
import random
from typing import Any, Callable, Dict, List, Tuple

import gevent
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from topgun.cluster.partition_map import MAX_VERSION, LivePartitionMap, PartitionMap
from topgun.errors import RemoteProtocolError
from topgun.protocol import codec
from topgun.protocol import messages as m
from topgun.protocol.hashing import PARTITION_COUNT

node_ids = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=8)
hosts = st.sampled_from(["127.0.0.1", "localhost", "node-1.internal", "[::1]"])


@st.composite
def valid_maps(draw: Any) -> Dict[str, Any]:
    ids = draw(st.lists(node_ids, min_size=1, max_size=6, unique=True))
    nodes = [{"nodeId": n,
              "endpoints": {"websocket": f"{draw(st.sampled_from(['ws', 'wss']))}://{draw(hosts)}:"
                                         f"{draw(st.integers(1, 65535))}{draw(st.sampled_from(['', '/ws']))}"},
              "status": draw(st.sampled_from(["ACTIVE", "JOINING", "LEAVING", "SUSPECTED", "FAILED"]))}
             for n in ids]
    # The 271 partitions come from one drawn seed: drawing each of them costs seconds per example.
    rng = random.Random(draw(st.integers(0, 2**32 - 1)))
    order = list(range(PARTITION_COUNT))
    rng.shuffle(order)
    partitions = [{"partitionId": p, "ownerNodeId": rng.choice(ids),
                   "backupNodeIds": rng.sample(ids, rng.randint(0, min(2, len(ids))))} for p in order]
    d: Dict[str, Any] = {"version": draw(st.integers(0, MAX_VERSION)), "partitionCount": PARTITION_COUNT,
                         "nodes": nodes, "partitions": partitions}
    if draw(st.booleans()):
        d["generatedAt"] = draw(st.integers(0, 2**53))
    return d


def decoded(d: Dict[str, Any]) -> m.PartitionMap:
    gevent.sleep(0)  # one example after another must not hold this thread's hub (tests/threads/test_hub_monitor.py)
    msg = codec.decode(codec.encode_wire({"type": "PARTITION_MAP", "payload": d}))
    assert isinstance(msg, m.PartitionMap)
    return msg


def _set(path: Tuple[Any, ...], value: Any) -> Callable[[Dict[str, Any]], None]:
    def apply(d: Dict[str, Any]) -> None:
        target = d
        for step in path[:-1]:
            target = target[step]
        target[path[-1]] = value
    return apply


def _duplicate_node(d: Dict[str, Any]) -> None:
    d["nodes"].append(copy.deepcopy(d["nodes"][0]))


def _duplicate_partition(d: Dict[str, Any]) -> None:
    d["partitions"][1]["partitionId"] = d["partitions"][0]["partitionId"]


def _drop_partition(d: Dict[str, Any]) -> None:
    d["partitions"].pop()


def _drop_endpoint(d: Dict[str, Any]) -> None:
    d["nodes"][0]["endpoints"] = {}


# Each breaks exactly one field of an otherwise valid map.
BREAKERS: List[Tuple[str, Callable[[Dict[str, Any]], None]]] = [
    ("version too big", _set(("version",), MAX_VERSION + 1)),
    ("version 2**64-1", _set(("version",), 2**64 - 1)),
    ("version negative", _set(("version",), -1)),
    ("version a string", _set(("version",), "7")),
    ("version a bool", _set(("version",), True)),
    ("version a float", _set(("version",), 3.5)),
    ("partitionCount", _set(("partitionCount",), 270)),
    ("generatedAt a string", _set(("generatedAt",), "now")),
    ("endpoint http", _set(("nodes", 0, "endpoints", "websocket"), "http://127.0.0.1:1")),
    ("endpoint without port", _set(("nodes", 0, "endpoints", "websocket"), "ws://127.0.0.1")),
    ("endpoint without host", _set(("nodes", 0, "endpoints", "websocket"), "ws://:8080")),
    ("endpoint not a string", _set(("nodes", 0, "endpoints", "websocket"), 8080)),
    ("endpoint missing", _drop_endpoint),
    ("node id empty", _set(("nodes", 0, "nodeId"), "")),
    ("node id an int", _set(("nodes", 0, "nodeId"), 7)),
    ("node listed twice", _duplicate_node),
    ("status not a string", _set(("nodes", 0, "status"), 1)),
    ("partition id out of range", _set(("partitions", 0, "partitionId"), PARTITION_COUNT)),
    ("partition id a string", _set(("partitions", 0, "partitionId"), "0")),
    ("partition id a bool", _set(("partitions", 0, "partitionId"), False)),
    ("partition listed twice", _duplicate_partition),
    ("partition missing", _drop_partition),
    ("owner unknown", _set(("partitions", 0, "ownerNodeId"), "no-such-node!")),
    ("owner not a string", _set(("partitions", 0, "ownerNodeId"), 1)),
    ("backups not strings", _set(("partitions", 0, "backupNodeIds"), [1])),
]


@settings(max_examples=60, deadline=None)
@given(d=valid_maps())
def test_valid_maps_are_accepted_and_route_as_the_frame_says(d: Dict[str, Any]) -> None:
    pmap = PartitionMap.from_message(decoded(d), source="seed")
    assert pmap.version == d["version"]
    by_pid = {p["partitionId"]: p for p in d["partitions"]}
    assert [pmap.owner(p) for p in range(PARTITION_COUNT)] == [by_pid[p]["ownerNodeId"] for p in range(PARTITION_COUNT)]
    assert all(pmap.backups_of(p) == tuple(by_pid[p]["backupNodeIds"]) for p in range(PARTITION_COUNT))
    assert {n: pmap.url_of(n) for n in pmap.nodes} == {n["nodeId"]: n["endpoints"]["websocket"] for n in d["nodes"]}
    assert set(pmap.owners) <= set(pmap.connectable())
    # The routing view survives a second trip: encode what it routes, decode, same routing.
    again = PartitionMap.from_message(decoded(copy.deepcopy(d)))
    assert (again.owners, again.backups, dict(again.nodes)) == (pmap.owners, pmap.backups, dict(pmap.nodes))


@settings(max_examples=100, deadline=None)
@given(good=valid_maps(), other=valid_maps(), breaker=st.sampled_from(BREAKERS))
def test_a_map_with_one_broken_field_is_refused_and_the_current_map_kept(
        good: Dict[str, Any], other: Dict[str, Any], breaker: Tuple[str, Callable[[Dict[str, Any]], None]]) -> None:
    live = LivePartitionMap()
    assert live.apply(PartitionMap.from_message(decoded(good)))
    before = (live.current, live.applied)
    name, breaks = breaker
    bad = copy.deepcopy(other)
    if "generatedAt" in name:
        bad["generatedAt"] = 0
    bad["version"] = min(good["version"] + 1, MAX_VERSION) if "version" not in name else bad["version"]
    breaks(bad)
    with pytest.raises(RemoteProtocolError, match="refused partition map"):
        pmap = PartitionMap.from_message(decoded(bad))
        live.apply(pmap)
    assert (live.current, live.applied) == before


def test_a_map_with_more_nodes_than_allowed_is_refused_at_any_bound() -> None:
    d = {"version": 1, "partitionCount": PARTITION_COUNT,
         "nodes": [{"nodeId": f"n{i}", "endpoints": {"websocket": f"ws://127.0.0.1:{1000 + i}"}} for i in range(5)],
         "partitions": [{"partitionId": p, "ownerNodeId": "n0"} for p in range(PARTITION_COUNT)]}
    assert len(PartitionMap.from_message(decoded(d), max_nodes=5).nodes) == 5
    with pytest.raises(RemoteProtocolError, match="5 nodes, more than the 4"):
        PartitionMap.from_message(decoded(d), max_nodes=4)
