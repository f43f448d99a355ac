"""Fixtures for the structure tests: one server of either kind (the real 2.2.0 binary or one
embedded dev node) and clients connected to it with ``url=``, all torn down after the test."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable, Iterator, List

import pytest

import topgun
from topgun.server import EmbeddedCluster

sys.path.insert(0, str(Path(__file__).parent))   # structures_helpers.py


@pytest.fixture(params=["real", "embedded"])
def server_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """The ws:// URL of the real 2.2.0 server or of one embedded dev node."""
    if request.param == "real":
        yield request.getfixturevalue("topgun_real_server_factory")().url
        return
    cluster = EmbeddedCluster(1).start()
    try:
        yield cluster.urls[0]
    finally:
        cluster.stop()


@pytest.fixture
def connect(server_url: str) -> Iterator[Callable[..., topgun.TopGunClient]]:
    """``connect(**kw) -> TopGunClient`` on ``server_url``; every client closed after the test."""
    clients: List[topgun.TopGunClient] = []

    def make(**kw: Any) -> topgun.TopGunClient:
        client = topgun.TopGunClient(url=server_url, **kw)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


def pytest_collection_modifyitems(items: List[pytest.Item]) -> None:
    for item in items:
        callspec = getattr(item, "callspec", None)
        if callspec is not None and callspec.params.get("server_url") == "real":
            item.add_marker(pytest.mark.realserver)
