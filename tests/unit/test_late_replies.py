"""A reply that comes after its request timed out still reaches the structure it is for.

``Connection.abandon`` keeps a timed-out request registered, so that its late reply cannot
answer a newer request of the same key (a stale read). Before that, a late reply was a push
and went to ``on_message``, where the structures act on it: the lock registry releases a grant
nobody waits for (else the lock stays held by a client that thinks it failed, and every other
client is refused it until its ttl, or for ever without one), and the counter registry merges
the counter's state. Here a scripted server on a memory pair answers only when the test says.
Also here: what keeping them registered costs, and when they are given up.
"""
from __future__ import annotations

from types import SimpleNamespace
from typing import Any, Callable, Iterator, List

import gevent
import msgpack
import pytest

from topgun.clock import FakeClock, GeventClock
from topgun.counters import CounterRegistry
from topgun.errors import OperationTimeout
from topgun.locks import Lock, LockRegistry
from topgun.protocol import codec
from topgun.protocol import messages as m
from topgun.transport import connection as connection_module
from topgun.transport.connection import Connection
from topgun.transport.memory import MemoryTransport, memory_pair

pytestmark = pytest.mark.timeout(20)


class SilentServer:
    """Answers PING; keeps every other request it receives, unanswered, in ``received``."""

    def __init__(self, transport: MemoryTransport) -> None:
        self.transport = transport
        self.received: List[m.Message] = []

    def serve(self) -> None:
        while (data := self.transport.recv()) is not None:
            msg = codec.decode(data)
            if isinstance(msg, m.Ping):
                self.transport.send(codec.encode(m.Pong(msg.timestamp, server_time=msg.timestamp)))
            else:
                self.received.append(msg)

    def push(self, frame: Any) -> None:
        self.transport.send(msgpack.packb(frame, use_bin_type=True))


class _Requests:
    """A RequestRunner stand-in: one attempt on the one connection."""

    def __init__(self, conn: Connection) -> None:
        self.conn, self.clock, self.closed, self.request_timeout = conn, GeventClock(), False, 1.0
        self.provider = SimpleNamespace(connection_for_key=lambda key: conn)

    def call(self, fn: Callable[[Connection, float], Any], *, key: Any = None, timeout: float = 1.0,
             op: str = "request") -> Any:
        return fn(self.conn, timeout)


@pytest.fixture
def wired() -> Iterator[Any]:
    """``(conn, server, deliver)``: set ``deliver[0]`` to the listener of the connection's pushes."""
    greenlets: List[gevent.Greenlet] = []
    servers: List[SilentServer] = []
    deliver: List[Callable[[Connection, m.Message], None]] = [lambda conn, msg: None]

    def factory(url: str, timeout: float) -> MemoryTransport:
        client_end, server_end = memory_pair()
        servers.append(SilentServer(server_end))
        greenlets.append(gevent.spawn(servers[-1].serve))
        return client_end

    conn = Connection("ws://127.0.0.1:1/ws", transport_factory=factory, ping_interval=None,
                      on_message=lambda c, msg: deliver[0](c, msg)).open()
    yield conn, servers[0], deliver
    conn.close()
    gevent.killall(greenlets, timeout=1.0)


def _until(check: Callable[[], bool], timeout: float = 2.0) -> bool:
    deadline = GeventClock().monotonic() + timeout
    while not check():
        if GeventClock().monotonic() >= deadline:
            return False
        gevent.sleep(0.01)
    return True


def test_a_lock_granted_after_its_request_timed_out_is_released(wired: Any) -> None:
    conn, server, deliver = wired
    requests = _Requests(conn)
    registry = LockRegistry(requests, home=None, spawn=gevent.spawn)  # type: ignore[arg-type]
    deliver[0] = registry.on_message
    lock = Lock(SimpleNamespace(runtime=SimpleNamespace(locks=registry, clock=requests.clock)), "res")
    with pytest.raises(OperationTimeout):
        registry.try_acquire(lock, None, 0.1)          # the server is slow: no answer in time
    (request,) = server.received
    assert isinstance(request, m.LockRequest)
    server.push({"type": "LOCK_GRANTED", "payload": {"requestId": request.request_id, "name": "res",
                                                     "fencingToken": 5}})
    # Granted after all, to a caller that has given up: the client must give it back, or
    # nobody else gets the lock (no ttl: until this connection closes).
    assert _until(lambda: any(isinstance(msg, m.LockRelease) for msg in server.received)), server.received
    (release,) = [msg for msg in server.received if isinstance(msg, m.LockRelease)]
    assert (release.name, release.fencing_token) == ("res", 5)
    assert not lock.locked()


def test_a_counter_reply_after_its_read_timed_out_is_still_merged(wired: Any) -> None:
    conn, server, deliver = wired
    registry = CounterRegistry(_Requests(conn), home=None, spawn=gevent.spawn,  # type: ignore[arg-type]
                               node_id="me", actor="me:1")
    deliver[0] = registry.on_message
    registry.state("hits")
    with pytest.raises(OperationTimeout):
        registry._read("hits", conn, 0.1)
    server.push({"type": "COUNTER_RESPONSE", "payload": {"name": "hits", "state": {"p": {"other": 4.0}, "n": {}}}})
    # The node's state as of then: merging it can only make ours more complete (a PN counter).
    assert _until(lambda: registry.state("hits").value == 4)


def test_abandoning_many_requests_does_not_look_at_every_earlier_one_each_time(wired: Any, monkeypatch: Any) -> None:
    # A timed-out walk of a big map abandons up to 4,096 leaf requests one after the other.
    # Each abandon looked at every request abandoned before it: for 4,096, about 2 s of CPU
    # with the hub blocked (every other call of the process stalled; measured by
    # benchmarks/abandon_sweep.py). Counted here as ready() calls on the abandoned results.
    conn, _, _ = wired
    looks = [0]

    class Counting(connection_module.AsyncResult):  # type: ignore[misc,name-defined]
        def ready(self) -> bool:
            looks[0] += 1
            return bool(super().ready())

    monkeypatch.setattr(connection_module, "AsyncResult", Counting)
    n = 2000
    keys = [("merkle", "m", f"{i:03x}") for i in range(n)]
    results = [conn.expect(k) for k in keys]
    for k, r in zip(keys, results):
        conn.abandon(k, r)
    assert looks[0] <= 2 * n                         # each abandon looks at its own request, not at all of them
    assert conn.pending_count == 0


def test_a_request_abandoned_longer_than_late_reply_s_ago_is_given_up_by_the_next_abandon() -> None:
    clock = FakeClock()
    client_end, server_end = memory_pair()
    server = SilentServer(server_end)
    serving = gevent.spawn(server.serve)
    pushes: List[m.Message] = []
    conn = Connection("ws://127.0.0.1:1/ws", clock=clock, transport_factory=lambda url, timeout: client_end,
                      ping_interval=None, late_reply_s=10.0, on_message=lambda c, msg: pushes.append(msg)).open()
    try:
        first, second, third = (("merkle", "m", p) for p in ("001/", "002/", "003/"))
        a = conn.expect(first)
        conn.abandon(first, a)
        clock.sleep(5.0)
        b = conn.expect(second)
        conn.abandon(second, b)
        clock.sleep(6.0)                             # the first was given up on 11 s ago, the second 6 s
        conn.abandon(third, conn.expect(third))
        for path in ("001/", "002/"):
            server.push({"type": "SYNC_RESP_BUCKETS", "payload": {"mapName": "m", "path": path, "buckets": {}}})
        assert _until(lambda: len(pushes) == 2)
        assert not a.ready() and b.ready()           # the first's reply is a push only; the second took its own
        b2 = conn.expect(second)                     # and the second is no longer registered either
        assert b2 is not b
    finally:
        conn.close()
        gevent.killall([serving], timeout=1.0)
