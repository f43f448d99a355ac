"""OR-map reads on one connection: the records of some keys, or every key through the ORMap Merkle tree.

``read_keys`` is one ORMAP_DIFF_REQUEST (one round trip; unknown keys come back empty, in the
order asked). ``walk`` reads a whole OR-map on one node (WIRE.md 9): ORMAP_SYNC_INIT, then each
level of ORMAP_MERKLE_REQ_BUCKET pipelined, then the leaves. Records come back as
:class:`ORRecord` (value, tag, timestamp).

Not in here: writes (``topgun.ormaps`` sends them as requests), routing and retries (the caller
runs these inside ``RequestRunner.call``).
"""
from __future__ import annotations

from typing import Any, Dict, List, NamedTuple, Optional, Tuple

import gevent

from ..errors import OperationTimeout, RemoteProtocolError
from ..protocol import messages as m
from ..protocol.hlc import Timestamp
from ..transport.connection import Connection

__all__ = ["ORRecord", "read_keys", "walk"]


class ORRecord(NamedTuple):
    """One value of an OR-map key with the tag that identifies it (server-assigned on 2.2.0)."""

    value: Any
    tag: str
    timestamp: Optional[Timestamp] = None



def _records(entry: Any) -> List[ORRecord]:
    out = []
    for rec in entry.get("records") or () if isinstance(entry, dict) else ():
        if isinstance(rec, dict) and isinstance(rec.get("tag"), str):
            ts = rec.get("timestamp")
            stamp = Timestamp.from_wire(ts) if isinstance(ts, dict) else None
            out.append(ORRecord(rec.get("value"), rec["tag"], stamp))
    return out


def read_keys(conn: Connection, map_name: str, keys: List[str], timeout: float) -> Dict[str, List[ORRecord]]:
    """The records of ``keys`` (ORMAP_DIFF_REQUEST; unknown keys come back empty)."""
    reply = conn.fresh_request(m.OrmapDiffRequest(map_name, list(keys)), timeout)
    if not isinstance(reply, m.OrmapDiffResponse):
        raise RemoteProtocolError(f"expected ORMAP_DIFF_RESPONSE, got {reply.TYPE}")
    out: Dict[str, List[ORRecord]] = {k: [] for k in keys}
    for entry in reply.entries:
        if isinstance(entry, dict) and entry.get("key") in out:
            out[entry["key"]] = _records(entry)
    return out


def walk(conn: Connection, map_name: str, timeout: float) -> Dict[str, List[ORRecord]]:
    """Every key of an OR-map on one node, through its ORMap Merkle tree (aggregate paths).

    ``ORMAP_SYNC_INIT`` first: an unknown or empty map has root 0, and its paths get no reply.
    Buckets of hash 0 are skipped: 2.2.0 keeps emptied nodes and reports them with hash 0.
    """
    deadline = conn.clock.monotonic() + timeout
    root = conn.fresh_request(m.OrmapSyncInit(map_name), timeout)
    if not isinstance(root, m.OrmapSyncRespRoot):
        raise RemoteProtocolError(f"expected ORMAP_SYNC_RESP_ROOT, got {root.TYPE}")
    out: Dict[str, List[ORRecord]] = {}
    if not root.root_hash:
        return out
    frontier = [""]
    while frontier:
        waiting: List[Tuple[str, Any]] = []
        paths, frontier = frontier, []
        try:
            results = conn.fresh_requests_async([m.OrmapMerkleReqBucket(map_name, p) for p in paths], deadline)
            waiting.extend(zip(paths, results))
            for path, result in waiting:
                try:
                    reply = result.get(timeout=max(0.0, deadline - conn.clock.monotonic()))
                except gevent.Timeout:
                    raise OperationTimeout(f"no ORMap Merkle reply for {path!r} from {conn.url}") from None
                if isinstance(reply, m.OrmapSyncRespBuckets):
                    frontier.extend(path + c for c, h in reply.buckets.items() if h and len(path) < 3)
                elif isinstance(reply, m.OrmapSyncRespLeaf):
                    for entry in reply.entries:
                        recs = _records(entry)
                        if recs:
                            out[entry["key"]] = recs
        finally:
            for path, result in waiting:
                if not result.ready():
                    conn.abandon(("ormap_merkle", map_name, path), result)
    return out
