"""Codec: every registered message survives encode -> decode; unknown and broken frames."""
from __future__ import annotations

import struct
from typing import Dict, Optional, Type

import msgpack
import pytest

from topgun.errors import LocalProtocolError, RemoteProtocolError
from topgun.protocol import codec
from topgun.protocol import messages as m
from topgun.protocol.hlc import Timestamp

TS = Timestamp(1_700_000_000_000, 3, "client-A")
TS2 = Timestamp(1_795_659_366_571, 0, "n1")
REC = m.LWWRecord({"name": "Alice", "age": 30, "tags": ["a", "b"], "blob": b"\x00\xff"}, TS, ttl_ms=500)
OR_REC = m.ORMapRecord("red", TS2, "1795659465690:0:n1")
OP = m.ClientOp(map_name="users", key="u1", id="1", op_type="PUT", record=REC, write_concern="APPLIED", timeout=5000)
ENTRY = {"key": "t1", "records": [OR_REC.to_wire()], "tombstones": ["x"]}
STATE = {"p": {"clientA": 3.0}, "n": {"clientA": 1.0}}

# One realistic instance per wire message class, with optional fields filled in where possible.
SAMPLES: Dict[Type[m.Message], m.Message] = {
    m.AuthRequired: m.AuthRequired(),
    m.Auth: m.Auth(token="eyJhbGciOi.x.y", protocol_version=1),
    m.AuthAck: m.AuthAck(user_id="user-1", protocol_version=1),
    m.AuthFail: m.AuthFail(error="Authentication failed", code=401),
    m.ClientOp: OP,
    m.OpBatch: m.OpBatch(ops=(OP, m.ClientOp(map_name="users", key="u2", id="2", op_type="REMOVE",
                                             record=m.LWWRecord(None, TS)),
                              m.ClientOp(map_name="tags", key="t1", id="3", op_type="OR_ADD", or_record=OR_REC),
                              m.ClientOp(map_name="tags", key="t1", id="4", op_type="OR_REMOVE", or_tag="x")),
                         write_concern="MEMORY", timeout=3000),
    m.OpAck: m.OpAck(last_id="7", achieved_level="APPLIED",
                     results=[{"opId": "7", "success": True, "achievedLevel": "APPLIED"}]),
    m.OpRejected: m.OpRejected(op_id="9", reason="Access Denied", code=403),
    m.ServerEvent: m.ServerEvent(map_name="users", event_type="PUT", key="u1", record=REC),
    m.ServerBatchEvent: m.ServerBatchEvent(events=[
        m.ServerEvent(map_name="users", event_type="PUT", key="u1", record=REC),
        m.ServerEvent(map_name="tags", event_type="OR_ADD", key="t1", or_record=OR_REC, or_tag=OR_REC.tag),
        m.ServerEvent(map_name="users", event_type="REMOVE", key="u2")]),
    m.QuerySub: m.QuerySub(query_id="q1", map_name="people",
                           query={"predicate": {"op": "gte", "attribute": "age", "value": 25},
                                  "sort": {"age": "desc"}, "limit": 2},
                           fields=["name"]),
    m.QueryResp: m.QueryResp(query_id="q1", results=[{"key": "p2", "value": {"name": "Cid"}}],
                             next_cursor="c", has_more=True, cursor_status="VALID", merkle_root_hash=2073254496),
    m.QueryUpdate: m.QueryUpdate(query_id="qB", key="u1", change_type="ENTER", value={"age": 30}),
    m.QueryUnsub: m.QueryUnsub(query_id="q1"),
    m.QuerySyncInit: m.QuerySyncInit(query_id="q3", root_hash=17),
    m.SyncInit: m.SyncInit(map_name="orders", last_sync_timestamp=0),
    m.SyncRespRoot: m.SyncRespRoot(map_name="orders", root_hash=4165003323, timestamp=TS2),
    m.MerkleReqBucket: m.MerkleReqBucket(map_name="orders", path="015/1d"),
    m.SyncRespBuckets: m.SyncRespBuckets(map_name="orders", path="", buckets={"a": 864998145, "8": 3010588868}),
    m.SyncRespLeaf: m.SyncRespLeaf(map_name="orders", path="1d3",
                                   records=[m.LeafRecord("o2", m.LWWRecord({"n": 2}, TS2))]),
    m.SyncResetRequired: m.SyncResetRequired(map_name="orders", reason="gc"),
    m.OrmapSyncInit: m.OrmapSyncInit(map_name="tags", root_hash=1, bucket_hashes={"0": 2}, last_sync_timestamp=5),
    m.OrmapSyncRespRoot: m.OrmapSyncRespRoot(map_name="tags", root_hash=397908941, timestamp=TS2),
    m.OrmapMerkleReqBucket: m.OrmapMerkleReqBucket(map_name="tags", path="08"),
    m.OrmapSyncRespBuckets: m.OrmapSyncRespBuckets(map_name="tags", path="08", buckets={"4": 1}),
    m.OrmapSyncRespLeaf: m.OrmapSyncRespLeaf(map_name="tags", path="084", entries=[ENTRY]),
    m.OrmapDiffRequest: m.OrmapDiffRequest(map_name="tags", keys=["t1", "nokey"]),
    m.OrmapDiffResponse: m.OrmapDiffResponse(map_name="tags", entries=[ENTRY]),
    m.OrmapPushDiff: m.OrmapPushDiff(map_name="tags", entries=[ENTRY]),
    m.PartitionMapRequest: m.PartitionMapRequest(current_version=4),
    m.PartitionMap: m.PartitionMap(
        version=5, partition_count=271,
        nodes=[m.NodeInfo("b1", {"websocket": "ws://127.0.0.1:20051"}, "ACTIVE"),
               m.NodeInfo("b2", {"websocket": "ws://127.0.0.1:20052"}, "FAILED")],
        partitions=[m.PartitionInfo(0, "b1", ("b2",)), m.PartitionInfo(1, "b2", ("b1",))],
        generated_at=1795659804079),
    m.Ping: m.Ping(timestamp=1795659347559),
    m.Pong: m.Pong(timestamp=1795659347559, server_time=1795659347560),
    m.TopicSub: m.TopicSub(topic="chat/room1"),
    m.TopicUnsub: m.TopicUnsub(topic="chat/room1"),
    m.TopicPub: m.TopicPub(topic="chat/room1", data={"text": "hi", "n": 1}),
    m.TopicMessage: m.TopicMessage(topic="chat/room1", data={"text": "hi"}, publisher_id="p", timestamp=17),
    m.LockRequest: m.LockRequest(request_id="L1", name="res-1", ttl=5000),
    m.LockRelease: m.LockRelease(name="res-1", fencing_token=1, request_id="R1"),
    m.LockGranted: m.LockGranted(request_id="L1", name="res-1", fencing_token=0),
    m.LockReleased: m.LockReleased(request_id="R1", name="res-1", success=False),
    m.CounterRequest: m.CounterRequest(name="hits"),
    m.CounterSync: m.CounterSync(name="hits", state=STATE),
    m.CounterResponse: m.CounterResponse(name="hits", state=STATE),
    m.CounterUpdate: m.CounterUpdate(name="hits", state=STATE),
    m.Search: m.Search(request_id="s1", map_name="people", query="rust", options={"limit": 5}),
    m.SearchResp: m.SearchResp(request_id="s1", results=[{"key": "p1", "value": None, "score": 0.105,
                                                          "matchedTerms": ["rust"]}], total_count=1, error="x"),
    m.SearchSub: m.SearchSub(subscription_id="sub1", map_name="docs", query="rust", options={"minScore": 0.5}),
    m.SearchUpdate: m.SearchUpdate(subscription_id="sub1", key="d1", change_type="ENTER", value=None,
                                   score=0.9, matched_terms=["rust"]),
    m.SearchUnsub: m.SearchUnsub(subscription_id="sub1"),
    m.Error: m.Error(code=429, message="server overloaded, try again later", details={"lastId": "5"}),
    m.Batch: m.Batch(count=2, data=b"\x00\x00\x00\x01\xc0\x00\x00\x00\x01\xc0"),
}


def test_every_registered_class_has_a_sample() -> None:
    assert set(SAMPLES) == set(m.REGISTRY.values())
    for type_name, cls in m.REGISTRY.items():
        assert cls.TYPE == type_name


@pytest.mark.parametrize("msg", list(SAMPLES.values()), ids=lambda msg: msg.TYPE)
def test_round_trip(msg: m.Message) -> None:
    data = codec.encode(msg)
    assert codec.decode(data) == msg
    assert codec.decode_wire(data)["type"] == msg.TYPE


@pytest.mark.parametrize("cls", list(m.REGISTRY.values()), ids=lambda cls: cls.TYPE)
def test_shape_on_the_wire(cls: Type[m.Message]) -> None:
    wire = codec.decode_wire(codec.encode(SAMPLES[cls]))
    if cls.SHAPE == "flat":
        assert "payload" not in wire
    else:
        assert set(wire) == {"type", "payload"} and isinstance(wire["payload"], dict)


def test_wire_names_are_camel_case_and_none_is_left_off() -> None:
    assert codec.decode_wire(codec.encode(m.ClientOp(map_name="m", key="k", id="1"))) == {
        "type": "CLIENT_OP", "payload": {"mapName": "m", "key": "k", "id": "1"}}
    assert codec.decode_wire(codec.encode(m.PartitionMapRequest())) == {"type": "PARTITION_MAP_REQUEST", "payload": {}}
    assert codec.decode_wire(codec.encode(m.SyncInit("orders"))) == {"type": "SYNC_INIT", "mapName": "orders"}


def test_decoding_tolerates_extra_fields_and_int_map_keys() -> None:
    # SERVER_EVENT echoes the writer's value verbatim, int map keys included (WIRE.md section 2).
    wire = {"type": "SERVER_EVENT", "extra": 1, "payload": {
        "mapName": "m", "eventType": "PUT", "key": "k", "futureField": [1],
        "record": {"value": {1: "one"}, "timestamp": TS.to_wire(), "ttlMs": None}}}
    msg = codec.decode(msgpack.packb(wire, use_bin_type=True))
    assert isinstance(msg, m.ServerEvent)
    assert msg.record is not None and msg.record.value == {1: "one"}


def test_unknown_types_decode_to_unknown() -> None:
    wire = {"type": "DEVICE_HELLO", "payload": {"deviceId": "d1"}}
    msg = codec.decode(msgpack.packb(wire))
    assert isinstance(msg, m.Unknown)
    assert msg.type_name == "DEVICE_HELLO" and msg.raw == wire
    assert codec.decode(codec.encode(msg)) == msg


GARBAGE = {
    "empty": b"",
    "reserved byte": b"\xc1",
    "truncated map": b"\x82\xa4type",
    "trailing bytes": msgpack.packb({"type": "PING", "timestamp": 1}) + b"\x00",
    "random": bytes(range(200, 256)),
    "array": msgpack.packb(["PING", 1]),
    "scalar": msgpack.packb(42),
    "map without type": msgpack.packb({"payload": {}}),
    "int type": msgpack.packb({"type": 5}),
    "bin type": msgpack.packb({"type": b"PING", "timestamp": 1}, use_bin_type=True),
    "missing required field": msgpack.packb({"type": "PING"}),
    "op ack without lastId": msgpack.packb({"type": "OP_ACK", "payload": {"achievedLevel": "APPLIED"}}),
    "payload not a map": msgpack.packb({"type": "QUERY_RESP", "payload": [1, 2]}),
    "client op payload not a map": msgpack.packb({"type": "CLIENT_OP", "payload": "x"}),
    "op batch ops not a list": msgpack.packb({"type": "OP_BATCH", "payload": {"ops": {}}}),
    "op without key": msgpack.packb({"type": "OP_BATCH", "payload": {"ops": [{"mapName": "m"}]}}),
    "record without timestamp": msgpack.packb({"type": "SERVER_EVENT", "payload": {
        "mapName": "m", "eventType": "PUT", "key": "k", "record": {"value": 1}}}),
    "bad timestamp": msgpack.packb({"type": "SYNC_RESP_ROOT", "payload": {
        "mapName": "m", "rootHash": 0, "timestamp": {"millis": "soon", "counter": 0, "nodeId": "n"}}}),
    "batch event payload not a map": msgpack.packb({"type": "SERVER_BATCH_EVENT", "payload": [1]}),
    "partition map with bad node": msgpack.packb({"type": "PARTITION_MAP", "payload": {
        "version": 1, "partitionCount": 271, "nodes": [{"status": "ACTIVE"}]}}),
}


@pytest.mark.parametrize("data", list(GARBAGE.values()), ids=list(GARBAGE))
def test_garbage_raises_remote_protocol_error(data: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        codec.decode(data)


def test_unencodable_values_raise_local_protocol_error() -> None:
    with pytest.raises(LocalProtocolError):
        codec.encode(m.TopicPub(topic="t", data=object()))
    with pytest.raises(LocalProtocolError):
        codec.encode(m.TopicPub(topic="t", data=2 ** 64))


def test_batch_envelope_is_big_endian_length_prefixed() -> None:
    inner = [codec.encode(m.Ping(1)), codec.encode(m.QueryUnsub("q"))]
    wire = codec.decode_wire(codec.pack_batch(inner))
    assert wire["type"] == "BATCH" and wire["count"] == 2
    assert wire["data"][:4] == struct.pack(">I", len(inner[0]))
    assert codec.unpack_batch(wire["data"]) == inner
    # A truncated prefix ends the list, as on the server.
    assert codec.unpack_batch(wire["data"][:-1]) == inner[:1]
    assert codec.unpack_batch(b"\x00\x00") == []


def test_lww_ops_builds_the_same_op_dicts_as_lww_op() -> None:
    from types import SimpleNamespace

    from topgun.protocol import fastpath
    writes = [SimpleNamespace(id="1", map_name="m", key="a", op_type="PUT", value={"x": [1]}, millis=5, counter=0,
                              node_id="n", ttl_ms=None),
              SimpleNamespace(id="2", map_name="m", key="b", op_type="REMOVE", value=None, millis=5, counter=1,
                              node_id="n", ttl_ms=1000)]
    assert list(fastpath.lww_ops(writes)) == [
        fastpath.lww_op(w.id, w.map_name, w.key, w.op_type, w.value, (w.millis, w.counter, w.node_id), w.ttl_ms)
        for w in writes]
    assert "ttlMs" not in next(fastpath.lww_ops(writes[:1]))["record"]   # unset TTL: not on the wire at all


@pytest.mark.parametrize("write_concern,timeout", [(None, None), ("APPLIED", None), ("PERSISTED", 5000)])
def test_encode_op_batch_gives_the_bytes_of_the_whole_frame(write_concern: Optional[str],
                                                            timeout: Optional[int]) -> None:
    from topgun.protocol import fastpath
    ops = [fastpath.lww_op(str(i), "m", f"k{i}", "PUT", {"n": i, "b": b"x" * i}, (5, i, "n")) for i in range(300)]
    assert (codec.encode_op_batch(iter(ops), len(ops), write_concern, timeout)
            == codec.encode_wire(fastpath.op_batch(ops, write_concern, timeout)))


def test_encode_op_batch_refuses_what_msgpack_cannot_encode_and_a_wrong_count() -> None:
    from topgun.errors import LocalProtocolError
    from topgun.protocol import fastpath
    good = fastpath.lww_op("1", "m", "k", "PUT", 1, (5, 0, "n"))
    with pytest.raises(LocalProtocolError):
        codec.encode_op_batch(iter([good, fastpath.lww_op("2", "m", "k", "PUT", object(), (5, 1, "n"))]), 2)
    with pytest.raises(ValueError):
        codec.encode_op_batch(iter([good]), 2)
