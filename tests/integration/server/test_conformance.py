"""The same raw-frame tests against the real TopGun 2.2.0 server and one embedded dev node.

Only behaviour both share is tested here (msgpack over a WebSocket, no client logic). What
the dev server does differently on purpose (see ``topgun.server`` docstring) is tested in
``test_single_node.py``. Values are compared as dicts, because the real server re-orders
map keys when it stores them.
"""
from __future__ import annotations

import time
import uuid
from typing import Any, Dict, List

import pytest

from topgun.protocol.hashing import merkle_path, partition_id
from topgun.server.rawclient import RawClient, lww_op
from topgun.testing.jwt import make_hs256_token

pytestmark = pytest.mark.integration

QUIET = 0.3  # how long "no reply" is waited for


def _now() -> int:
    return int(time.time() * 1000)


def _map() -> str:
    return f"m-{uuid.uuid4().hex[:8]}"


def _put(client: RawClient, map_name: str, key: str, value: Any, op_id: str) -> Dict[str, Any]:
    return client.request({"type": "CLIENT_OP", "payload": lww_op(map_name, key, value, _now(), op_id=op_id)},
                          "OP_ACK", where=lambda m: m["payload"]["lastId"] == op_id)


def _sub(client: RawClient, map_name: str, query: Dict[str, Any], qid: str = "",
         fields: Any = None) -> List[Dict[str, Any]]:
    qid = qid or uuid.uuid4().hex
    payload: Dict[str, Any] = {"queryId": qid, "mapName": map_name, "query": query}
    if fields is not None:
        payload["fields"] = fields
    resp = client.request({"type": "QUERY_SUB", "payload": payload}, "QUERY_RESP",
                          where=lambda m: m["payload"]["queryId"] == qid)
    return resp["payload"]["results"]


# -- connecting, auth, ping -------------------------------------------------------------------

def test_no_auth_server_sends_nothing_on_connect_and_ignores_auth(server_factory, raw):
    client = raw(server_factory().url)
    assert client.drain(QUIET) == []
    client.send({"type": "AUTH", "token": "whatever", "protocolVersion": 1})
    assert client.drain(QUIET) == []


def test_ping_is_answered_with_pong_echo_and_server_time(server_factory, raw):
    client = raw(server_factory().url)
    before = _now()
    pong = client.request({"type": "PING", "timestamp": 1234}, "PONG")
    assert pong["timestamp"] == 1234
    assert before - 5000 <= pong["serverTime"] <= _now() + 5000


def test_root_path_serves_the_same_protocol(server_factory, raw):
    url = server_factory().url
    client = raw(url[:-len("/ws")] + "/")
    assert client.request({"type": "PING", "timestamp": 7}, "PONG")["timestamp"] == 7


def test_jwt_mode_requires_auth_and_drops_frames_before_it(server_factory, raw):
    server = server_factory(jwt=True)
    client = raw(server.url)
    assert client.expect("AUTH_REQUIRED") == {"type": "AUTH_REQUIRED"}
    client.send({"type": "PING", "timestamp": 1})
    assert client.drain(QUIET) == []
    ack = client.request({"type": "AUTH", "token": make_hs256_token(server.jwt_secret, "alice")}, "AUTH_ACK")
    assert ack == {"type": "AUTH_ACK", "userId": "alice"}
    assert client.request({"type": "PING", "timestamp": 2}, "PONG")["timestamp"] == 2
    # a second AUTH is ignored
    client.send({"type": "AUTH", "token": make_hs256_token(server.jwt_secret, "bob")})
    assert [m for m in client.drain(QUIET) if m["type"] != "PARTITION_MAP"] == []


@pytest.mark.parametrize("token_kw", [
    {"secret": "wrong"},
    {"exp_in": -120},
    {"exp_in": None},
    {"sub": 42},
], ids=["bad-signature", "expired-past-leeway", "no-exp", "numeric-sub"])
def test_jwt_mode_rejects_bad_tokens_and_closes(server_factory, raw, token_kw):
    server = server_factory(jwt=True)
    client = raw(server.url)
    client.expect("AUTH_REQUIRED")
    kw = dict(token_kw)
    secret = kw.pop("secret", server.jwt_secret)
    token = _numeric_sub_token(secret) if kw.pop("sub", None) else make_hs256_token(secret, "alice", **kw)
    fail = client.request({"type": "AUTH", "token": token}, "AUTH_FAIL")
    assert fail == {"type": "AUTH_FAIL", "error": "Authentication failed"}
    assert client.wait_closed(5.0)


def _numeric_sub_token(secret: str) -> str:
    import base64
    import hashlib
    import hmac
    import json

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()
    signing = b64(b'{"alg":"HS256","typ":"JWT"}') + "." + b64(json.dumps({"sub": 42, "exp": time.time() + 60}).encode())
    return signing + "." + b64(hmac.new(secret.encode(), signing.encode(), hashlib.sha256).digest())


def test_jwt_expiry_has_sixty_seconds_of_leeway(server_factory, raw):
    server = server_factory(jwt=True)
    client = raw(server.url)
    client.expect("AUTH_REQUIRED")
    token = make_hs256_token(server.jwt_secret, "late", exp_in=-30)
    assert client.request({"type": "AUTH", "token": token}, "AUTH_ACK")["userId"] == "late"


# -- writes and acks -------------------------------------------------------------------------

def test_client_op_is_acked_with_its_id(server_factory, raw):
    client = raw(server_factory().url)
    ack = _put(client, _map(), "k", {"a": 1}, "17")
    assert ack == {"type": "OP_ACK", "payload": {"lastId": "17", "achievedLevel": "APPLIED"}}


def test_op_batch_ack_carries_the_last_ops_id(server_factory, raw):
    client = raw(server_factory().url)
    m, t = _map(), _now()
    ops = [lww_op(m, f"k{i}", {"i": i}, t, op_id=str(i)) for i in range(1, 6)]
    ack = client.request({"type": "OP_BATCH", "payload": {"ops": ops, "writeConcern": "APPLIED"}}, "OP_ACK")
    assert ack["payload"] == {"lastId": "5", "achievedLevel": "APPLIED"}
    ops[-1].pop("id")
    ack = client.request({"type": "OP_BATCH", "payload": {"ops": ops}}, "OP_ACK")
    assert ack["payload"]["lastId"] == "unknown"


def test_empty_op_batch_is_acked_with_unknown_and_no_level(server_factory, raw):
    client = raw(server_factory().url)
    ack = client.request({"type": "OP_BATCH", "payload": {"ops": []}}, "OP_ACK")
    assert ack == {"type": "OP_ACK", "payload": {"lastId": "unknown"}}


def test_written_values_come_back_in_a_query(server_factory, raw):
    client = raw(server_factory().url)
    m = _map()
    _put(client, m, "a", {"name": "Ann", "age": 30}, "1")
    _put(client, m, "b", {"name": "Bob", "age": 20}, "2")
    results = _sub(client, m, {})
    assert sorted((r["key"], r["value"]["name"], r["value"]["age"]) for r in results) == [
        ("a", "Ann", 30), ("b", "Bob", 20)]


def test_remove_deletes_the_key(server_factory, raw):
    client = raw(server_factory().url)
    m = _map()
    _put(client, m, "a", {"n": 1}, "1")
    op = lww_op(m, "a", None, _now() + 1, op_id="2", op_type="REMOVE")
    client.request({"type": "CLIENT_OP", "payload": op}, "OP_ACK")
    assert _sub(client, m, {}) == []


# -- events -----------------------------------------------------------------------------------

def test_events_go_to_subscribed_connections_only_and_not_to_the_writer(server_factory, raw):
    url = server_factory().url
    writer, subscriber, bystander = raw(url), raw(url), raw(url)
    m = _map()
    _sub(writer, m, {})
    _sub(subscriber, m, {})
    _sub(subscriber, m, {"where": {"n": 1}})          # a second query: still one SERVER_EVENT
    _put(writer, m, "k", {"n": 1}, "1")
    event = subscriber.expect("SERVER_EVENT")["payload"]
    assert (event["mapName"], event["eventType"], event["key"]) == (m, "PUT", "k")
    assert event["record"]["value"] == {"n": 1} and event["record"]["ttlMs"] is None
    rest = subscriber.drain(QUIET)
    assert [x["type"] for x in rest] == ["QUERY_UPDATE", "QUERY_UPDATE"]
    assert {x["payload"]["changeType"] for x in rest} == {"ENTER"}
    assert [x for x in writer.drain(QUIET) if x["type"] in ("SERVER_EVENT", "QUERY_UPDATE")] == []
    assert bystander.drain(QUIET) == []


def test_query_updates_enter_update_leave_and_remove_event(server_factory, raw):
    url = server_factory().url
    writer, subscriber = raw(url), raw(url)
    m = _map()
    qid = "q-adults"
    _sub(subscriber, m, {"predicate": {"op": "gte", "attribute": "age", "value": 18}}, qid, fields=["name"])
    t = _now()

    def put(value: Any, n: int) -> None:
        writer.request({"type": "CLIENT_OP", "payload": lww_op(m, "p", value, t + n, op_id=str(n))}, "OP_ACK")

    def updates() -> List[Any]:
        return [(x["payload"]["changeType"], x["payload"]["value"]) for x in subscriber.drain(QUIET)
                if x["type"] == "QUERY_UPDATE"]

    put({"name": "Kid", "age": 10}, 1)
    assert updates() == []
    put({"name": "Ann", "age": 20}, 2)
    assert updates() == [("ENTER", {"name": "Ann"})]
    put({"name": "Ann", "age": 21}, 3)
    assert updates() == [("UPDATE", {"name": "Ann"})]
    put({"name": "Ann", "age": 5}, 4)
    assert updates() == [("LEAVE", None)]
    put({"name": "Ann", "age": 30}, 5)
    assert updates() == [("ENTER", {"name": "Ann"})]
    writer.request({"type": "CLIENT_OP", "payload": lww_op(m, "p", None, t + 6, op_id="6", op_type="REMOVE")},
                   "OP_ACK")
    frames = subscriber.drain(QUIET)
    assert frames[0] == {"type": "SERVER_EVENT", "payload": {"mapName": m, "eventType": "REMOVE", "key": "p"}}
    assert frames[1]["payload"] == {"queryId": qid, "key": "p", "value": None, "changeType": "LEAVE"}


def test_unsubscribed_queries_get_no_more_events(server_factory, raw):
    url = server_factory().url
    writer, subscriber = raw(url), raw(url)
    m = _map()
    _sub(subscriber, m, {}, "q1")
    subscriber.send({"type": "QUERY_UNSUB", "payload": {"queryId": "q1"}})
    assert subscriber.drain(QUIET) == []
    _put(writer, m, "k", {"n": 1}, "1")
    assert subscriber.drain(QUIET) == []


# -- queries ----------------------------------------------------------------------------------

PEOPLE = {
    "p0": {"name": "Ann", "age": 30, "city": "Oslo", "tags": ["a", "b"], "nick": None},
    "p1": {"name": "Bob", "age": 25, "city": "Rome", "tags": ["b"]},
    "p2": {"name": "Cid", "age": 41, "city": "Oslo", "tags": ["c", "a"]},
    "p3": {"name": "Dee", "age": 19, "city": "Lima", "tags": []},
}


@pytest.fixture
def people(server_factory, raw):
    client = raw(server_factory().url)
    m = _map()
    t = _now()
    ops = [lww_op(m, k, v, t, op_id=k) for k, v in PEOPLE.items()]
    client.request({"type": "OP_BATCH", "payload": {"ops": ops}}, "OP_ACK")
    return client, m


def P(op: str, attribute: str = "", value: Any = None, children: Any = None) -> Dict[str, Any]:
    node: Dict[str, Any] = {"op": op}
    if attribute:
        node["attribute"] = attribute
    if value is not None:
        node["value"] = value
    if children is not None:
        node["children"] = children
    return node


@pytest.mark.parametrize("query, expected", [
    ({}, {"p0", "p1", "p2", "p3"}),
    ({"where": {"city": "Oslo"}}, {"p0", "p2"}),
    ({"where": {"city": "Oslo", "age": 41}}, {"p2"}),
    ({"where": {"age": {"$gt": 20}}}, set()),
    ({"predicate": P("eq", "name", "Bob")}, {"p1"}),
    ({"predicate": P("neq", "city", "Oslo")}, {"p1", "p3"}),
    ({"predicate": P("gt", "age", 25)}, {"p0", "p2"}),
    ({"predicate": P("gte", "age", 25)}, {"p0", "p1", "p2"}),
    ({"predicate": P("lt", "age", 25)}, {"p3"}),
    ({"predicate": P("lte", "age", 25)}, {"p1", "p3"}),
    ({"predicate": P("like", "name", "C%")}, {"p2"}),
    ({"predicate": P("like", "name", "%e%")}, {"p3"}),
    ({"predicate": P("like", "name", "b_b")}, {"p1"}),
    ({"predicate": P("between", "age", [25, 30])}, {"p0", "p1"}),
    ({"predicate": P("between", "age", {"from": 25, "to": 30})}, set()),
    ({"predicate": P("isNull", "nick")}, {"p0", "p1", "p2", "p3"}),
    ({"predicate": P("isNotNull", "city")}, {"p0", "p1", "p2", "p3"}),
    ({"predicate": P("neq", "nick", "x")}, {"p0"}),
    ({"predicate": P("regex", "city", "^O")}, {"p0", "p2"}),
    ({"predicate": P("in", "name", ["Ann", "Dee", "Zed"])}, {"p0", "p3"}),
    ({"predicate": P("startsWith", "city", "Ro")}, {"p1"}),
    ({"predicate": P("endsWith", "name", "d")}, {"p2"}),
    ({"predicate": P("containsAll", "tags", ["a", "b"])}, {"p0"}),
    ({"predicate": P("containsAny", "tags", ["c", "b"])}, {"p0", "p1", "p2"}),
    ({"predicate": P("and", children=[P("eq", "city", "Oslo"), P("gt", "age", 35)])}, {"p2"}),
    ({"predicate": P("or", children=[P("eq", "name", "Ann"), P("like", "name", "C%")])}, {"p0", "p2"}),
    ({"predicate": P("not", children=[P("eq", "city", "Oslo")])}, {"p1", "p3"}),
    ({"predicate": P("eq", "_key", "p0")}, set()),
], ids=lambda v: str(v)[:60])
def test_query_filters(people, query, expected):
    client, m = people
    assert {r["key"] for r in _sub(client, m, query)} == expected


def test_query_sort_limit_and_fields(people):
    client, m = people
    results = _sub(client, m, {"predicate": P("gte", "age", 20), "sort": {"age": "desc"}, "limit": 2},
                   fields=["name"])
    assert results == [{"key": "p2", "value": {"name": "Cid"}}, {"key": "p0", "value": {"name": "Ann"}}]
    results = _sub(client, m, {"sort": {"name": "asc"}})
    assert [r["key"] for r in results] == ["p0", "p1", "p2", "p3"]


def test_query_resp_merkle_root_is_zero_when_empty(server_factory, raw):
    client = raw(server_factory().url)
    client.send({"type": "QUERY_SUB", "payload": {"queryId": "q", "mapName": _map(), "query": {}}})
    assert client.expect("QUERY_RESP")["payload"] == {"queryId": "q", "results": [], "merkleRootHash": 0}


# -- Merkle sync ------------------------------------------------------------------------------

def test_sync_init_of_unknown_map_has_root_zero(server_factory, raw):
    client = raw(server_factory().url)
    m = _map()
    root = client.request({"type": "SYNC_INIT", "mapName": m, "lastSyncTimestamp": 0}, "SYNC_RESP_ROOT")
    assert root["payload"]["mapName"] == m and root["payload"]["rootHash"] == 0
    assert set(root["payload"]["timestamp"]) == {"millis", "counter", "nodeId"}


def test_routed_partition_root_is_always_answered(server_factory, raw):
    client = raw(server_factory().url)
    resp = client.request({"type": "MERKLE_REQ_BUCKET", "payload": {"mapName": _map(), "path": "015/"}},
                          "SYNC_RESP_BUCKETS")
    assert resp["payload"]["buckets"] == {} and resp["payload"]["path"] == "015/"


def test_nonexistent_paths_get_no_reply(server_factory, raw):
    client = raw(server_factory().url)
    m = _map()
    for path in ("015/a", "015/ab", "015/abc", "", "a", "abc"):
        client.send({"type": "MERKLE_REQ_BUCKET", "payload": {"mapName": m, "path": path}})
    assert client.drain(QUIET) == []


def test_routed_walk_reaches_the_written_record(server_factory, raw):
    client = raw(server_factory().url)
    m = _map()
    _put(client, m, "walk-me", {"v": 1}, "1")
    pid, path = f"{partition_id('walk-me'):03d}", merkle_path("walk-me")
    for depth in range(3):
        resp = client.request({"type": "MERKLE_REQ_BUCKET", "payload": {"mapName": m, "path": f"{pid}/{path[:depth]}"}},
                              "SYNC_RESP_BUCKETS")
        assert list(resp["payload"]["buckets"]) == [f"{pid}/{path[:depth + 1]}"]
    leaf = client.request({"type": "MERKLE_REQ_BUCKET", "payload": {"mapName": m, "path": f"{pid}/{path[:3]}"}},
                          "SYNC_RESP_LEAF")["payload"]
    assert [r["key"] for r in leaf["records"]] == ["walk-me"]
    assert leaf["records"][0]["record"]["value"] == {"v": 1}
    assert leaf["records"][0]["record"]["ttlMs"] is None


def test_aggregate_walk_and_root_agree(server_factory, raw):
    client = raw(server_factory().url)
    m = _map()
    t = _now()
    keys = [f"key-{i}" for i in range(20)]
    client.request({"type": "OP_BATCH", "payload": {"ops": [lww_op(m, k, i, t, op_id=k) for i, k in enumerate(keys)]}},
                   "OP_ACK")
    root = client.request({"type": "SYNC_INIT", "mapName": m}, "SYNC_RESP_ROOT")["payload"]["rootHash"]
    top = client.request({"type": "MERKLE_REQ_BUCKET", "payload": {"mapName": m, "path": ""}},
                         "SYNC_RESP_BUCKETS")["payload"]["buckets"]
    assert all(len(c) == 1 for c in top)
    assert sum(top.values()) & 0xFFFFFFFF == root
    assert set(top) == {merkle_path(k)[0] for k in keys}
    first = merkle_path(keys[0])
    leaf = client.request({"type": "MERKLE_REQ_BUCKET", "payload": {"mapName": m, "path": first[:3]}},
                          "SYNC_RESP_LEAF")["payload"]
    assert keys[0] in {r["key"] for r in leaf["records"]}


# -- robustness shared by both ----------------------------------------------------------------

def test_frames_over_16_mib_close_the_connection(server_factory, raw):
    url = server_factory().url
    client = raw(url)
    client.send({"type": "CLIENT_OP", "payload": lww_op(_map(), "big", "x" * (17 * 1024 * 1024), _now(), op_id="1")})
    assert client.wait_closed(5.0)
    assert raw(url).request({"type": "PING", "timestamp": 1}, "PONG")  # the server lives on


def test_15_mib_frame_is_accepted(server_factory, raw):
    client = raw(server_factory().url)
    op = lww_op(_map(), "big", "x" * (15 * 1024 * 1024), _now(), op_id="1")
    assert client.request({"type": "CLIENT_OP", "payload": op}, "OP_ACK", timeout=10.0)["payload"]["lastId"] == "1"


def test_batch_envelope_frames_are_processed(server_factory, raw):
    import struct

    import msgpack
    client = raw(server_factory().url)
    inner = [msgpack.packb({"type": "PING", "timestamp": n}) for n in (1, 2)]
    data = b"".join(struct.pack(">I", len(b)) + b for b in inner)
    client.send({"type": "BATCH", "count": 2, "data": data})
    assert sorted(m["timestamp"] for m in client.drain(QUIET) if m["type"] == "PONG") == [1, 2]
