"""One frozen dataclass per TopGun wire message.

A message's class name is the CamelCase of its ``type`` string (``CLIENT_OP`` ->
``ClientOp``). Python fields are snake_case; on the wire they are camelCase. Each class
knows its *shape* (WIRE.md section 2): ``flat`` (fields beside ``type``) or ``payload``
(fields under ``payload``). Optional fields that are ``None`` are left off the wire.

``to_wire()`` gives the msgpack-ready dict and ``from_wire(d)`` builds the message from a
decoded dict; ``codec`` does the bytes. The write hot path (``ClientOp``, ``OpBatch``,
``OpAck``) has hand-written converters; the rest share one generic table-driven converter.

Not in here: anything about sockets, time or correlation of replies (see ``correlate``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from ..errors import RemoteProtocolError
from . import fastpath
from .hlc import Timestamp
from .wire import (  # noqa: F401
    FLAT,
    PAYLOAD,
    REGISTRY,
    LeafRecord,
    LWWRecord,
    Message,
    NodeInfo,
    ORMapRecord,
    PartitionInfo,
    camel,
    message,
    message_class,
    nested,
)

__all__ = [
    "Message", "REGISTRY", "message_class", "LWWRecord", "ORMapRecord", "NodeInfo", "PartitionInfo",
    "AuthRequired", "Auth", "AuthAck", "AuthFail", "ClientOp", "OpBatch", "OpAck", "OpRejected",
    "ServerEvent", "ServerBatchEvent", "QuerySub", "QueryResp", "QueryUpdate", "QueryUnsub",
    "QuerySyncInit", "SyncInit", "SyncRespRoot", "MerkleReqBucket", "SyncRespBuckets", "SyncRespLeaf",
    "SyncResetRequired", "OrmapSyncInit", "OrmapSyncRespRoot", "OrmapMerkleReqBucket",
    "OrmapSyncRespBuckets", "OrmapSyncRespLeaf", "OrmapDiffRequest", "OrmapDiffResponse",
    "OrmapPushDiff", "PartitionMapRequest", "PartitionMap", "Ping", "Pong", "TopicSub",
    "TopicUnsub", "TopicPub", "TopicMessage", "LockRequest", "LockRelease", "LockGranted",
    "LockReleased", "CounterRequest", "CounterSync", "CounterResponse", "CounterUpdate", "Search",
    "SearchResp", "SearchSub", "SearchUpdate", "SearchUnsub", "Error",
    "Batch", "Unknown", "camel",
]

@message("AUTH_REQUIRED", FLAT)
class AuthRequired(Message):
    pass


@message("AUTH", FLAT)
class Auth(Message):
    token: str = field(repr=False)  # a secret: never in a repr or a log line
    protocol_version: Optional[int] = None


@message("AUTH_ACK", FLAT)
class AuthAck(Message):
    user_id: Optional[str] = None
    protocol_version: Optional[int] = None


@message("AUTH_FAIL", FLAT)
class AuthFail(Message):
    error: Optional[str] = None
    code: Optional[int] = None


# --------------------------------------------------------------------------------------------
# Writes


@message("CLIENT_OP")
class ClientOp(Message):
    """One write. Also the element type of ``OpBatch.ops``."""

    map_name: str
    key: str
    id: Optional[str] = None
    op_type: Optional[str] = None
    record: Optional[LWWRecord] = nested(LWWRecord, default=None)
    or_record: Optional[ORMapRecord] = nested(ORMapRecord, default=None)
    or_tag: Optional[str] = None
    write_concern: Optional[str] = None
    timeout: Optional[int] = None

    def op_wire(self) -> Dict[str, Any]:
        """The op as it appears inside CLIENT_OP.payload or OP_BATCH.payload.ops."""
        d: Dict[str, Any] = {"mapName": self.map_name, "key": self.key}
        if self.id is not None:
            d["id"] = self.id
        if self.op_type is not None:
            d["opType"] = self.op_type
        if self.record is not None:
            d["record"] = self.record.to_wire()
        if self.or_record is not None:
            d["orRecord"] = self.or_record.to_wire()
        if self.or_tag is not None:
            d["orTag"] = self.or_tag
        if self.write_concern is not None:
            d["writeConcern"] = self.write_concern
        if self.timeout is not None:
            d["timeout"] = self.timeout
        return d

    def to_wire(self) -> Dict[str, Any]:
        return {"type": "CLIENT_OP", "payload": self.op_wire()}

    @classmethod
    def from_op_wire(cls, d: Dict[str, Any]) -> "ClientOp":
        try:
            key, map_name = d["key"], d["mapName"]
            record = d.get("record")
            or_record = d.get("orRecord")
            return cls(
                map_name=map_name, key=key, id=d.get("id"), op_type=d.get("opType"),
                record=LWWRecord.from_wire(record) if record is not None else None,
                or_record=ORMapRecord.from_wire(or_record) if or_record is not None else None,
                or_tag=d.get("orTag"), write_concern=d.get("writeConcern"), timeout=d.get("timeout"))
        except (KeyError, TypeError, AttributeError) as exc:
            raise RemoteProtocolError(f"bad op: missing or malformed {exc}") from exc

    @classmethod
    def from_wire(cls, d: Dict[str, Any]) -> "ClientOp":
        payload = d.get("payload")
        if not isinstance(payload, dict):
            raise RemoteProtocolError("CLIENT_OP: payload is not a map")
        return cls.from_op_wire(payload)


@message("OP_BATCH")
class OpBatch(Message):
    ops: Tuple[ClientOp, ...]
    write_concern: Optional[str] = None
    timeout: Optional[int] = None

    def to_wire(self) -> Dict[str, Any]:
        return fastpath.op_batch([op.op_wire() for op in self.ops], self.write_concern, self.timeout)

    @classmethod
    def from_wire(cls, d: Dict[str, Any]) -> "OpBatch":
        payload = d.get("payload")
        if not isinstance(payload, dict) or not isinstance(payload.get("ops"), list):
            raise RemoteProtocolError("OP_BATCH: payload.ops is not a list")
        return cls(tuple(ClientOp.from_op_wire(op) for op in payload["ops"]),
                   payload.get("writeConcern"), payload.get("timeout"))


@message("OP_ACK")
class OpAck(Message):
    last_id: str
    achieved_level: Optional[str] = None
    results: Optional[List[Dict[str, Any]]] = None

    @classmethod
    def from_wire(cls, d: Dict[str, Any]) -> "OpAck":
        payload = d.get("payload")
        if not isinstance(payload, dict) or "lastId" not in payload:
            raise RemoteProtocolError("OP_ACK: missing payload.lastId")
        return cls(str(payload["lastId"]), payload.get("achievedLevel"), payload.get("results"))


@message("OP_REJECTED")
class OpRejected(Message):
    op_id: str
    reason: str
    code: Optional[int] = None


# --------------------------------------------------------------------------------------------
# Change notification and live queries


@message("SERVER_EVENT")
class ServerEvent(Message):
    map_name: str
    event_type: str
    key: str
    record: Optional[LWWRecord] = nested(LWWRecord, default=None)
    or_record: Optional[ORMapRecord] = nested(ORMapRecord, default=None)
    or_tag: Optional[str] = None


@message("SERVER_BATCH_EVENT")
class ServerBatchEvent(Message):
    events: List[ServerEvent]

    def to_wire(self) -> Dict[str, Any]:
        return {"type": self.TYPE, "payload": {"events": [e.to_wire()["payload"] for e in self.events]}}

    @classmethod
    def from_wire(cls, d: Dict[str, Any]) -> "ServerBatchEvent":
        events = (d.get("payload") or {}).get("events") or []
        return cls([ServerEvent.from_wire({"payload": e}) for e in events])  # type: ignore[misc]


@message("QUERY_SUB")
class QuerySub(Message):
    query_id: str
    map_name: str
    query: Dict[str, Any] = field(default_factory=dict)
    fields: Optional[List[str]] = None


@message("QUERY_RESP")
class QueryResp(Message):
    query_id: str
    results: List[Dict[str, Any]] = field(default_factory=list)
    next_cursor: Optional[str] = None
    has_more: Optional[bool] = None
    cursor_status: Optional[str] = None
    merkle_root_hash: Optional[int] = None


@message("QUERY_UPDATE")
class QueryUpdate(Message):
    query_id: str
    key: str
    change_type: str
    value: Any = None


@message("QUERY_UNSUB")
class QueryUnsub(Message):
    query_id: str


@message("QUERY_SYNC_INIT")
class QuerySyncInit(Message):
    query_id: str
    root_hash: int = 0


# --------------------------------------------------------------------------------------------
# LWW Merkle sync


@message("SYNC_INIT", FLAT)
class SyncInit(Message):
    map_name: str
    last_sync_timestamp: Optional[int] = None


@message("SYNC_RESP_ROOT")
class SyncRespRoot(Message):
    map_name: str
    root_hash: int
    timestamp: Optional[Timestamp] = nested(Timestamp, default=None)


@message("MERKLE_REQ_BUCKET")
class MerkleReqBucket(Message):
    map_name: str
    path: str


@message("SYNC_RESP_BUCKETS")
class SyncRespBuckets(Message):
    map_name: str
    path: str
    buckets: Dict[str, int] = field(default_factory=dict)


@message("SYNC_RESP_LEAF")
class SyncRespLeaf(Message):
    map_name: str
    path: str
    records: List[LeafRecord] = nested(LeafRecord, many=True, default=())


@message("SYNC_RESET_REQUIRED")
class SyncResetRequired(Message):
    map_name: str
    reason: Optional[str] = None


# ORMap sync: entries stay plain dicts ({key, records, tombstones}); the client only relays them.


@message("ORMAP_SYNC_INIT", FLAT)
class OrmapSyncInit(Message):
    map_name: str
    root_hash: int = 0
    bucket_hashes: Dict[str, int] = field(default_factory=dict)
    last_sync_timestamp: Optional[int] = None


@message("ORMAP_SYNC_RESP_ROOT")
class OrmapSyncRespRoot(Message):
    map_name: str
    root_hash: int
    timestamp: Optional[Timestamp] = nested(Timestamp, default=None)


@message("ORMAP_MERKLE_REQ_BUCKET")
class OrmapMerkleReqBucket(Message):
    map_name: str
    path: str


@message("ORMAP_SYNC_RESP_BUCKETS")
class OrmapSyncRespBuckets(Message):
    map_name: str
    path: str
    buckets: Dict[str, int] = field(default_factory=dict)


@message("ORMAP_SYNC_RESP_LEAF")
class OrmapSyncRespLeaf(Message):
    map_name: str
    path: str
    entries: List[Dict[str, Any]] = field(default_factory=list)


@message("ORMAP_DIFF_REQUEST")
class OrmapDiffRequest(Message):
    map_name: str
    keys: List[str] = field(default_factory=list)


@message("ORMAP_DIFF_RESPONSE")
class OrmapDiffResponse(Message):
    map_name: str
    entries: List[Dict[str, Any]] = field(default_factory=list)


@message("ORMAP_PUSH_DIFF")
class OrmapPushDiff(Message):
    map_name: str
    entries: List[Dict[str, Any]] = field(default_factory=list)


# --------------------------------------------------------------------------------------------
# Cluster


@message("PARTITION_MAP_REQUEST")
class PartitionMapRequest(Message):
    current_version: Optional[int] = None


@message("PARTITION_MAP")
class PartitionMap(Message):
    """The wire frame. The routing view built from it is ``topgun.cluster.partition_map``."""

    version: int
    partition_count: int
    nodes: List[NodeInfo] = nested(NodeInfo, many=True, default=())
    partitions: List[PartitionInfo] = nested(PartitionInfo, many=True, default=())
    generated_at: Optional[int] = None


# --------------------------------------------------------------------------------------------
# Heartbeat (flat)


@message("PING", FLAT)
class Ping(Message):
    timestamp: int


@message("PONG", FLAT)
class Pong(Message):
    timestamp: int
    server_time: Optional[int] = None


# --------------------------------------------------------------------------------------------
# Topics, locks, counters


@message("TOPIC_SUB")
class TopicSub(Message):
    topic: str


@message("TOPIC_UNSUB")
class TopicUnsub(Message):
    topic: str


@message("TOPIC_PUB")
class TopicPub(Message):
    topic: str
    data: Any = None


@message("TOPIC_MESSAGE")
class TopicMessage(Message):
    topic: str
    data: Any = None
    publisher_id: Optional[str] = None
    timestamp: Optional[int] = None


@message("LOCK_REQUEST")
class LockRequest(Message):
    request_id: str
    name: str
    ttl: Optional[int] = None


@message("LOCK_RELEASE")
class LockRelease(Message):
    name: str
    fencing_token: int
    request_id: Optional[str] = None


@message("LOCK_GRANTED")
class LockGranted(Message):
    request_id: str
    name: str
    fencing_token: int


@message("LOCK_RELEASED")
class LockReleased(Message):
    request_id: str
    name: str
    success: bool


@message("COUNTER_REQUEST")
class CounterRequest(Message):
    name: str


@message("COUNTER_SYNC")
class CounterSync(Message):
    name: str
    state: Dict[str, Dict[str, float]] = field(default_factory=lambda: {"p": {}, "n": {}})


@message("COUNTER_RESPONSE")
class CounterResponse(Message):
    name: str
    state: Dict[str, Dict[str, float]] = field(default_factory=lambda: {"p": {}, "n": {}})


@message("COUNTER_UPDATE")
class CounterUpdate(Message):
    name: str
    state: Dict[str, Dict[str, float]] = field(default_factory=lambda: {"p": {}, "n": {}})


# --------------------------------------------------------------------------------------------
# Full-text search (WIRE.md section 17; probed on 2.2.0: SEARCH_SUB is answered with a
# SEARCH_RESP whose requestId is the subscriptionId, SEARCH_UNSUB with an internal OP_ACK)


@message("SEARCH")
class Search(Message):
    request_id: str
    map_name: str
    query: str
    options: Optional[Dict[str, Any]] = None


@message("SEARCH_RESP")
class SearchResp(Message):
    request_id: str
    results: List[Dict[str, Any]] = field(default_factory=list)
    total_count: Optional[int] = None
    error: Optional[str] = None


@message("SEARCH_SUB")
class SearchSub(Message):
    subscription_id: str
    map_name: str
    query: str
    options: Optional[Dict[str, Any]] = None


@message("SEARCH_UPDATE")
class SearchUpdate(Message):
    subscription_id: str
    key: str
    change_type: str
    value: Any = None
    score: float = 0.0
    matched_terms: List[str] = field(default_factory=list)


@message("SEARCH_UNSUB")
class SearchUnsub(Message):
    subscription_id: str


# --------------------------------------------------------------------------------------------
# Errors and envelopes


@message("ERROR")
class Error(Message):
    """``code`` is an int on the real server (429, 500); the dev cluster also uses ``"NOT_OWNER"``."""

    code: Any
    message: str = ""
    details: Any = None


@message("BATCH", FLAT)
class Batch(Message):
    """Client-to-server envelope: ``data`` holds u32 big-endian length-prefixed frames."""

    count: int
    data: bytes


@dataclass(frozen=True, slots=True)
class Unknown(Message):
    """A frame whose type this library does not know; kept so callers can log it."""

    type_name: str
    raw: Dict[str, Any]

    def to_wire(self) -> Dict[str, Any]:
        return dict(self.raw)
