"""Point reads through the per-partition Merkle tree (WIRE.md section 8.3).

A routed request for ``"PPP/"`` (PPP = the key's partition) is always answered, even for an
unknown map; deeper paths that do not exist are never answered. So ``point_read`` sends all
four levels at once (one round trip) and walks the replies in order, stopping at the first
level whose child is missing: a missing key costs no timeout. A leaf emptied by removes is
answered as an empty bucket list (real server 2.2.0), which also means "missing".
"""
from __future__ import annotations

from typing import Any, Dict, List, Tuple

import gevent

from ..errors import OperationTimeout, RemoteProtocolError
from ..protocol import messages as m
from ..protocol.hashing import merkle_path, partition_id
from ..transport.connection import Connection

__all__ = ["point_read", "point_record", "walk_all", "MISSING"]

MISSING = object()


def leaf_paths(key: str) -> Tuple[str, str, str, str]:
    prefix = f"{partition_id(key):03d}/"
    h = merkle_path(key)
    return (prefix, prefix + h[:1], prefix + h[:2], prefix + h[:3])


def point_read(conn: Connection, map_name: str, key: str, timeout: float) -> Any:
    """The value stored under ``key`` (``MISSING`` when absent). One round trip."""
    record = point_record(conn, map_name, key, timeout)
    return MISSING if record is MISSING else record.value


def point_record(conn: Connection, map_name: str, key: str, timeout: float) -> Any:
    """The ``LWWRecord`` (value and the server's timestamp) stored under ``key``, or ``MISSING``."""
    paths = leaf_paths(key)
    deadline = conn.clock.monotonic() + timeout
    # Replies carry only their path: fresh requests, never one in flight from before this read.
    waiting: List[Tuple[Any, Any]] = []
    answered = 1   # requests known to get a reply: "PPP/" always; a deeper path once its parent lists it
    try:
        # All four in one write: one send, one wake-up of the node.
        results = conn.fresh_requests_async([m.MerkleReqBucket(map_name, p) for p in paths], deadline)
        waiting.extend((("merkle", map_name, p), result) for p, result in zip(paths, results))
        for level in range(3):
            reply = _get(conn, waiting[level][1], deadline, paths[level])
            if not isinstance(reply, m.SyncRespBuckets):
                raise RemoteProtocolError(f"expected SYNC_RESP_BUCKETS for {paths[level]}, got {reply.TYPE}")
            if paths[level + 1] not in reply.buckets:
                return MISSING
            answered = level + 2
        leaf = _get(conn, waiting[3][1], deadline, paths[3])
        if not isinstance(leaf, m.SyncRespLeaf):
            # Probed on 2.2.0: once the last key of a leaf is removed, the server keeps the
            # node and answers its path with an empty SYNC_RESP_BUCKETS instead of a leaf.
            return MISSING
        for item in leaf.records:
            if item.key == key:
                return item.record
        return MISSING
    except BaseException:
        # Given up (a timeout, mostly) before knowing which deeper paths exist: each reply may
        # still come, and must not answer a later read. One that never comes (a missing path)
        # delays the next read of this key by at most the connection's late_reply_s.
        answered = len(paths)
        raise
    finally:
        # Returning MISSING: the deeper paths do not exist and get no reply (WIRE.md 8.3), so
        # they are forgotten. A reply still due is left to its request (abandoned).
        for i, (k, result) in enumerate(waiting):
            if not result.ready():
                (conn.abandon if i < answered else conn.forget)(k, result)


def _get(conn: Connection, result: Any, deadline: float, path: str) -> m.Message:
    remaining = deadline - conn.clock.monotonic()
    try:
        return result.get(timeout=max(0.0, remaining))  # type: ignore[no-any-return]
    except gevent.Timeout:
        raise OperationTimeout(f"no Merkle reply for {path} from {conn.url}") from None


def walk_all(conn: Connection, map_name: str, timeout: float) -> Dict[str, Any]:
    """Every entry of a map, read through its Merkle tree in aggregate mode.

    For maps too large for one QUERY_RESP (the server stops at 10,000 results and has no
    paging). Each level is requested at once (pipelined): 1 + 16 + 256 requests, then one
    per leaf that exists. Aggregate paths cover every partition the node answers for (on the
    dev cluster, every owner's).
    """
    deadline = conn.clock.monotonic() + timeout
    frontier = [""]
    for _ in range(3):
        replies = _fan_out(conn, map_name, frontier, deadline)
        frontier = [path + child for path, reply in replies
                    if isinstance(reply, m.SyncRespBuckets) for child in reply.buckets]
    out: Dict[str, Any] = {}
    for _, leaf in _fan_out(conn, map_name, frontier, deadline):
        if isinstance(leaf, m.SyncRespLeaf):  # an emptied leaf answers with no buckets instead
            for item in leaf.records:
                out[item.key] = item.record.value
    return out


def _fan_out(conn: Connection, map_name: str, paths: List[str], deadline: float) -> List[Tuple[str, m.Message]]:
    waiting: List[Tuple[str, Any, Any]] = []
    try:
        results = conn.fresh_requests_async([m.MerkleReqBucket(map_name, p) for p in paths], deadline)
        waiting.extend((p, ("merkle", map_name, p), result) for p, result in zip(paths, results))
        return [(p, _get(conn, result, deadline, p)) for p, _, result in waiting]
    finally:
        for _, k, result in waiting:
            if not result.ready():   # given up: a reply may still come ("" of an unknown map gets none)
                conn.abandon(k, result)
