"""ConnectionPool with fake connections: slots per node, stable key->connection, loss, back-off, removal."""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Set, Tuple

import gevent
import pytest

from topgun.cluster.pool import CONNECTED, DOWN, ConnectionPool
from topgun.config import ReconnectPolicy
from topgun.errors import ConnectionLost


def wait_until(check: Callable[[], bool], timeout: float = 2.0) -> None:
    with gevent.Timeout(timeout, AssertionError("condition not met in time")):
        while not check():
            gevent.sleep(0.001)


class FakeConn:
    def __init__(self, url: str, node_id: str, on_closed: Callable[..., None]) -> None:
        self.url, self.node_id, self._on_closed, self.is_open = url, node_id, on_closed, True

    def close(self, reason: Optional[BaseException] = None) -> None:
        if self.is_open:
            self.is_open = False
            self._on_closed(self, reason)


class Harness:
    def __init__(self, clock: Any, size: int = 2) -> None:
        self.down: Set[str] = set()
        self.made: List[FakeConn] = []
        self.connected: List[Tuple[str, FakeConn]] = []
        self.lost: List[Tuple[str, FakeConn]] = []
        self.pool = ConnectionPool(self.connect, clock=clock, policy=ReconnectPolicy(initial_s=0.1, max_s=1.0),
                                   size=size, on_connected=lambda n, c: self.connected.append((n, c)),
                                   on_connection_lost=lambda n, c, e: self.lost.append((n, c)),
                                   on_message=lambda c, msg: None, rng=lambda: 0.0)

    def connect(self, url: str, *, node_id: str, on_message: Any, on_closed: Any, spawn: Any) -> FakeConn:
        if node_id in self.down:
            raise ConnectionLost(f"refused: {url}")
        conn = FakeConn(url, node_id, on_closed)
        self.made.append(conn)
        return conn


@pytest.fixture
def harness(fake_clock: Any) -> Any:
    h = Harness(fake_clock)
    yield h
    h.pool.close()


def test_opens_connections_per_node_and_reports_them(harness: Harness) -> None:
    harness.pool.update({"a": "ws://a:1", "b": "ws://b:1"})
    wait_until(lambda: len(harness.pool.open_connections()) == 4)
    assert harness.pool.routable_nodes() == ["a", "b"]
    assert sorted(n for n, _ in harness.connected) == ["a", "a", "b", "b"]
    assert harness.pool.node("a").state == CONNECTED  # type: ignore[union-attr]


def test_a_key_always_uses_the_same_connection_and_keys_spread_over_slots(harness: Harness) -> None:
    harness.pool.update({"a": "ws://a:1"})
    wait_until(lambda: len(harness.pool.open_connections()) == 2)
    used: Dict[int, int] = {}
    for i in range(200):
        key = f"k{i}"
        conn = harness.pool.connection("a", key)
        assert conn is harness.pool.connection("a", key)
        used[id(conn)] = used.get(id(conn), 0) + 1
    assert len(used) == 2


def test_a_lost_connection_makes_the_node_unroutable_at_once_then_reconnects(harness: Harness) -> None:
    harness.pool.update({"a": "ws://a:1"})
    wait_until(lambda: harness.pool.routable("a") and len(harness.pool.open_connections()) == 2)
    harness.down.add("a")
    first = harness.pool.open_connections()[0]
    first.close()
    assert not harness.pool.routable("a")            # before any greenlet ran
    assert harness.lost == [("a", first)]
    harness.down.discard("a")
    wait_until(lambda: harness.pool.routable("a"))
    assert harness.pool.node("a").reconnects >= 1  # type: ignore[union-attr]


def test_reconnect_backs_off_exponentially_and_never_gives_up(harness: Harness, fake_clock: Any) -> None:
    harness.down.add("a")
    harness.pool.update({"a": "ws://a:1"})
    wait_until(lambda: len(fake_clock.sleeps) >= 8)
    assert fake_clock.sleeps[:5] == [0.1, 0.2, 0.4, 0.8, 1.0]
    assert set(fake_clock.sleeps[5:8]) == {1.0}
    assert harness.pool.node("a").state == DOWN  # type: ignore[union-attr]
    harness.down.discard("a")
    wait_until(lambda: harness.pool.routable("a"))


def test_a_node_dropped_from_the_map_is_disconnected(harness: Harness) -> None:
    harness.pool.update({"a": "ws://a:1", "b": "ws://b:1"})
    wait_until(lambda: len(harness.pool.open_connections()) == 4)
    b_conns = [c for c in harness.made if c.node_id == "b"]
    harness.pool.update({"a": "ws://a:1"})
    assert all(not c.is_open for c in b_conns)
    assert harness.pool.node("b") is None and harness.pool.routable_nodes() == ["a"]
    gevent.sleep(0.01)
    assert len([c for c in harness.made if c.node_id == "b"]) == 2   # no reconnect attempt


def test_a_moved_node_is_reconnected_at_its_new_url(harness: Harness) -> None:
    harness.pool.update({"a": "ws://a:1"})
    wait_until(lambda: len(harness.pool.open_connections()) == 2)
    harness.pool.update({"a": "ws://a:2"})
    wait_until(lambda: len(harness.pool.open_connections()) == 2)
    assert {c.url for c in harness.pool.open_connections()} == {"ws://a:2"}


def test_close_ends_every_connection_and_greenlet(fake_clock: Any) -> None:
    h = Harness(fake_clock)
    h.down.add("b")
    h.pool.update({"a": "ws://a:1", "b": "ws://b:1"})
    wait_until(lambda: len(h.pool.open_connections()) == 2)
    h.pool.close()
    assert not h.pool.open_connections()
    assert len(h.pool.group) == 0
