"""Fixtures for the dev-server tests: embedded clusters, raw WebSocket clients, and a server of
either kind (the real 2.2.0 binary or one embedded node) for the conformance tests.

TODO(plugin owner): ``embedded_cluster_factory`` and ``embedded_node`` belong in
topgun.testing.plugin (as ``topgun_cluster_factory`` / ``topgun_cluster``); they live here
until then.
"""
from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Callable, Iterator, List, Optional

import pytest

from topgun.server import EmbeddedCluster

pytestmark = pytest.mark.integration


@pytest.fixture
def embedded_cluster_factory(topgun_cluster_factory: Callable[..., EmbeddedCluster]) -> Callable[..., EmbeddedCluster]:
    """``start(nodes=3, **kw) -> EmbeddedCluster``: the plugin's ``topgun_cluster_factory``."""
    return topgun_cluster_factory

@pytest.fixture
def embedded_node(embedded_cluster_factory: Callable[..., EmbeddedCluster]) -> EmbeddedCluster:
    """A one-node embedded cluster."""
    return embedded_cluster_factory(1)



@dataclass
class AnyServer:
    kind: str                      # "real" or "embedded"
    url: str
    jwt_secret: Optional[str] = None


@pytest.fixture(params=["real", "embedded"])
def server_factory(request: pytest.FixtureRequest) -> Iterator[Callable[..., AnyServer]]:
    """``start(jwt=False) -> AnyServer``: the real 2.2.0 server or one embedded node."""
    kind = request.param
    clusters: List[EmbeddedCluster] = []

    def start(jwt: bool = False) -> AnyServer:
        secret = secrets.token_hex(16) if jwt else None
        if kind == "real":
            factory = request.getfixturevalue("topgun_real_server_factory")
            return AnyServer(kind, factory(jwt_secret=secret).url, secret)
        cluster = EmbeddedCluster(1, jwt_secret=secret).start()
        clusters.append(cluster)
        return AnyServer(kind, cluster.urls[0], secret)

    yield start
    for cluster in clusters:
        cluster.stop()


def pytest_collection_modifyitems(items: List[pytest.Item]) -> None:
    for item in items:
        callspec = getattr(item, "callspec", None)
        if callspec is not None and callspec.params.get("server_factory") == "real":
            item.add_marker(pytest.mark.realserver)
