"""Fixtures for cluster integration tests: embedded clusters and cluster-mode clients, torn down after."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable, Iterator, List

import pytest

import topgun

sys.path.insert(0, str(Path(__file__).parent))


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
