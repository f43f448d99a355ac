"""Fixtures for cluster integration tests: embedded clusters and cluster-mode clients, torn down after."""
from __future__ import annotations

import itertools
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable, DefaultDict, Dict, Iterator, List, Tuple

import pytest

import topgun

sys.path.insert(0, str(Path(__file__).parent))

Arrival = Tuple[str, str, Any, int]   # (map name, key, value, arrival number) of one op from a client
_arrival_numbers = itertools.count()


@pytest.fixture
def embedded_cluster() -> Iterator[Callable[..., Any]]:
    from topgun.server.cluster import EmbeddedCluster
    started: List[Any] = []

    def start(nodes: int = 3, **kw: Any) -> Any:
        cluster = EmbeddedCluster(nodes, **kw).start(timeout=15.0)
        started.append(cluster)
        return cluster

    yield start
    for cluster in reversed(started):
        cluster.stop()


@pytest.fixture
def cluster_client() -> Iterator[Callable[..., topgun.TopGunClient]]:
    made: List[topgun.TopGunClient] = []

    def connect(seeds: Any, *, smart_routing: bool = True, **kw: Any) -> topgun.TopGunClient:
        cfg = topgun.ClusterConfig(seeds=list(seeds), smart_routing=smart_routing)
        client = topgun.TopGunClient(cluster=cfg, **kw)
        made.append(client)
        return client

    yield connect
    for client in made:
        client.close()


def record_arrivals(nodes: Any, into: "DefaultDict[str, List[Arrival]] | None" = None) -> DefaultDict[str, List[Arrival]]:
    """Record, per node id, every op that node received from a client (server-side view).

    Wraps each node's ``_write`` (the dev server's single entry for CLIENT_OP and OP_BATCH).
    """
    arrivals: DefaultDict[str, List[Arrival]] = into if into is not None else defaultdict(list)
    for node in nodes:
        original = node._write

        def _write(conn: Any, ops: Any, batch_wc: Any, last_id: Any, _node: Any = node, _orig: Any = original) -> Any:
            for op in ops:
                if isinstance(op, dict):
                    arrivals[_node.node_id].append(
                        (op.get("mapName"), op.get("key"), (op.get("record") or {}).get("value"),
                         next(_arrival_numbers)))
            return _orig(conn, ops, batch_wc, last_id)

        node._write = _write
    return arrivals


def where_arrived(arrivals: Dict[str, List[Arrival]], map_name: str) -> DefaultDict[str, set]:
    """key -> set of node ids that received it from a client."""
    out: DefaultDict[str, set] = defaultdict(set)
    for node_id, ops in arrivals.items():
        for mp, key, _value, _n in ops:
            if mp == map_name:
                out[key].add(node_id)
    return out


def arrival_order(arrivals: Dict[str, List[Arrival]], map_name: str, key: str) -> List[Any]:
    """Values of ``key`` in the order the cluster received them, across all nodes."""
    ops = sorted((n, value) for node_ops in arrivals.values() for mp, k, value, n in node_ops
                 if mp == map_name and k == key)
    return [value for _n, value in ops]
