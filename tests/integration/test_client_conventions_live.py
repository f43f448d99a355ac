"""API conventions that need a server (issue 13, item 6): connection-state callbacks in both
modes, the mapping protocol on a map, and what a closed client says."""
from __future__ import annotations

import time
from typing import Any, List, Optional, Tuple

import gevent
import pytest

import topgun

pytestmark = pytest.mark.integration


def _wait_for(check: Any, timeout: float = 10.0) -> None:
    # gevent.sleep: the embedded servers run on this thread's hub
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met within the deadline"
        gevent.sleep(0.02)


def test_single_server_mode_reports_connects_and_losses(topgun_cluster_factory: Any,
                                                        topgun_url_client_factory: Any) -> None:
    cluster = topgun_cluster_factory(1)
    url = cluster.urls[0]
    events: List[Tuple[str, str, Optional[BaseException]]] = []
    client = topgun_url_client_factory(url, thread_mode="loop",
                                       on_connected=lambda where: events.append(("up", where, None)),
                                       on_disconnected=lambda where, exc: events.append(("down", where, exc)))
    assert events == [("up", url, None)]            # the first connect, before the constructor returned
    cluster.restart("n1")
    _wait_for(lambda: len(events) >= 3 and events[-1][0] == "up")
    kinds = [e[0] for e in events]
    assert kinds[:3] == ["up", "down", "up"]
    assert events[1][1] == url and isinstance(events[1][2], topgun.TopGunError)
    client.close()
    assert [e[0] for e in events][-1] == "up"       # closing on purpose is not reported as a loss


def test_the_callbacks_are_assignable_and_a_failing_one_breaks_nothing(topgun_cluster_factory: Any,
                                                                       topgun_url_client_factory: Any) -> None:
    cluster = topgun_cluster_factory(1)
    client = topgun_url_client_factory(cluster.urls[0], thread_mode="loop")
    seen: List[str] = []

    def broken(where: str, exc: Optional[BaseException] = None) -> None:
        seen.append(where)
        raise RuntimeError("user code")

    client.on_connected = broken
    client.on_disconnected = broken
    assert client.on_connected is broken
    cluster.restart("n1")
    _wait_for(lambda: len(seen) >= 2)
    client.map("m").set("k", 1)                     # reconnected despite the callbacks raising
    assert client.map("m").get("k") == 1


def test_cluster_mode_reports_nodes_through_the_same_callbacks(topgun_cluster: Any,
                                                               topgun_client_factory: Any) -> None:
    up: List[str] = []
    down: List[Tuple[str, Optional[BaseException]]] = []
    client = topgun_client_factory(topgun_cluster.urls, on_connected=up.append,
                                   on_disconnected=lambda node, exc: down.append((node, exc)))
    _wait_for(lambda: sorted(up) == ["n1", "n2", "n3"])
    assert client.cluster.on_node_connected is not None
    topgun_cluster.kill("n3")
    _wait_for(lambda: [node for node, _ in down] == ["n3"])


def test_the_mapping_protocol(topgun_cluster_factory: Any, topgun_url_client_factory: Any) -> None:
    client = topgun_url_client_factory(topgun_cluster_factory(1).urls[0], thread_mode="direct")
    users = client.map("users")
    users["ada"] = {"name": "Ada"}
    assert users["ada"] == {"name": "Ada"} and "ada" in users
    with pytest.raises(KeyError) as caught:
        users["nobody"]
    assert caught.value.args == ("nobody",)
    del users["ada"]
    assert "ada" not in users and users.get("ada") is None
    del users["ada"]                                 # like remove(): no error for a missing key


@pytest.mark.parametrize("thread_mode", ["direct", "loop"])
def test_a_closed_client_says_it_is_closed(topgun_cluster_factory: Any, thread_mode: str) -> None:
    client = topgun.TopGunClient(topgun_cluster_factory(1).urls[0], thread_mode=thread_mode)
    notes = client.map("notes")
    client.close()
    for call in (lambda: notes.get("k"), lambda: notes.set("k", 1), lambda: client.ping(),
                 lambda: notes.query(), lambda: client.map("other"), lambda: notes["k"]):
        with pytest.raises(topgun.ClientClosed) as caught:
            call()
        assert str(caught.value).startswith("the client is closed")
        assert "home" not in str(caught.value) and "topgun-loop" not in str(caught.value)
    assert not client.connected and client.closed
