"""Reply correlation by content: each request's key equals the key of the reply that answers it."""
from __future__ import annotations

from typing import List, Tuple

import pytest

from topgun.protocol import codec, correlate
from topgun.protocol import messages as m
from topgun.protocol.hlc import Timestamp

TS = Timestamp(1_700_000_000_000, 0, "n1")
STATE = {"p": {}, "n": {}}


def op(op_id: str | None, key: str = "k") -> m.ClientOp:
    return m.ClientOp(map_name="users", key=key, id=op_id, op_type="PUT", record=m.LWWRecord(1, TS))


# (request, reply that answers it); replies as the server sends them, decoded from bytes.
PAIRS: List[Tuple[m.Message, m.Message]] = [
    (op("7"), m.OpAck(last_id="7", achieved_level="APPLIED")),
    (m.OpBatch(ops=(op("1", "a"), op("2", "b"), op("3", "c"))), m.OpAck(last_id="3", achieved_level="APPLIED")),
    (m.Ping(1795659347559), m.Pong(1795659347559, server_time=1795659347600)),
    (m.QuerySub("q-1", "people", {}), m.QueryResp("q-1", results=[])),
    (m.SyncInit("orders"), m.SyncRespRoot("orders", 0, TS)),
    (m.MerkleReqBucket("orders", ""), m.SyncRespBuckets("orders", "", {"a": 1})),
    (m.MerkleReqBucket("orders", "015/1d3"), m.SyncRespLeaf("orders", "015/1d3", [])),
    (m.OrmapSyncInit("tags"), m.OrmapSyncRespRoot("tags", 5, TS)),
    (m.OrmapMerkleReqBucket("tags", "08"), m.OrmapSyncRespBuckets("tags", "08", {"4": 1})),
    (m.OrmapMerkleReqBucket("tags", "084"), m.OrmapSyncRespLeaf("tags", "084", [])),
    (m.OrmapDiffRequest("tags", ["t1", "t2"]), m.OrmapDiffResponse("tags", [
        {"key": "t1", "records": [], "tombstones": []}, {"key": "t2", "records": [], "tombstones": []}])),
    (m.Search("s1", "docs", "rust"), m.SearchResp("s1", results=[], total_count=0)),
    (m.SearchSub("sub-1", "docs", "rust"), m.SearchResp("sub-1", results=[], total_count=0)),
    (m.PartitionMapRequest(current_version=0), m.PartitionMap(version=5, partition_count=271)),
    (m.LockRequest("L1", "res-1", ttl=5000), m.LockGranted("L1", "res-1", 1)),
    (m.LockRequest("L2", "res-1"), m.LockReleased("L2", "res-1", False)),  # busy lock: denied at once
    (m.LockRelease("res-1", 1, request_id="R1"), m.LockReleased("R1", "res-1", True)),
    (m.CounterRequest("hits"), m.CounterResponse("hits", STATE)),
    (m.CounterSync("hits", STATE), m.CounterUpdate("hits", STATE)),
    (m.Auth("token"), m.AuthAck(user_id="user-1")),
    (m.Auth("bad"), m.AuthFail(error="Authentication failed")),
]


@pytest.mark.parametrize("request_msg,reply", PAIRS, ids=[f"{a.TYPE}->{b.TYPE}" for a, b in PAIRS])
def test_reply_key_matches_request_key(request_msg: m.Message, reply: m.Message) -> None:
    key = correlate.request_key(request_msg)
    assert key is not None
    assert correlate.reply_key(codec.decode(codec.encode(reply))) == key


def test_keys_of_different_requests_differ() -> None:
    # Same subject, same key (the one AUTH of a connection); all the rest differ. A counter read
    # waits for COUNTER_RESPONSE only: a COUNTER_UPDATE pushed by another client's change, still
    # on its way, must not answer it with a value from before that request.
    assert correlate.request_key(m.CounterRequest("hits")) != correlate.request_key(m.CounterSync("hits", STATE))
    assert correlate.reply_key(m.CounterUpdate("hits", STATE)) != correlate.request_key(m.CounterRequest("hits"))
    keys = [correlate.request_key(req) for req, _ in PAIRS if not isinstance(req, m.Auth)]
    assert len(set(keys)) == len(keys)
    assert correlate.request_key(m.Ping(1)) != correlate.request_key(m.Ping(2))
    assert correlate.request_key(m.MerkleReqBucket("a", "1")) != correlate.request_key(m.MerkleReqBucket("b", "1"))
    assert correlate.request_key(m.MerkleReqBucket("a", "1")) != correlate.request_key(m.MerkleReqBucket("a", "12"))
    assert correlate.request_key(m.SyncInit("a")) != correlate.request_key(m.OrmapSyncInit("a"))


def test_an_op_batch_is_acknowledged_by_its_last_op_only() -> None:
    batch = m.OpBatch(ops=(op("1", "a"), op("2", "b")))
    assert correlate.request_key(batch) == ("ack", "2")
    assert correlate.reply_key(m.OpAck(last_id="1")) != correlate.request_key(batch)
    # The server answers "unknown" when the last op has no id: nothing can be waited for.
    assert correlate.request_key(m.OpBatch(ops=(op("1", "a"), op(None, "b")))) is None
    assert correlate.request_key(m.OpBatch(ops=())) is None
    assert correlate.request_key(op(None)) is None


@pytest.mark.parametrize("msg", [
    m.ServerEvent("users", "PUT", "u1", m.LWWRecord(1, TS)),
    m.QueryUpdate("q-1", "u1", "ENTER", {"a": 1}),
    m.TopicMessage("chat", {"x": 1}),
    m.AuthRequired(),
    m.Error(429, "server overloaded, try again later"),
    m.Unknown("DEVICE_ACK", {"type": "DEVICE_ACK"}),
], ids=lambda msg: getattr(msg, "TYPE", "") or type(msg).__name__)
def test_pushes_answer_no_request(msg: m.Message) -> None:
    assert correlate.reply_key(msg) is None


@pytest.mark.parametrize("msg", [
    m.QueryUnsub("q-1"), m.TopicSub("t"), m.TopicPub("t", 1), m.TopicUnsub("t"), m.Pong(1), m.OpAck("1"),
])
def test_fire_and_forget_messages_wait_for_nothing(msg: m.Message) -> None:
    assert correlate.request_key(msg) is None


def test_error_key_uses_details_last_id_when_present() -> None:
    assert correlate.error_key(m.Error("NOT_OWNER", "moved", {"lastId": "12", "partitionId": 3})) == ("ack", "12")
    assert correlate.error_key(m.Error(429, "server overloaded, try again later")) is None
    assert correlate.error_key(m.Error(500, "boom", {"lastId": 12})) is None
    assert correlate.error_key(m.Error(500, "boom", "text")) is None


def test_ormap_reads_of_different_keys_get_their_own_replies() -> None:
    # Two gets of one OR-map in flight on one connection: each reply names its keys, in order.
    a, b = m.OrmapDiffRequest("tags", ["a"]), m.OrmapDiffRequest("tags", ["b"])
    assert correlate.request_key(a) != correlate.request_key(b)
    reply = m.OrmapDiffResponse("tags", [{"key": "b", "records": [], "tombstones": []}])
    assert correlate.reply_key(codec.decode(codec.encode(reply))) == correlate.request_key(b)


def test_an_internal_ack_does_not_complete_a_write() -> None:
    # 2.2.0 answers SEARCH_UNSUB (and ORMAP_PUSH_DIFF) with OP_ACK {lastId: <its call counter>} and
    # no achievedLevel; a write batch whose last op id is that same number must not take it.
    internal = codec.decode(codec.encode(m.OpAck(last_id="20")))
    assert correlate.reply_key(internal) != correlate.request_key(op("20"))
    empty_batch = codec.decode(codec.encode(m.OpAck(last_id="unknown")))
    assert correlate.reply_key(empty_batch) == correlate.request_key(m.OpBatch(ops=(op("unknown"),)))
