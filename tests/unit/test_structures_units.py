"""Pieces of topics, locks and counters that need no server: name rules, counter merging, lock options."""
from __future__ import annotations

from typing import Any, List

import pytest

from topgun.counters import CounterHandle, CounterState
from topgun.errors import ConfigurationError, RemoteProtocolError
from topgun.locks import Lock
from topgun.topics import TopicHandle, check_name


class _NoClient:
    @property
    def runtime(self) -> Any:   # the handles look it up only when they do IO
        raise AssertionError("no IO expected")


@pytest.mark.parametrize("name", ["a", "chat/room-1", "A.b:c_d/e-f", "x" * 256, "0123456789"])
def test_names_the_server_takes(name: str) -> None:
    assert check_name(name) == name
    assert TopicHandle(_NoClient(), name).name == name
    assert Lock(_NoClient(), name).name == name


@pytest.mark.parametrize("name", ["", "x" * 257, "bad topic", "bad name!", "ümlaut", "a\nb", "#", 5, None])
def test_names_the_server_would_ignore_are_refused_before_sending(name: Any) -> None:
    with pytest.raises(ConfigurationError, match="bad topic name"):
        TopicHandle(_NoClient(), name)
    with pytest.raises(ConfigurationError, match="bad lock name"):
        Lock(_NoClient(), name)


@pytest.mark.parametrize("ttl", [0, -1, 0.0001, "5", True, float("nan"), float("inf")])
def test_bad_lock_ttls_are_refused(ttl: Any) -> None:
    with pytest.raises(ConfigurationError):
        Lock(_NoClient(), "res", ttl=ttl)


def test_counter_names_and_amounts_are_checked() -> None:
    with pytest.raises(ConfigurationError):
        CounterHandle(_NoClient(), "")
    for bad in ("1", None, True, float("nan"), float("inf")):
        with pytest.raises(ConfigurationError):
            CounterHandle._amount(bad)


def test_merging_takes_the_larger_total_per_actor_and_side() -> None:
    state = CounterState("hits")
    assert state.merge({"p": {"a": 3.0, "b": 1.0}, "n": {"a": 1.0}})
    assert state.value == 3
    assert not state.merge({"p": {"a": 2.0}, "n": {}})          # an older total changes nothing
    assert state.merge({"p": {"b": 4}, "n": {"a": 1, "c": 0.5}})
    assert state.value == 3 + 4 - 1 - 0.5


def test_a_resent_state_never_counts_twice() -> None:
    state = CounterState("hits")
    state.add("me", 5)
    state.add("me", -2)
    wire = state.wire()
    assert wire == {"p": {"me": 5}, "n": {"me": 2}}                 # cumulative totals, ints when whole
    server = CounterState("hits")
    for _ in range(3):                                              # the same sync three times
        server.merge(wire)
    assert server.value == 3 and isinstance(server.value, int)


@pytest.mark.parametrize("bad", [None, [], {"p": []}, {"p": {"a": "1"}}, {"n": {"a": float("nan")}},
                                 {"p": {"a": True}}])
def test_a_malformed_server_state_is_a_protocol_error(bad: Any) -> None:
    with pytest.raises(RemoteProtocolError):
        CounterState("hits").merge(bad)


# -- lock loss on routing changes, with fakes (no sockets) -------------------------------------

class _Conn:
    def __init__(self, node_id: str) -> None:
        self.node_id, self.url, self.is_open, self.sent = node_id, f"ws://{node_id}", True, []

    def send(self, msg: Any) -> None:
        self.sent.append(msg)


class _Provider:
    def __init__(self, conn: _Conn) -> None:
        self.route = conn

    def connection_for_key(self, key: str) -> _Conn:
        return self.route


class _Requests:
    def __init__(self, provider: _Provider) -> None:
        from topgun.clock import FakeClock
        self.provider, self.clock, self.closed, self.request_timeout = provider, FakeClock(), False, 1.0


def _held_lock(conn: _Conn) -> Any:
    from types import SimpleNamespace

    from topgun.locks import LockRegistry
    requests = _Requests(_Provider(conn))
    spawned: list = []
    registry = LockRegistry(requests, home=None, spawn=lambda fn, *a: spawned.append((fn, a)))  # type: ignore[arg-type]
    client = SimpleNamespace(runtime=SimpleNamespace(locks=registry, clock=requests.clock))
    lost: list = []
    lock = Lock(client, "res", on_lost=lambda lk: lost.append(lk.lost_reason))
    registry.claims["res"] = lock
    lock._granted(conn, 7, 0.0)
    return registry, requests.provider, lock, lost, spawned


def test_a_map_moving_the_name_to_another_node_loses_the_lock_and_frees_it_there() -> None:
    old = _Conn("n1")
    registry, provider, lock, lost, spawned = _held_lock(old)
    provider.route = _Conn("n1")                 # another connection to the same node: still held
    registry.on_map_updated(2)
    assert lock.locked() and not lock.lost
    provider.route = _Conn("n2")                 # the name's partition moved to n2
    registry.on_map_updated(3)
    assert lock.lost and not lock.locked() and "moved" in (lock.lost_reason or "")
    assert [type(m).__name__ for m in old.sent] == ["LockRelease"] and old.sent[0].fencing_token == 7
    for fn, args in spawned:                     # the on_lost callback runs on a spawned greenlet
        fn(*args)
    assert lost == [lock.lost_reason]
    assert "res" not in registry.claims


def test_a_lost_connection_loses_the_locks_held_on_it_only() -> None:
    conn = _Conn("n1")
    registry, _, lock, _, _ = _held_lock(conn)
    registry.on_disconnected(_Conn("n2"), None)
    assert lock.locked()
    registry.on_disconnected(conn, None)
    assert lock.lost and "lost" in (lock.lost_reason or "")


# -- counter replies that look like pushes ------------------------------------------------------

class _CounterConn(_Conn):
    """Answers every request with ``first`` (the next COUNTER_* frame that arrives on the connection)."""

    def __init__(self, first: Any) -> None:
        super().__init__("n1")
        self.first = first
        self.fresh: List[Any] = []

    def request(self, msg: Any, timeout: float) -> Any:
        self.sent.append(msg)
        return self.first

    def fresh_request(self, msg: Any, timeout: float) -> Any:
        self.fresh.append(msg)
        return self.request(msg, timeout)


def _counters(first: Any) -> Any:
    import gevent

    from topgun.counters import CounterRegistry
    conn = _CounterConn(first)
    registry = CounterRegistry(_Requests(_Provider(conn)), home=None, spawn=gevent.spawn,  # type: ignore[arg-type]
                               node_id="c", actor="me")
    return registry, conn


def test_an_increment_is_answered_by_the_update_that_holds_its_own_total_not_an_earlier_push() -> None:
    import gevent

    from topgun.protocol import messages as m
    # The node pushed another client's change just before it merged ours: that push arrives first.
    registry, conn = _counters(m.CounterUpdate("hits", {"p": {"other": 4.0}, "n": {}}))
    registry.state("hits").add("me", 1)
    ours = m.CounterUpdate("hits", {"p": {"other": 4.0, "me": 1.0}, "n": {}})
    late = gevent.spawn_later(0.05, registry.on_message, conn, ours)
    registry._attach("hits", conn, 2.0)
    assert late.ready()                          # it waited for the update with our total
    assert registry.state("hits").value == 5
    assert [type(msg).__name__ for msg in conn.sent] == ["CounterSync"]


def test_an_increment_the_node_never_confirms_times_out_at_its_deadline() -> None:
    from topgun.errors import OperationTimeout
    from topgun.protocol import messages as m
    registry, conn = _counters(m.CounterUpdate("hits", {"p": {"other": 4.0}, "n": {}}))
    registry.state("hits").add("me", 1)
    with pytest.raises(OperationTimeout, match="our totals"):
        registry._attach("hits", conn, 0.1)


def test_a_counter_read_takes_only_a_counter_response() -> None:
    from topgun.protocol import messages as m
    registry, conn = _counters(m.CounterUpdate("hits", {"p": {"other": 4.0}, "n": {}}))
    with pytest.raises(RemoteProtocolError, match="COUNTER_RESPONSE"):
        registry._read("hits", conn, 1.0)
    conn.first = m.CounterResponse("hits", {"p": {"other": 9.0}, "n": {}})
    registry._read("hits", conn, 1.0)
    assert registry.state("hits").value == 9
    # COUNTER_RESPONSE carries only the name: a read waits out one still unanswered (or
    # given up on, its reply still due), so it never takes a value from before it began.
    assert [type(msg).__name__ for msg in conn.fresh] == ["CounterRequest", "CounterRequest"]


def test_an_increment_waiting_for_its_confirmation_fails_over_when_the_connection_is_lost() -> None:
    import gevent

    from topgun.errors import ConnectionLost
    from topgun.protocol import messages as m
    registry, conn = _counters(m.CounterUpdate("hits", {"p": {"other": 4.0}, "n": {}}))
    registry.state("hits").add("me", 1)

    def lose() -> None:
        conn.is_open = False
        registry.on_disconnected(conn, None)  # type: ignore[arg-type]

    gevent.spawn_later(0.05, lose)
    with pytest.raises(ConnectionLost) as lost:   # retryable: attached again on the next connection
        registry._attach("hits", conn, 5.0)
    assert lost.value.retryable


class _CallingRequests(_Requests):
    def call(self, fn: Any, *, key: Any = None, timeout: Any = None, op: str = "") -> Any:
        return fn(self.provider.connection_for_key(key), timeout)


def test_a_read_after_a_change_the_node_did_not_confirm_sends_the_change_again() -> None:
    import gevent

    from topgun.counters import CounterRegistry
    from topgun.protocol import messages as m
    conn = _CounterConn(m.CounterResponse("hits", {"p": {}, "n": {}}))
    registry = CounterRegistry(_CallingRequests(_Provider(conn)), home=None, spawn=gevent.spawn,  # type: ignore[arg-type]
                               node_id="c", actor="me")
    assert registry.sync("hits", 1.0) == 0                 # attached (COUNTER_REQUEST: nothing of ours yet)
    registry.state("hits").add("me", 2)                    # a change whose sync timed out, say
    conn.first = m.CounterUpdate("hits", {"p": {"me": 2.0}, "n": {}})
    assert registry.sync("hits", 1.0) == 2
    assert [type(msg).__name__ for msg in conn.sent] == ["CounterRequest", "CounterSync"]
    conn.first = m.CounterResponse("hits", {"p": {"me": 2.0}, "n": {}})
    assert registry.sync("hits", 1.0) == 2                 # confirmed now: a plain read
    assert type(conn.sent[-1]).__name__ == "CounterRequest"


# -- concurrent changes of one counter share a COUNTER_SYNC -------------------------------------

class _HeldConn(_Conn):
    """Holds each request until the test answers it (``answer`` completes the oldest) or loses the connection."""

    def __init__(self, node_id: str = "n1") -> None:
        super().__init__(node_id)
        self.held: List[Any] = []

    def request(self, msg: Any, timeout: float) -> Any:
        import gevent
        from gevent.event import AsyncResult

        from topgun.errors import OperationTimeout
        self.sent.append(msg)
        result: Any = AsyncResult()
        self.held.append(result)
        try:
            return result.get(timeout=timeout)
        except gevent.Timeout:
            raise OperationTimeout("held") from None

    def answer(self, reply: Any) -> None:
        self.held.pop(0).set(reply)

    def lose(self) -> None:
        from topgun.errors import ConnectionLost
        self.is_open = False
        for result in self.held:  # as the reader does when the socket goes
            result.set_exception(ConnectionLost(f"{self.url} lost"))
        self.held.clear()


class _FailoverRequests(_Requests):
    """Tries a retryable failure again on ``then`` (the name's new owner), at most three attempts."""

    def __init__(self, provider: _Provider, then: _Conn) -> None:
        super().__init__(provider)
        self.then = then

    def call(self, fn: Any, *, key: Any = None, timeout: Any = None, op: str = "") -> Any:
        from topgun.errors import TopGunError
        for attempt in range(3):
            try:
                return fn(self.provider.connection_for_key(key), timeout)
            except TopGunError as exc:
                if not exc.retryable or attempt == 2:
                    raise
                self.provider.route = self.then


def _until(check: Any, timeout: float = 5.0) -> None:
    import time

    import gevent
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached"
        gevent.sleep(0.001)


def _settle() -> None:
    import gevent
    for _ in range(20):   # let every greenlet woken so far run to its next wait (no clock involved)
        gevent.sleep(0)


def _syncs(conn: _Conn) -> List[Any]:
    return [msg for msg in conn.sent if type(msg).__name__ == "CounterSync"]


def test_changes_made_while_a_sync_is_in_flight_go_together_in_the_next_and_wait_for_an_update_holding_them() -> None:
    import gevent

    from topgun.counters import CounterRegistry
    from topgun.protocol import messages as m
    conn = _HeldConn()
    registry = CounterRegistry(_CallingRequests(_Provider(conn)), home=None, spawn=gevent.spawn,  # type: ignore[arg-type]
                               node_id="c", actor="me")
    done: List[Any] = []
    bumps = [gevent.spawn(lambda i=i: done.append((i, registry.sync("hits", 5.0, 1)))) for i in range(50)]
    _until(lambda: registry.state("hits").value == 50 and len(conn.held) == 1)
    _settle()
    assert [s.state["p"] for s in _syncs(conn)] == [{"me": 1}]   # the first change; 49 wait behind it
    conn.answer(m.CounterUpdate("hits", {"p": {"me": 1.0, "other": 4.0}, "n": {}}))
    _until(lambda: len(conn.held) == 1 and len(_syncs(conn)) == 2)
    assert [i for i, _ in done] == [0]
    assert _syncs(conn)[1].state["p"] == {"me": 50, "other": 4}  # one sync carries all 49
    # Another client's change, pushed before the node merged our sync: it releases nobody.
    registry.on_message(conn, m.CounterUpdate("hits", {"p": {"me": 1.0, "other": 6.0}, "n": {}}))  # type: ignore[arg-type]
    _settle()
    assert len(done) == 1
    conn.answer(m.CounterUpdate("hits", {"p": {"me": 50.0, "other": 6.0}, "n": {}}))
    gevent.joinall(bumps, timeout=5.0, raise_error=True)
    assert sorted(value for i, value in done if i) == [56] * 49
    assert len(_syncs(conn)) == 2 and registry.state("hits").value == 56


def test_a_change_waiting_behind_an_unanswered_sync_times_out_at_its_own_deadline() -> None:
    import gevent

    from topgun.counters import CounterRegistry
    from topgun.errors import OperationTimeout
    conn = _HeldConn()
    registry = CounterRegistry(_CallingRequests(_Provider(conn)), home=None, spawn=gevent.spawn,  # type: ignore[arg-type]
                               node_id="c", actor="me")
    first = gevent.spawn(registry.sync, "hits", 5.0, 1)
    _until(lambda: len(conn.held) == 1)
    with pytest.raises(OperationTimeout, match="our totals"):
        registry.sync("hits", 0.1, 2)
    assert registry.state("hits").value == 3      # the amount stays in the totals for the next sync
    assert len(_syncs(conn)) == 1
    first.kill()


@pytest.mark.parametrize("failover", [True, False], ids=["fails-over", "raises"])
def test_a_sync_lost_with_its_connection_takes_every_change_waiting_behind_it_along(failover: bool) -> None:
    import gevent

    from topgun.counters import CounterRegistry
    from topgun.errors import ConnectionLost
    from topgun.protocol import messages as m
    old, new = _HeldConn("n1"), _HeldConn("n2")
    provider = _Provider(old)
    requests = _FailoverRequests(provider, then=new) if failover else _CallingRequests(provider)
    registry = CounterRegistry(requests, home=None, spawn=gevent.spawn,  # type: ignore[arg-type]
                               node_id="c", actor="me")
    bumps = [gevent.spawn(registry.sync, "hits", 5.0, 1) for _ in range(10)]
    _until(lambda: registry.state("hits").value == 10 and len(old.held) == 1)
    old.lose()
    provider.route = new
    registry.on_disconnected(old, None)  # type: ignore[arg-type]
    if not failover:
        gevent.joinall(bumps, timeout=5.0)
        errors = [g.exception for g in bumps]
        assert all(isinstance(e, ConnectionLost) and e.retryable for e in errors), errors
    else:
        _until(lambda: len(new.held) == 1)
        _settle()
        assert [s.state["p"] for s in _syncs(new)] == [{"me": 10}]  # the ten changes, once each
        new.answer(m.CounterUpdate("hits", {"p": {"me": 10.0}, "n": {}}))
        gevent.joinall(bumps, timeout=5.0, raise_error=True)
        assert [g.value for g in bumps] == [10] * 10
    assert [s.state["p"] for s in _syncs(old)] == [{"me": 1}]
    # Nothing lost, nothing counted twice: the totals are 10, and the next change sends 11.
    assert registry.state("hits").value == 10
    _settle()
    while new.held:  # the re-attach the lost connection started, if it still waits on n2
        new.answer(m.CounterUpdate("hits", {"p": {"me": 10.0}, "n": {}}))
        _settle()
    last = gevent.spawn(registry.sync, "hits", 5.0, 1)
    _until(lambda: len(new.held) == 1)
    assert _syncs(new)[-1].state["p"] == {"me": 11}
    new.answer(m.CounterUpdate("hits", {"p": {"me": 11.0}, "n": {}}))
    assert last.get(timeout=5.0) == 11
    registry.close()


# -- OR-map subscription re-reads ------------------------------------------------------------

def test_an_or_map_re_read_older_than_the_events_handled_meanwhile_does_not_undo_them() -> None:
    # 2.2.0 drops every value of a key on a remove; the remover re-adds the survivors and a
    # subscriber re-reads the key. The re-read's reply (computed before the re-adds) can reach
    # the subscription after the re-adds' events were handled: replacing the view with it lost
    # the re-added values for good (the [real] conformance test failed so, in CI).
    from types import SimpleNamespace

    import gevent

    from topgun.engine.ormap_reads import ORRecord
    from topgun.ormaps import ORMapSubscription
    from topgun.protocol import messages as m
    from topgun.protocol.hlc import Timestamp
    from topgun.protocol.wire import ORMapRecord

    ts = Timestamp(1, 0, "s")

    def add(tag: str, value: str) -> Any:
        return m.ServerEvent("tags", "OR_ADD", "post:1", or_record=ORMapRecord(value, ts, tag))

    class Handle:
        name = "tags"

        def records(self, key: str, *, timeout: float) -> List[ORRecord]:
            gevent.idle()
            sub._event(add("old2", "old"))        # the re-adds' events, handled before the reply
            sub._event(add("crdt2", "crdt"))
            return []                              # the key as it was right after the remove

    rereads: List[Any] = []
    registry = SimpleNamespace(runtime=SimpleNamespace(group=SimpleNamespace(
        spawn=lambda *a: rereads.append(gevent.spawn(*a)))), request_timeout=1.0, home=None)
    sub = ORMapSubscription(registry, Handle(), None)  # type: ignore[arg-type]
    sub._records = {"post:1": {"old1": "old", "py1": "python", "crdt1": "crdt"}}
    sub._event(m.ServerEvent("tags", "OR_REMOVE", "post:1", or_tag="py1"))
    assert gevent.joinall(rereads, timeout=2.0, raise_error=True) == rereads
    assert sorted(sub.results["post:1"]) == ["crdt", "old"]
    assert set(sub._records["post:1"]) == {"old2", "crdt2"}   # the dropped tags are gone, the new ones stay


def test_an_or_map_resync_older_than_the_events_handled_meanwhile_does_not_undo_them() -> None:
    # The same after a reconnect: the whole-map snapshot may be older than events handled
    # while it was on its way; an add made meanwhile stays, a value removed meanwhile stays gone.
    from types import SimpleNamespace

    import gevent

    from topgun.ormaps import ORMapSubscription
    from topgun.protocol import messages as m
    from topgun.protocol.hlc import Timestamp
    from topgun.protocol.wire import ORMapRecord

    ts = Timestamp(1, 0, "s")

    class Handle:
        name = "tags"

    registry = SimpleNamespace(runtime=SimpleNamespace(group=SimpleNamespace(spawn=lambda *a: None)),
                               request_timeout=1.0, home=None)
    sub = ORMapSubscription(registry, Handle(), None)  # type: ignore[arg-type]
    sub._records = {"a": {"a1": "x", "a2": "y"}}

    def snapshot(timeout: float) -> Any:
        gevent.idle()
        sub._event(m.ServerEvent("tags", "OR_ADD", "b", or_record=ORMapRecord("new", ts, "b1")))
        sub._event(m.ServerEvent("tags", "OR_REMOVE", "a", or_tag="a2"))
        return {"a": {"a1": "x", "a2": "y"}, "c": {"c1": "z"}}    # computed before both events
    sub._snapshot = snapshot  # type: ignore[method-assign]
    sub._resync()
    assert sub.results == {"a": ["x"], "b": ["new"], "c": ["z"]}
    assert sub.resyncs == 1
