"""One embedded node: the behaviour where the dev server differs from 2.2.0 on purpose."""
from __future__ import annotations

import time
from typing import Any

import pytest

from topgun.protocol.hashing import fnv1a32
from topgun.server.rawclient import lww_op

pytestmark = pytest.mark.integration

QUIET = 0.3


def _put(client, m: str, key: str, value: Any, millis: int, op_id: str, **kw: Any):
    return client.request({"type": "CLIENT_OP", "payload": lww_op(m, key, value, millis, op_id=op_id, **kw)},
                          "OP_ACK", where=lambda f: f["payload"]["lastId"] == op_id)


def _values(client, m: str):
    resp = client.request({"type": "QUERY_SUB", "payload": {"queryId": "all", "mapName": m, "query": {}}},
                          "QUERY_RESP")
    client.send({"type": "QUERY_UNSUB", "payload": {"queryId": "all"}})
    return {r["key"]: r["value"] for r in resp["payload"]["results"]}


def test_a_write_never_overwrites_a_newer_one(embedded_node, raw):
    client = raw(embedded_node.urls[0])
    _put(client, "m", "k", "new", 2000, "1")
    _put(client, "m", "k", "old", 1000, "2")
    assert _values(client, "m") == {"k": "new"}
    _put(client, "m", "k", "tie-on-node-id", 2000, "3", node_id="zzz")
    assert _values(client, "m") == {"k": "tie-on-node-id"}


def test_a_tombstone_stops_an_older_put_from_resurrecting_the_key(embedded_node, raw):
    client = raw(embedded_node.urls[0])
    _put(client, "m", "k", "v", 1000, "1")
    _put(client, "m", "k", None, 3000, "2", op_type="REMOVE")
    _put(client, "m", "k", "stale", 2000, "3")
    assert _values(client, "m") == {}
    _put(client, "m", "k", "fresh", 4000, "4")
    assert _values(client, "m") == {"k": "fresh"}


def test_events_and_sync_carry_the_clients_timestamp(embedded_node, raw):
    url = embedded_node.urls[0]
    writer, reader = raw(url), raw(url)
    reader.request({"type": "QUERY_SUB", "payload": {"queryId": "q", "mapName": "m", "query": {}}}, "QUERY_RESP")
    _put(writer, "m", "k", {"a": 1}, 1234, "1", counter=7, node_id="writer")
    event = reader.expect("SERVER_EVENT")["payload"]
    assert event["record"]["timestamp"] == {"millis": 1234, "counter": 7, "nodeId": "writer"}
    root = writer.request({"type": "SYNC_INIT", "mapName": "m"}, "SYNC_RESP_ROOT")["payload"]["rootHash"]
    assert root == fnv1a32("k:1234:7:writer")
    resp = writer.request({"type": "QUERY_SUB", "payload": {"queryId": "q2", "mapName": "m", "query": {}}},
                          "QUERY_RESP")
    assert resp["payload"]["merkleRootHash"] == fnv1a32("k:1234:7:writer")


def test_a_single_node_answers_partition_map_request(embedded_node, raw):
    url = embedded_node.urls[0]
    client = raw(url)
    payload = client.request({"type": "PARTITION_MAP_REQUEST", "payload": {"currentVersion": 0}},
                             "PARTITION_MAP")["payload"]
    assert payload["version"] >= 1 and payload["partitionCount"] == 271
    assert payload["nodes"] == [{"nodeId": "n1", "endpoints": {"websocket": url}, "status": "ACTIVE"}]
    assert [p["partitionId"] for p in payload["partitions"]] == list(range(271))
    assert {p["ownerNodeId"] for p in payload["partitions"]} == {"n1"}
    assert all(p["backupNodeIds"] == [] for p in payload["partitions"])
    client.send({"type": "PARTITION_MAP_REQUEST", "payload": {"currentVersion": payload["version"]}})
    assert client.drain(QUIET) == []


def test_replicated_write_on_a_single_node_reports_applied(embedded_node, raw):
    client = raw(embedded_node.urls[0])
    op = lww_op("m", "k", 1, 1000, op_id="1")
    ack = client.request({"type": "OP_BATCH", "payload": {"ops": [op], "writeConcern": "REPLICATED"}}, "OP_ACK")
    assert ack["payload"] == {"lastId": "1", "achievedLevel": "APPLIED"}


@pytest.mark.parametrize("frame, code", [
    (b"\xc1 not msgpack", 400),
    (b"\x93\x01\x02\x03", 400),                                     # an array, not a map
    ({"type": "NO_SUCH_TYPE"}, 400),
    ({"type": "OP_ACK", "payload": {"lastId": "1"}}, 400),          # server-only type
    ({"type": "CLIENT_OP", "payload": {"mapName": "m", "key": 5}}, 400),
    ({"type": "PING"}, 400),
    ({"type": "QUERY_SUB", "payload": {"queryId": "q", "mapName": "m", "query": {"predicate": {"op": "??"}}}}, 400),
    ({"type": "SQL_QUERY", "payload": {"sql": "SELECT 1", "queryId": "q"}}, 501),
    ({"type": "TOPIC_SUB", "payload": {"topic": "bad topic"}}, 400),       # the real server: silence
    ({"type": "COUNTER_SYNC", "payload": {"name": "c", "state": {"positive": {}, "negative": {}}}}, 400),
])
def test_bad_frames_get_an_error_and_the_connection_lives_on(embedded_node, raw, frame, code):
    client = raw(embedded_node.urls[0])
    if isinstance(frame, bytes):
        client.send_bytes(frame)
    else:
        client.send(frame)
    error = client.expect("ERROR")["payload"]
    assert error["code"] == code and error["message"]
    assert client.request({"type": "PING", "timestamp": 1}, "PONG")


def test_a_rejected_write_names_the_request_in_details(embedded_node, raw):
    client = raw(embedded_node.urls[0])
    ops = [lww_op("m", "k", 1, 1000, op_id="1"), {"mapName": "m", "key": 2, "id": "2"},
           lww_op("m", "k", 1, 1000, op_id="3")]
    client.send({"type": "OP_BATCH", "payload": {"ops": ops}})
    error = client.expect("ERROR")["payload"]
    assert error["code"] == 400 and error["details"] == {"lastId": "3"}
    assert _values(client, "m") == {}          # nothing of the frame was applied


def test_query_ids_are_scoped_per_connection(embedded_node, raw):
    url = embedded_node.urls[0]
    a, b, writer = raw(url), raw(url), raw(url)
    for client in (a, b):
        client.request({"type": "QUERY_SUB", "payload": {"queryId": "same", "mapName": "m", "query": {}}},
                       "QUERY_RESP")
    _put(writer, "m", "k", 1, 1000, "1")
    for client in (a, b):
        assert client.expect("QUERY_UPDATE")["payload"]["queryId"] == "same"


def test_query_sync_init_returns_the_query_root(embedded_node, raw):
    client = raw(embedded_node.urls[0])
    _put(client, "m", "a", {"n": 1}, 1000, "1")
    _put(client, "m", "b", {"n": 2}, 1000, "2")
    client.request({"type": "QUERY_SUB", "payload": {"queryId": "q", "mapName": "m", "query": {"where": {"n": 1}}}},
                   "QUERY_RESP")
    root = client.request({"type": "QUERY_SYNC_INIT", "payload": {"queryId": "q", "rootHash": 0}},
                          "SYNC_RESP_ROOT")["payload"]
    assert root["rootHash"] == fnv1a32("a:1000:0:client") and root["mapName"] == "m"
    client.send({"type": "QUERY_SYNC_INIT", "payload": {"queryId": "unknown", "rootHash": 0}})
    assert client.drain(QUIET) == []


def test_many_pipelined_writes_are_all_acked(embedded_node, raw):
    client = raw(embedded_node.urls[0])
    t = int(time.time() * 1000)
    for j in range(50):
        ops = [lww_op("bulk", f"k{j}-{i}", i, t, op_id=f"{j}-{i}") for i in range(100)]
        client.send({"type": "OP_BATCH", "payload": {"ops": ops, "writeConcern": "REPLICATED"}})
    acks = {client.expect("OP_ACK")["payload"]["lastId"] for _ in range(50)}
    assert acks == {f"{j}-99" for j in range(50)}
    assert embedded_node.node("n1").store.count() == 5000
