"""Cluster mode against one real TopGun 2.2.0 server, which never answers PARTITION_MAP_REQUEST.

The client must treat the seed as one node owning every partition (map version 0) within about
a second, and then work as in single-server mode, including after the server restarts.
"""
from __future__ import annotations

import time
from typing import Any

import pytest
from steadyload import wait_for

import topgun

pytestmark = [pytest.mark.system, pytest.mark.realserver, pytest.mark.timeout(120)]


def test_a_standalone_real_server_is_one_node_owning_everything(topgun_real_server_factory: Any) -> None:
    server = topgun_real_server_factory()
    started = time.monotonic()
    client = topgun.TopGunClient(cluster=topgun.ClusterConfig(seeds=[server.url]))
    try:
        assert time.monotonic() - started < 5.0
        assert client.cluster.map_version == 0
        assert client.cluster.owner_of("user:42") == server.url
        assert [s.state for s in client.cluster.node_states().values()] == ["CONNECTED"]
        users = client.map("users")
        users.put_all({f"user:{i}": {"i": i} for i in range(100)})
        assert users.get("user:42") == {"i": 42}
        assert client.cluster.stats["direct"] >= 100
        server.restart()
        users.set("after-restart", 1, timeout=20.0)                    # reconnects with back-off
        wait_for(lambda: client.connected, timeout=20.0, what="reconnected")
        assert users.get("after-restart") == 1
    finally:
        client.close()
