"""Which map the client routes with when the nodes' maps disagree (TopGun 2.2.0: per-node versions)."""
from __future__ import annotations

import itertools
from typing import Any, Dict, List, Optional, Tuple

import gevent
from fakecluster import FakeCluster, url_of
from test_cluster_client import make_client, wait_until

from topgun.cluster.map_choice import MapChoice
from topgun.cluster.partition_map import NodeEntry, PartitionMap
from topgun.errors import ConnectionLost
from topgun.protocol import codec
from topgun.protocol.hashing import PARTITION_COUNT


def pmap(source: str, version: int, owners: List[str], failed: Tuple[str, ...] = ()) -> PartitionMap:
    ids = sorted(set(owners) | set(failed))
    nodes = {n: NodeEntry(n, url_of(n), "FAILED" if n in failed else "ACTIVE") for n in ids}
    table = tuple(owners[p % len(owners)] for p in range(PARTITION_COUNT))
    return PartitionMap(version, nodes, table, ((),) * PARTITION_COUNT, None, source)


def test_every_arrival_order_gives_the_same_trusted_map() -> None:
    # A 2.2.0 split view (probe_notes.md 13.3) and a stale joiner (13.5): versions say nothing.
    offers = [("r1", pmap("r1", 8, ["r1"], failed=("r2",))),
              ("r2", pmap("r2", 2, ["r2"], failed=("r1",))),
              ("r3", pmap("r3", 9, ["r1", "r3"]))]
    chosen = set()
    for order in itertools.permutations(offers):
        choice = MapChoice()
        for source, m in order:
            choice.offer(source, m)
        trusted = choice.trusted()
        assert trusted is not None
        chosen.add((trusted.source, trusted.version))
    assert chosen == {("r1", 8)}


def test_a_node_replaces_its_own_map_only_with_a_newer_one_until_it_is_forgotten() -> None:
    choice = MapChoice()
    assert choice.offer(None, pmap("seed", 3, ["a"])) and choice.trusted().source == "seed"   # provisional
    assert choice.offer("b", pmap("b", 5, ["a", "b"]))
    assert choice.trusted().source == "b"                     # a node's map beats a provisional one
    assert not choice.offer("b", pmap("b", 4, ["b"]))         # a late, older reply from the same node
    assert not choice.offer("b", pmap("b", 5, ["b"]))         # the same version again (push and reply): no reinstall
    assert choice.trusted().owners[0] == "a"                  # the first v5 is still the one held
    assert choice.offer("a", pmap("a", 1, ["a", "b"]))
    assert choice.trusted().source == "a"                     # lowest id, though its version is lower
    choice.forget("a")
    assert choice.trusted().source == "b"
    assert choice.offer("a", pmap("a", 1, ["a"]))             # restarted: counts from 1 again
    assert choice.sources() == {"a": 1, "b": 5}


class PerNodeViews(FakeCluster):
    """A FakeCluster whose nodes each report their own map (version, owners, statuses), as 2.2.0 nodes do."""

    def __init__(self, views: Dict[str, Tuple[int, List[str], Tuple[str, ...]]]) -> None:
        super().__init__(sorted(views), push_on_connect=False)
        self.views = dict(views)
        self._node_of: Dict[Any, str] = {}

    def transport_factory(self, url: str, timeout: float) -> Any:
        transport = super().transport_factory(url, timeout)
        self._node_of[self.greenlets[-1]] = next(n for n, node in self.nodes.items() if node.url == url.rstrip("/"))
        return transport

    def map_payload(self, node: Optional[str] = None) -> Dict[str, Any]:
        node = node or self._node_of.get(gevent.getcurrent())
        if node is None:
            return super().map_payload()
        version, owners, failed = self.views[node]
        ids = sorted(set(owners) | set(failed))
        return {"version": version, "partitionCount": PARTITION_COUNT, "generatedAt": 1,
                "nodes": [{"nodeId": n, "endpoints": {"websocket": url_of(n)},
                           "status": "FAILED" if n in failed else "ACTIVE"} for n in ids],
                "partitions": [{"partitionId": p, "ownerNodeId": owners[p % len(owners)], "backupNodeIds": []}
                               for p in range(PARTITION_COUNT)]}

    def push(self, node: str) -> None:
        frame = codec.encode_wire({"type": "PARTITION_MAP", "payload": self.map_payload(node)})
        for t in list(self.nodes[node].conns):
            try:
                t.send(frame)
            except ConnectionLost:      # the closed seed connection
                pass


def test_the_survivor_is_followed_although_its_version_is_lower_than_the_dead_masters() -> None:
    # Seen on a real 2-node 2.2.0 cluster: master r1 at v3, r2 at v1; r1 dies, r2 pushes v2.
    fc = PerNodeViews({"r1": (3, ["r1", "r2"], ()), "r2": (1, ["r1", "r2"], ())})
    client = make_client(fc, seeds=[url_of("r2")])
    try:
        wait_until(lambda: client.cluster.choice.sources() == {"r1": 3, "r2": 1})
        assert client.cluster.partition_map.source == "r1"
        fc.kill("r1")
        fc.views["r2"] = (2, ["r2"], ("r1",))
        wait_until(lambda: client.cluster.partition_map.source == "r2")
        fc.push("r2")
        wait_until(lambda: set(client.cluster.partition_map.owners) == {"r2"})
        assert client.cluster.map_version == 2
        client.map("m").set("k", 1, timeout=3.0)
        assert fc.nodes["r2"].received[-1] == "k"
    finally:
        client.close()
        fc.close()


def test_clients_seeded_at_different_nodes_route_every_key_to_the_same_node() -> None:
    # Stale joiner r2 (2-node table, v1) next to the master r1 (3-node table, v5) and r3 (v1).
    views = {"r1": (5, ["r1", "r2", "r3"], ()), "r2": (1, ["r1", "r2"], ()), "r3": (1, ["r1", "r2", "r3"], ())}
    fc = PerNodeViews(views)
    clients = [make_client(fc, seeds=[url_of(seed)]) for seed in ("r2", "r3", "r1")]
    try:
        for c in clients:
            wait_until(lambda c=c: set(c.cluster.choice.sources()) == {"r1", "r2", "r3"})
        tables = {tuple(c.cluster.partition_map.owners) for c in clients}
        assert len(tables) == 1 and set(next(iter(tables))) == {"r1", "r2", "r3"}
    finally:
        for c in clients:
            c.close()
        fc.close()


def test_a_hung_master_that_the_other_nodes_dropped_is_not_followed() -> None:
    # SIGSTOP of n1: its connection stays open (until the heartbeat gives up), its map still
    # lists itself; n2 and n3 dropped it within seconds. Route with theirs, not n1's.
    choice = MapChoice()
    choice.offer("n1", pmap("n1", 4, ["n1", "n2", "n3"]))
    choice.offer("n2", pmap("n2", 4, ["n1", "n2", "n3"]))
    choice.offer("n3", pmap("n3", 4, ["n1", "n2", "n3"]))
    assert choice.trusted().source == "n1"
    choice.offer("n2", pmap("n2", 5, ["n2", "n3"]))
    assert choice.trusted().source == "n1"        # one of two others: not most of them
    choice.offer("n3", pmap("n3", 5, ["n2", "n3"], failed=("n1",)))
    trusted = choice.trusted()
    assert trusted.source == "n2" and "n1" not in set(trusted.owners)
    choice.offer("n2", pmap("n2", 6, ["n1", "n2", "n3"]))   # n1 back, taken in again
    choice.offer("n3", pmap("n3", 6, ["n1", "n2", "n3"]))
    assert choice.trusted().source == "n1"


def test_of_two_nodes_the_one_the_other_dropped_is_skipped_and_a_mutual_drop_keeps_the_lowest() -> None:
    choice = MapChoice()
    choice.offer("n1", pmap("n1", 7, ["n1", "n2"]))               # hung n1: its map is unchanged
    choice.offer("n2", pmap("n2", 3, ["n2"], failed=("n1",)))
    assert choice.trusted().source == "n2"
    choice.offer("n1", pmap("n1", 8, ["n1"], failed=("n2",)))     # a split: each dropped the other
    assert choice.trusted().source == "n1"
