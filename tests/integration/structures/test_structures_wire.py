"""The wire shapes of topics, locks and counters, raw frames against the real 2.2.0 server and one
embedded dev node (``server_url`` is parametrized over both): the dev server must answer as the
real one does (WIRE.md sections 12-14, probe_notes.md section 9)."""
from __future__ import annotations

import time

import gevent
import pytest

pytestmark = pytest.mark.integration

QUIET = 0.3  # how long "no reply" is waited for


def test_topic_messages_go_to_other_subscribers_only(server_url, raw):
    a, b = raw(server_url), raw(server_url)
    for client in (a, b):
        client.send({"type": "TOPIC_SUB", "payload": {"topic": "chat/room1"}})
        assert client.request({"type": "PING", "timestamp": 1}, "PONG")
    a.send({"type": "TOPIC_PUB", "payload": {"topic": "chat/room1", "data": {"text": "hi", "n": 1}}})
    msg = b.expect("TOPIC_MESSAGE")
    assert set(msg["payload"]) == {"topic", "data", "timestamp"}       # no publisherId
    assert msg["payload"]["topic"] == "chat/room1" and msg["payload"]["data"] == {"text": "hi", "n": 1}
    assert [f for f in a.drain(QUIET) if f["type"] == "TOPIC_MESSAGE"] == []
    b.send({"type": "TOPIC_UNSUB", "payload": {"topic": "chat/room1"}})
    assert b.request({"type": "PING", "timestamp": 2}, "PONG")
    a.send({"type": "TOPIC_PUB", "payload": {"topic": "chat/room1", "data": 2}})
    assert [f for f in b.drain(QUIET) if f["type"] == "TOPIC_MESSAGE"] == []


def test_locks_have_no_wait_queue_and_count_fencing_tokens(server_url, raw):
    a, b = raw(server_url), raw(server_url)

    def lock(client, rid, **extra):
        client.send({"type": "LOCK_REQUEST", "payload": {"requestId": rid, "name": "res-1", **extra}})
        while True:        # LOCK_GRANTED or LOCK_RELEASED, whichever answers this request id
            frame = client.recv(2.0)
            assert frame is not None, f"no answer to LOCK_REQUEST {rid}"
            if frame["type"].startswith("LOCK_") and frame["payload"].get("requestId") == rid:
                return frame

    granted = lock(a, "L1", ttl=5000)
    assert granted == {"type": "LOCK_GRANTED", "payload": {"requestId": "L1", "name": "res-1", "fencingToken": 1}}
    assert lock(a, "L1b")["payload"]["fencingToken"] == 1                      # re-entrant for its holder
    assert lock(b, "L2") == {"type": "LOCK_RELEASED", "payload": {"requestId": "L2", "name": "res-1",
                                                                  "success": False}}
    wrong = a.request({"type": "LOCK_RELEASE", "payload": {"requestId": "R0", "name": "res-1", "fencingToken": 9}},
                      "LOCK_RELEASED")
    assert wrong["payload"]["success"] is False
    right = a.request({"type": "LOCK_RELEASE", "payload": {"requestId": "R1", "name": "res-1", "fencingToken": 1}},
                      "LOCK_RELEASED")
    assert right["payload"] == {"requestId": "R1", "name": "res-1", "success": True}
    assert lock(b, "L3")["payload"]["fencingToken"] == 2
    b.close()                    # frees it, a moment later on the real server: ask until granted
    deadline = time.monotonic() + 5.0
    reply = lock(a, "L4")
    while reply["type"] != "LOCK_GRANTED" and time.monotonic() < deadline:
        gevent.sleep(0.05)
        reply = lock(a, f"L4-{time.monotonic()}")
    assert reply["type"] == "LOCK_GRANTED" and reply["payload"]["fencingToken"] == 3


@pytest.mark.parametrize("payload", [{"name": "res-2", "ttl": 0}, {"name": "bad name!"}])
def test_a_zero_ttl_or_a_bad_lock_name_is_refused(server_url, raw, payload):
    reply = raw(server_url).request({"type": "LOCK_REQUEST", "payload": {"requestId": "L9", **payload}},
                                    "LOCK_RELEASED")
    assert reply["payload"]["requestId"] == "L9" and reply["payload"]["success"] is False


def test_counter_sync_merges_per_actor_and_reaches_other_subscribers(server_url, raw):
    a, b = raw(server_url), raw(server_url)
    empty = b.request({"type": "COUNTER_REQUEST", "payload": {"name": "hits"}}, "COUNTER_RESPONSE")
    assert empty["payload"] == {"name": "hits", "state": {"p": {}, "n": {}}}
    a.send({"type": "COUNTER_SYNC", "payload": {"name": "hits", "state": {"p": {"clientA": 3}, "n": {"clientA": 1}}}})
    for client in (a, b):
        update = client.expect("COUNTER_UPDATE")["payload"]
        assert update == {"name": "hits", "state": {"p": {"clientA": 3.0}, "n": {"clientA": 1.0}}}
        assert isinstance(update["state"]["p"]["clientA"], float)
    # an older total changes nothing; a larger one wins
    merged = a.request({"type": "COUNTER_SYNC", "payload": {"name": "hits", "state": {
        "p": {"clientA": 2, "clientB": 5}, "n": {}}}}, "COUNTER_UPDATE")
    assert merged["payload"]["state"] == {"p": {"clientA": 3.0, "clientB": 5.0}, "n": {"clientA": 1.0}}
