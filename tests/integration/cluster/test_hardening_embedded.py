"""Issue 10 (client side) against the embedded dev cluster: losing more nodes than backups is
reported, restarts are counted, and the JWT never shows in a repr or a log line."""
from __future__ import annotations

import logging
from typing import Any

import pytest
from steadyload import wait_for

import topgun
from topgun.testing.jwt import make_hs256_token

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

LOSS = "lost their owner and every backup"


def loss_warnings(caplog: Any) -> list:
    return [r for r in caplog.records if LOSS in r.getMessage()]


def test_killing_two_of_three_nodes_at_once_warns_that_acknowledged_writes_may_be_lost(
        embedded_cluster: Any, cluster_client: Any, caplog: Any) -> None:
    cluster = embedded_cluster(3)
    client = cluster_client(cluster.urls)
    client.map("acks").put_all({f"k{i}": i for i in range(300)})
    survivor, *victims = sorted(cluster.nodes)
    version = client.cluster.map_version
    with caplog.at_level(logging.WARNING, logger="topgun.cluster"):
        for node_id in victims:
            cluster.kill(node_id)
        wait_for(lambda: set(client.cluster.partition_map.nodes) == {survivor}, timeout=20.0,
                 what="a map with only the survivor")
    assert client.cluster.map_version != version
    lost = client.cluster.stats["partitions_lost"]
    assert lost > 0
    records = loss_warnings(caplog)
    assert records and all(r.levelno == logging.WARNING and r.name.startswith("topgun.cluster") for r in records)
    assert sum(int(r.getMessage().split(": ")[1].split()[0]) for r in records) == lost


def test_killing_one_of_three_nodes_reports_no_loss(embedded_cluster: Any, cluster_client: Any,
                                                    caplog: Any) -> None:
    cluster = embedded_cluster(3)
    client = cluster_client(cluster.urls)
    client.map("acks").put_all({f"k{i}": i for i in range(300)})
    victim = sorted(cluster.nodes)[-1]
    with caplog.at_level(logging.WARNING, logger="topgun.cluster"):
        cluster.kill(victim)
        wait_for(lambda: victim not in client.cluster.partition_map.nodes, timeout=20.0,
                 what="a map without the killed node")
        assert client.map("acks").get("k7") == 7
    assert client.cluster.stats["partitions_lost"] == 0
    assert loss_warnings(caplog) == []


def test_the_reconnects_counter_follows_restarts_of_a_node(embedded_cluster: Any, cluster_client: Any) -> None:
    cluster = embedded_cluster(3)
    client = cluster_client(cluster.urls, reconnect=topgun.ReconnectPolicy(initial_s=0.02, max_s=0.2))
    victim = sorted(cluster.nodes)[-1]
    restarts = 5
    for _ in range(restarts):
        wait_for(lambda: (s := client.cluster.node_states().get(victim)) is not None and s.state == "CONNECTED",
                 timeout=20.0, what="the node connected")
        cluster.kill(victim)
        wait_for(lambda: (s := client.cluster.node_states().get(victim)) is None or s.state != "CONNECTED",
                 timeout=20.0, what="the client noticing the kill")
        cluster.restart(victim)
    wait_for(lambda: (s := client.cluster.node_states().get(victim)) is not None and s.state == "CONNECTED",
             timeout=20.0, what="the node connected")
    assert client.cluster.node_states()[victim].reconnects == restarts


@pytest.mark.parametrize("as_callable", [False, True], ids=["str", "callable"])
def test_the_token_never_appears_in_reprs_or_log_lines(embedded_cluster: Any, cluster_client: Any, caplog: Any,
                                                       as_callable: bool) -> None:
    secret = "s3cret-for-the-test"
    cluster = embedded_cluster(1, jwt_secret=secret)
    token = make_hs256_token(secret, "ada")
    with caplog.at_level(logging.DEBUG, logger="topgun"):
        client = cluster_client(cluster.urls, token=(lambda: token) if as_callable else token)
        client.map("private").set("k", 1)
        assert client.map("private").get("k") == 1
        conns = client.cluster.open_connections()
        shown = [repr(client.config), str(client.config), repr(client.config.cluster), repr(client),
                 repr(client.cluster), *map(repr, conns), *map(str, conns)]
    assert conns
    assert "<callable>" in repr(client.config) if as_callable else "<redacted>" in repr(client.config)
    for text in shown + [caplog.text]:
        assert token not in text
        assert token.split(".")[2] not in text  # not even the signature
