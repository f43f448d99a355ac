"""Fixtures for cluster system tests: real server processes (SIGKILL) and cluster-mode clients."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable, Iterator, List

import pytest

import topgun

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[1] / "integration" / "cluster"))   # steadyload.py


@pytest.fixture
def proc_cluster(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """``start(nodes) -> ProcessCluster`` (topgun.server.process); stops every node it started."""
    from topgun.server.process import ProcessCluster
    from topgun.testing.plugin import attach_logs
    started: List[ProcessCluster] = []

    def start(nodes: int = 3) -> ProcessCluster:
        cluster = ProcessCluster(nodes, log_dir=tmp_path)
        started.append(cluster)
        cluster.start(timeout=30.0)
        for node in cluster.processes.values():
            attach_logs(request, node)
        return cluster

    yield start
    for cluster in reversed(started):
        cluster.stop()


@pytest.fixture
def cluster_client() -> Iterator[Callable[..., topgun.TopGunClient]]:
    made: List[topgun.TopGunClient] = []

    def connect(seeds: Any, *, smart_routing: bool = True, **kw: Any) -> topgun.TopGunClient:
        client = topgun.TopGunClient(cluster=topgun.ClusterConfig(seeds=list(seeds), smart_routing=smart_routing),
                                     **kw)
        made.append(client)
        return client

    yield connect
    for client in made:
        client.close()
