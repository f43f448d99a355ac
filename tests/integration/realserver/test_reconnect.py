"""The server is SIGKILLed and restarted on the same port: queued writes are delivered afterwards."""
from __future__ import annotations

from typing import List

import gevent
import pytest
from realserver_helpers import MakeClient, wait_until

from topgun.errors import OperationTimeout
from topgun.queries import Change
from topgun.testing.realserver import RealServer

pytestmark = pytest.mark.realserver

WAIT = 15.0  # reconnect back-off is capped at 2 s; this leaves plenty of room


def test_writes_queued_while_the_server_is_down_are_delivered_after_restart(
        topgun_real_server: RealServer, make_client: MakeClient) -> None:
    server = topgun_real_server
    client = make_client(server.url)
    orders = client.map("orders")
    orders.set("before", 0)
    port = server.port

    server.kill()
    wait_until(lambda: not client.connected, WAIT, "the client noticed the dead server")
    pending = [orders.set_async(f"o{i}", {"n": i}, timeout=30.0) for i in range(50)]
    removal = orders.remove_async("o0", timeout=30.0)
    # While the server is down nothing can be acknowledged; the writes wait in the offline queue.
    assert not any(r.ready() for r in pending) and not removal.ready()
    assert client.pending_writes == 51

    server.restart()
    assert server.port == port
    for result in pending + [removal]:
        assert result.get(timeout=WAIT) == "APPLIED"
    assert client.connected and client.pending_writes == 0
    assert client.runtime.provider.reconnects >= 1

    fresh = make_client(server.url).map("orders")
    assert fresh.get("o0") is None  # the remove came after the put of the same key
    assert fresh.get("o49") == {"n": 49}
    entries = fresh.entries()
    assert {f"o{i}" for i in range(1, 50)} <= set(entries)
    assert all(entries[f"o{i}"] == {"n": i} for i in range(1, 50))


def test_blocking_calls_during_the_outage_time_out_by_their_deadline(
        topgun_real_server: RealServer, make_client: MakeClient) -> None:
    server = topgun_real_server
    client = make_client(server.url)
    notes = client.map("notes")
    server.kill()
    wait_until(lambda: not client.connected, WAIT, "the client noticed the dead server")
    for call in (lambda: notes.set("k", 1, timeout=0.3), lambda: notes.get("k", timeout=0.3)):
        with gevent.Timeout(0.3 + 2.0, AssertionError("a blocking call outlived its deadline")):
            with pytest.raises(OperationTimeout):
                call()
    server.restart()
    notes.set("k", 2, timeout=WAIT)
    assert notes.get("k") == 2


def test_a_live_query_resubscribes_after_restart(topgun_real_server: RealServer, make_client: MakeClient) -> None:
    server = topgun_real_server
    writer = make_client(server.url).map("feed")
    got: List[Change] = []
    sub = make_client(server.url).map("feed").subscribe(got.append)
    writer.set("a", 1)
    wait_until(lambda: got, WAIT, "the first change")

    server.kill()
    server.restart()
    # Both clients reconnect; the subscriber sends QUERY_SUB again on its new connection.
    wait_until(lambda: sub.resubscribes >= 1, WAIT, "the query resubscribed")
    writer.set("b", 2, timeout=WAIT)
    wait_until(lambda: any(c.key == "b" for c in got), WAIT, "a change after the restart")
    assert Change("b", 2, "ENTER") in got
    sub.close()
