"""Fixtures for dev-server process tests (real SIGKILL).

TODO(plugin owner): ``process_cluster_factory`` belongs in topgun.testing.plugin; it lives here
until then.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterator, List

import pytest

from topgun.server.process import ProcessCluster
from topgun.server.rawclient import RawClient


@pytest.fixture
def process_cluster_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[..., ProcessCluster]]:
    """``start(nodes=3, **kw) -> ProcessCluster`` (started); SIGTERM/SIGKILL after the test."""
    started: List[ProcessCluster] = []

    def start(nodes: int = 3, **kw: Any) -> ProcessCluster:
        cluster = ProcessCluster(nodes, log_dir=tmp_path / f"cluster{len(started)}", **kw)
        started.append(cluster)
        try:
            from topgun.testing.plugin import attach_logs
        except ImportError:  # pragma: no cover
            attach_logs = None
        cluster.start(timeout=30.0)
        if attach_logs is not None:
            for proc in cluster.processes.values():
                attach_logs(request, proc)
        return cluster

    yield start
    for cluster in reversed(started):
        cluster.stop()


@pytest.fixture
def raw() -> Iterator[Callable[[str], RawClient]]:
    made: List[RawClient] = []

    def connect(url: str) -> RawClient:
        client = RawClient(url)
        made.append(client)
        return client

    yield connect
    for client in made:
        client.close()
