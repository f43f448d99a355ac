"""Which reply answers which request.

The server answers out of order (WIRE.md section 1), so replies are matched by a key built
from their content, never by position. ``request_key(msg)`` is the key of the reply a
request waits for; ``reply_key(msg)`` the key a received message completes (None for
pushes such as SERVER_EVENT). ``OP_BATCH`` is acknowledged once, with the id of its last op
(``fastpath.ack_key``).
ERROR frames carry no correlation on the real server; the dev cluster adds
``details.lastId``, which ``error_key`` turns into the ack key it stands for.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Optional, Tuple, Type

from . import fastpath
from . import messages as m

__all__ = ["Key", "request_key", "reply_key", "error_key"]

Key = Tuple[Any, ...]


def _batch_key(msg: m.OpBatch) -> Optional[Key]:
    return fastpath.ack_key(msg.ops[-1].id) if msg.ops and msg.ops[-1].id is not None else None


def _ack_key(msg: m.OpAck) -> Optional[Key]:
    # 2.2.0 answers ORMAP_PUSH_DIFF and SEARCH_UNSUB with an OP_ACK whose lastId is an internal
    # call counter ("20") and which has no achievedLevel; acks of writes always have one. Such
    # an ack must not complete the write batch whose last op id happens to be the same number.
    if msg.achieved_level is None and msg.last_id != "unknown":
        return ("internal_ack", msg.last_id)
    return fastpath.ack_key(msg.last_id)


_REQUESTS: Dict[Type[m.Message], Callable[[Any], Optional[Key]]] = {
    m.ClientOp: lambda msg: fastpath.ack_key(msg.id) if msg.id is not None else None,
    m.OpBatch: _batch_key,
    m.Ping: lambda msg: ("pong", msg.timestamp),
    m.QuerySub: lambda msg: ("query", msg.query_id),
    m.SyncInit: lambda msg: ("sync_root", msg.map_name),
    m.MerkleReqBucket: lambda msg: ("merkle", msg.map_name, msg.path),
    m.OrmapSyncInit: lambda msg: ("ormap_root", msg.map_name),
    m.OrmapMerkleReqBucket: lambda msg: ("ormap_merkle", msg.map_name, msg.path),
    m.OrmapDiffRequest: lambda msg: ("ormap_diff", msg.map_name, tuple(msg.keys)),
    m.PartitionMapRequest: lambda msg: ("partition_map",),
    m.LockRequest: lambda msg: ("lock", msg.request_id),
    m.LockRelease: lambda msg: ("lock", msg.request_id),
    m.CounterRequest: lambda msg: ("counter_response", msg.name),
    m.CounterSync: lambda msg: ("counter", msg.name),
    m.Search: lambda msg: ("search", msg.request_id),
    m.SearchSub: lambda msg: ("search", msg.subscription_id),
    m.Auth: lambda msg: ("auth",),
}

_REPLIES: Dict[Type[m.Message], Callable[[Any], Optional[Key]]] = {
    m.OpAck: _ack_key,
    m.Pong: lambda msg: ("pong", msg.timestamp),
    m.QueryResp: lambda msg: ("query", msg.query_id),
    m.SyncRespRoot: lambda msg: ("sync_root", msg.map_name),
    m.SyncRespBuckets: lambda msg: ("merkle", msg.map_name, msg.path),
    m.SyncRespLeaf: lambda msg: ("merkle", msg.map_name, msg.path),
    m.OrmapSyncRespRoot: lambda msg: ("ormap_root", msg.map_name),
    m.OrmapSyncRespBuckets: lambda msg: ("ormap_merkle", msg.map_name, msg.path),
    m.OrmapSyncRespLeaf: lambda msg: ("ormap_merkle", msg.map_name, msg.path),
    m.OrmapDiffResponse: lambda msg: ("ormap_diff", msg.map_name,
                                      tuple(e.get("key") for e in msg.entries if isinstance(e, dict))),
    m.PartitionMap: lambda msg: ("partition_map",),
    m.LockGranted: lambda msg: ("lock", msg.request_id),
    m.LockReleased: lambda msg: ("lock", msg.request_id),
    m.CounterResponse: lambda msg: ("counter_response", msg.name),
    m.CounterUpdate: lambda msg: ("counter", msg.name),
    m.SearchResp: lambda msg: ("search", msg.request_id),
    m.AuthAck: lambda msg: ("auth",),
    m.AuthFail: lambda msg: ("auth",),
}


def request_key(msg: m.Message) -> Optional[Key]:
    """The key of the reply ``msg`` waits for, or None when it gets no reply."""
    fn = _REQUESTS.get(type(msg))
    return fn(msg) if fn else None


def reply_key(msg: m.Message) -> Optional[Key]:
    """The key of the request ``msg`` answers, or None for pushes."""
    fn = _REPLIES.get(type(msg))
    return fn(msg) if fn else None


def error_key(msg: m.Error) -> Optional[Key]:
    """The ack key an ERROR frame stands for, when the server named it (dev cluster only)."""
    details = msg.details
    if isinstance(details, dict) and isinstance(details.get("lastId"), str):
        return fastpath.ack_key(details["lastId"])
    return None
