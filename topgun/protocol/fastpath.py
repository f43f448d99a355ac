"""The write fast path on the wire: LWW ops, OP_BATCH frames, the ack key, write-concern levels.

Writes are the one place where building a message object per op costs real time, so the
engine builds their wire dicts directly with these functions, and the message classes
(``messages.LWWRecord``, ``messages.OpBatch``) and ``correlate`` use the same ones:

- :func:`lww_record` / :func:`lww_op`: one last-writer-wins op as it goes into
  ``OP_BATCH.payload.ops`` (WIRE.md section 5); the timestamp is an HLC ``(millis, counter,
  node_id)`` triple (:func:`timestamp_wire`). Servers always send ``ttlMs``, nil when unset
  (WIRE.md 4.2): ``lww_record(..., server=True)``. :func:`lww_ops`: the ops of many writes, one at a time.
- :func:`op_batch`: the OP_BATCH frame dict around a list of op dicts; :func:`op_ack` the
  OP_ACK frame dict that answers it.
- :func:`ack_key`: OP_BATCH is acknowledged once, by the OP_ACK carrying its *last* op's id;
  this is the correlation key both the request and its reply map to.
- :data:`WRITE_CONCERNS`: the level names, weakest first (their order is the order of the
  guarantees); :data:`WRITE_CONCERN_LEVELS` their strengths.

The client engine and the dev server both build these frames with these functions.

Not in here: encoding to bytes (``codec``), queues, batching and resending (``topgun.engine``).
"""
from __future__ import annotations

from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

__all__ = ["WRITE_CONCERNS", "WRITE_CONCERN_LEVELS", "timestamp_wire", "lww_record", "lww_op", "lww_ops", "op_batch",
           "op_ack", "ack_key"]

#: The write-concern names, weakest guarantee first.
WRITE_CONCERNS: Tuple[str, ...] = ("FIRE_AND_FORGET", "MEMORY", "APPLIED", "REPLICATED", "PERSISTED")
#: name -> strength (0 = FIRE_AND_FORGET); compare levels with these, never the names.
WRITE_CONCERN_LEVELS: Dict[str, int] = {name: i for i, name in enumerate(WRITE_CONCERNS)}


def timestamp_wire(millis: int, counter: int, node_id: str) -> Dict[str, Any]:
    """An HLC timestamp as it goes on the wire."""
    return {"millis": millis, "counter": counter, "nodeId": node_id}


def lww_record(value: Any, timestamp: Dict[str, Any], ttl_ms: Optional[int] = None, *,
               server: bool = False) -> Dict[str, Any]:
    """An LWW record dict: ``value``, ``timestamp`` (already a wire dict) and ``ttlMs`` if set
    (always, nil when unset, with ``server=True``: what servers send)."""
    record = {"value": value, "timestamp": timestamp}
    if ttl_ms is not None or server:
        record["ttlMs"] = ttl_ms
    return record


def lww_op(op_id: str, map_name: str, key: str, op_type: str, value: Any, ts: Sequence[Any],
           ttl_ms: Optional[int] = None) -> Dict[str, Any]:
    """One PUT or REMOVE op for ``OP_BATCH.payload.ops``; ``ts`` is ``(millis, counter, node_id)``."""
    record = {"value": value, "timestamp": {"millis": ts[0], "counter": ts[1], "nodeId": ts[2]}}
    if ttl_ms is not None:
        record["ttlMs"] = ttl_ms
    return {"id": op_id, "mapName": map_name, "key": key, "opType": op_type, "record": record}


def lww_ops(writes: Iterable[Any]) -> Iterator[Dict[str, Any]]:
    """:func:`lww_op` of each write, read from its attributes (``id``, ``map_name``, ``key``,
    ``op_type``, ``value``, ``millis``, ``counter``, ``node_id``, ``ttl_ms``), one at a time
    (``codec.encode_op_batch`` packs each and drops it): the same dicts, no two calls per op."""
    for w in writes:
        if w.ttl_ms is None:
            yield {"id": w.id, "mapName": w.map_name, "key": w.key, "opType": w.op_type,
                   "record": {"value": w.value,
                              "timestamp": {"millis": w.millis, "counter": w.counter, "nodeId": w.node_id}}}
        else:
            yield {"id": w.id, "mapName": w.map_name, "key": w.key, "opType": w.op_type,
                   "record": {"value": w.value,
                              "timestamp": {"millis": w.millis, "counter": w.counter, "nodeId": w.node_id},
                              "ttlMs": w.ttl_ms}}


def op_batch(ops: List[Dict[str, Any]], write_concern: Optional[str] = None,
             timeout: Optional[int] = None) -> Dict[str, Any]:
    """The OP_BATCH frame dict carrying ``ops`` (op dicts, in order)."""
    payload: Dict[str, Any] = {"ops": ops}
    if write_concern is not None:
        payload["writeConcern"] = write_concern
    if timeout is not None:
        payload["timeout"] = timeout
    return {"type": "OP_BATCH", "payload": payload}


def op_ack(last_id: str, achieved_level: Optional[str] = None) -> Dict[str, Any]:
    """The OP_ACK frame dict for the OP_BATCH whose last op has id ``last_id``."""
    payload: Dict[str, Any] = {"lastId": last_id}
    if achieved_level is not None:
        payload["achievedLevel"] = achieved_level
    return {"type": "OP_ACK", "payload": payload}


def ack_key(last_op_id: Optional[str]) -> Tuple[str, Optional[str]]:
    """The correlation key of the OP_ACK for a batch whose last op has id ``last_op_id``."""
    return ("ack", last_op_id)
