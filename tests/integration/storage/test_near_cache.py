"""The near cache (issue 15): reads served locally, kept fresh by change events, never stale after a loss.

Each test shows one thing a user would notice: a cached ``get()`` sends nothing; another
client's change shows through the cache (within a generous deadline here; the benchmark
measures the p99); this client's own write is seen at once; after a disconnect or a killed
node, no value from before is served. One test runs on the real 2.2.0 server: the
match-nothing subscription does bring its SERVER_EVENTs.
"""
from __future__ import annotations

from typing import Any, Callable, List

import gevent
import pytest

import topgun
from topgun.clock import GeventClock
from topgun.transport.websocket import WebSocketTransport

CLOCK = GeventClock()
VISIBLE_WITHIN = 5.0  # generous: the benchmark measures the real figure


def _wait_for(check: Callable[[], Any], timeout: float = VISIBLE_WITHIN, what: str = "condition") -> Any:
    deadline = CLOCK.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        assert CLOCK.monotonic() < deadline, f"{what}: not within {timeout}s"
        gevent.sleep(0.005)


class _Counting:
    """A WebSocket transport that counts the frames it sends."""

    sent: List[int] = []

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def send(self, data: bytes) -> None:
        _Counting.sent.append(len(data))
        self.inner.send(data)

    def send_many(self, frames: List[bytes]) -> None:
        _Counting.sent.extend(len(f) for f in frames)
        self.inner.send_many(frames)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def _until_hit(client: topgun.TopGunClient, handle: Any, key: str) -> Any:
    before = client.stats["near_cache"][handle.name]["hits"] if handle.name in client.stats["near_cache"] else 0

    def hit() -> bool:
        handle.get(key)
        return client.stats["near_cache"][handle.name]["hits"] > before
    _wait_for(hit, what=f"a cache hit on {key}")
    return handle.get(key)


@pytest.mark.integration
def test_a_cached_get_sends_nothing(topgun_cluster_factory: Callable[..., Any],
                                    topgun_url_client_factory: Callable[..., topgun.TopGunClient]) -> None:
    url = topgun_cluster_factory(1).urls[0]
    topgun_url_client_factory(url).map("nc").set("k", {"n": 1})
    client = topgun_url_client_factory(
        url, ping_interval=None,
        transport_factory=lambda u, timeout: _Counting(WebSocketTransport.connect(u, timeout)))
    users = client.map("nc", near_cache=topgun.NearCache(max_entries=10))
    assert _until_hit(client, users, "k") == {"n": 1}
    frames, hits = len(_Counting.sent), client.stats["near_cache"]["nc"]["hits"]
    for _ in range(100):
        assert users.get("k") == {"n": 1}
    assert len(_Counting.sent) == frames                 # no round trip, not even a frame
    assert client.stats["near_cache"]["nc"]["hits"] == hits + 100
    assert users.get("absent", "dflt") == "dflt"         # a missing key is cached as missing, too
    frames = len(_Counting.sent)
    assert users.get("absent", "dflt") == "dflt"
    assert len(_Counting.sent) == frames


@pytest.mark.integration
def test_another_clients_change_shows_through_the_cache(
        topgun_cluster_factory: Callable[..., Any],
        topgun_url_client_factory: Callable[..., topgun.TopGunClient]) -> None:
    url = topgun_cluster_factory(1).urls[0]
    writer = topgun_url_client_factory(url).map("nc")
    writer.set("k", "old")
    client = topgun_url_client_factory(url)
    reader = client.map("nc", near_cache=topgun.NearCache())
    assert _until_hit(client, reader, "k") == "old"
    writer.set("k", "new")
    _wait_for(lambda: reader.get("k") == "new", what="the change")
    writer.remove("k")
    _wait_for(lambda: reader.get("k", "gone") == "gone", what="the remove")
    assert client.stats["near_cache"]["nc"]["invalidations"] >= 2


@pytest.mark.integration
def test_own_writes_are_seen_at_once_and_ttl_and_size_bound_the_cache(
        topgun_cluster_factory: Callable[..., Any],
        topgun_url_client_factory: Callable[..., topgun.TopGunClient]) -> None:
    url = topgun_cluster_factory(1).urls[0]
    client = topgun_url_client_factory(url)
    users = client.map("nc", near_cache=topgun.NearCache(max_entries=3, ttl=0.2))
    users.set("k", 1)
    assert _until_hit(client, users, "k") == 1
    users.set("k", 2)
    assert users.get("k") == 2                            # never the cached 1
    assert _until_hit(client, users, "k") == 2
    users.put_all({"k": 3})
    assert users.get("k") == 3                            # put_all drops the cached 2 as set() does
    users.remove("k")
    assert users.get("k", "none") == "none"
    for i in range(5):
        users.get(f"other{i}")
    stats = client.stats["near_cache"]["nc"]
    assert stats["entries"] == 3 and stats["evictions"] >= 2
    users.set("t", "x")
    _until_hit(client, users, "t")
    gevent.sleep(0.25)  # past the ttl (0.2 s): what is measured is that the entry is no longer served
    misses = client.stats["near_cache"]["nc"]["misses"]
    assert users.get("t") == "x"
    assert client.stats["near_cache"]["nc"]["misses"] == misses + 1
    assert client.stats["near_cache"]["nc"]["expired"] >= 1


@pytest.mark.integration
def test_after_a_disconnect_nothing_from_before_is_served(
        topgun_cluster_factory: Callable[..., Any],
        topgun_url_client_factory: Callable[..., topgun.TopGunClient]) -> None:
    cluster = topgun_cluster_factory(1)
    url = cluster.urls[0]
    topgun_url_client_factory(url).map("nc").set("k", "before")
    client = topgun_url_client_factory(url, request_timeout=2.0)
    reader = client.map("nc", near_cache=topgun.NearCache())
    assert _until_hit(client, reader, "k") == "before"
    cluster.kill("n1")                                     # events from now on would be missed
    _wait_for(lambda: not client.stats["near_cache"]["nc"]["live"], what="the cache noticing the loss")
    assert client.stats["near_cache"]["nc"]["entries"] == 0
    with pytest.raises(topgun.OperationTimeout):
        reader.get("k", timeout=0.3)                       # no stale "before" while the server is away
    cluster.restart("n1")                                  # empty: "before" is gone
    topgun_url_client_factory(url).map("nc").set("k", "after")
    assert _wait_for(lambda: reader.get("k") == "after", what="the new value")
    assert client.stats["near_cache"]["nc"]["clears"] >= 1
    assert _until_hit(client, reader, "k") == "after"      # and it caches again


@pytest.mark.integration
def test_correct_after_a_node_is_killed(topgun_cluster_factory: Callable[..., Any],
                                        topgun_client_factory: Callable[..., topgun.TopGunClient]) -> None:
    cluster = topgun_cluster_factory(3)
    writer = topgun_client_factory(cluster.urls).map("nc")
    keys = [f"key{i}" for i in range(30)]
    writer.put_all({k: "v1" for k in keys})
    client = topgun_client_factory(cluster.urls)
    reader = client.map("nc", near_cache=topgun.NearCache())
    for k in keys:
        assert _until_hit(client, reader, k) == "v1"
    victim = cluster.owner_of(keys[0])
    cluster.kill(victim)
    cluster.wait_converged()
    writer.put_all({k: "v2" for k in keys})
    for k in keys:
        _wait_for(lambda k=k: reader.get(k) == "v2", what=f"{k} after the kill")
    assert client.stats["near_cache"]["nc"]["clears"] >= 1


@pytest.mark.realserver
def test_the_real_server_feeds_the_cache(topgun_real_server: Any,
                                         topgun_url_client_factory: Callable[..., topgun.TopGunClient]) -> None:
    writer = topgun_url_client_factory(topgun_real_server.url).map("nc")
    writer.set("k", "old")
    client = topgun_url_client_factory(topgun_real_server.url)
    reader = client.map("nc", near_cache=topgun.NearCache())
    assert _until_hit(client, reader, "k") == "old"
    writer.set("k", "new")                                 # re-stamped by the server: its event carries the new stamp
    _wait_for(lambda: reader.get("k") == "new", what="the change on the real server")
    writer.remove("k")
    _wait_for(lambda: reader.get("k", "gone") == "gone", what="the remove on the real server")
    assert client.stats["near_cache"]["nc"]["invalidations"] >= 2
