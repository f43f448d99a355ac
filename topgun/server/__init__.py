"""An embedded TopGun dev cluster on gevent-websocket, for development and tests only.

**Not a production server.** Data lives in memory only; there is no persistence, TLS only for
tests (``certfile=``/``--certfile``, peers unverified), no access control beyond an optional HS256
token check (for clients; with a JWT secret, peers on the node-to-node ``/cluster`` endpoint must
prove the same secret, see ``membership.py``), no rate limiting, and nodes listen on 127.0.0.1 by
default. Use the real ``topgun-server`` for anything that matters.

What it does: N nodes (in this process, :class:`EmbeddedCluster`, or one process per node,
:class:`~topgun.server.process.ProcessCluster` / ``python -m topgun.server``) serve the client
protocol of TopGun 2.2.0 on ``/ws`` and ``/``. Keys hash to 271 partitions (FNV-1a), placed over
the live nodes by mmh3 rendezvous hashing with one backup each. A write is applied on the
partition's owner and, at write concern REPLICATED or PERSISTED, on its backup before the ack;
a write sent to another node is forwarded to the owner. Membership uses heartbeats on
node-to-node WebSocket links on the same port (``/cluster``); when a node dies its backups take
over, and a joining node receives its partitions with their data before it owns them.
Every topology change produces a new PARTITION_MAP (versions strictly increasing and equal on
every node) that is pushed to every client.

Where this server differs from the real 2.2.0 server (on purpose) -- the one list:

* **Timestamps.** Writes keep the client's HLC timestamp and merge last-writer-wins by
  (millis, counter, nodeId): a write never overwrites a newer one, and resending a write is
  harmless. The real server re-stamps every write with its own clock and lets the last arrival
  win. So SERVER_EVENT records, sync leaves and Merkle hashes carry the client's timestamp.
* **Removes** leave an internal tombstone so an older put cannot bring the key back.
  Tombstones never appear in queries, sync or Merkle trees (as on the real server).
* **Bad frames get an ERROR** instead of silence: ``{code: 400, message, details}`` for an
  undecodable frame, a text frame, an unknown or server-only type, or a malformed message;
  501 for known message types the dev server does not implement (ORMAP_PUSH_DIFF, hybrid and
  vector search, SQL, journal, entry processors); 503 when a write could not be confirmed
  within 8 s. Frames sent before a successful AUTH in JWT mode are still dropped silently.
  When the frame was a write, ``details.lastId`` is the ``lastId`` its OP_ACK would have had.
* **NOT_OWNER** (strict mode only, ``strict=True`` / ``--strict``): a write batch touching a
  partition the node does not own is rejected whole with ``{code: "NOT_OWNER", details:
  {partitionId, mapVersion, currentOwner, lastId}}``. Without strict mode such writes are
  forwarded to the owner, and the connection is sent the current PARTITION_MAP once per
  map version so the client can correct its routing.
* **Write concern** is honoured: REPLICATED and PERSISTED are acknowledged after the backup
  applied the write, with ``achievedLevel: "REPLICATED"`` (there is no disk, so never
  PERSISTED); when the partition has no backup (a one-node cluster) the ack says
  ``"APPLIED"``. Lower levels are acknowledged with ``"APPLIED"`` after the owner applied them.
* **PARTITION_MAP.** A single node answers PARTITION_MAP_REQUEST too (version 1, every
  partition owned by itself, ``nodes = [itself]`` with ``endpoints.websocket`` its ws URL);
  the real standalone server never answers. Endpoints include the ``/ws`` path. In a cluster
  of more than one node the map is pushed on connect (after AUTH_ACK in JWT mode) and on every
  change; a single node sends nothing on connect, like the real server.
* **Events across nodes.** Subscribers on every node get SERVER_EVENT / QUERY_UPDATE for
  writes made through any node (the real cluster only notifies the node that took the write).
  QUERY_RESP and aggregate Merkle requests are gathered from every partition owner. Routed
  Merkle requests (``"PPP/..."``) are answered by the owner; a non-owner forwards them, and
  answers from its own copy only when the owner is unreachable and it is a backup.
* **queryId is per connection**: two connections can use the same queryId independently, and
  a connection's queries end when it closes (on the real server they are global and outlive
  the connection).
* **Stored values are not normalised**: queries and sync return values exactly as written
  (the real server sorts map keys and stringifies non-string keys).
* Frames above 16 MiB close the connection (the real server resets it); an unmasked client
  frame (or any other framing violation) closes it with 1002; a socket whose HTTP upgrade
  request is not complete within 10 s is closed. Slow consumers whose outgoing queue passes
  32 MiB stop getting events (acks still go out), all client connections of a node together
  may queue 128 MiB (past it the slowest is disconnected), and a connection may hold 1,000
  live queries (ERROR 429 past it).
* **Topics, locks and PN counters** keep the real server's wire shapes and rules, and are
  node-local like there: nothing is forwarded or replicated, so clients meet on a topic, lock or
  counter only by routing its name's partition to its owner (cluster-mode clients do). When a
  node dies its locks and counters are gone (the clients restore counters from their totals).
  Differences: an invalid topic name and a COUNTER_SYNC without ``p``/``n`` maps get ERROR 400
  (the real server ignores both silently; an invalid lock name gets ``LOCK_RELEASED success:
  false`` from both), and a disconnected holder's lock is free at once (the real server frees it
  a moment later).
* **Mutual seeds**: nodes that all list each other as seeds form one cluster (the lowest node
  id among those reached founds it); the real server's cluster handshake is not modelled.
* **OR-maps** (``ormaps.py``): an add keeps the client's tag and timestamp (2.2.0 re-tags it), and
  OR_REMOVE removes only its tag (2.2.0 wipes every value of the key). OR records are stored,
  routed, replicated and migrated like LWW records; ORMAP_DIFF_REQUEST and the ORMap Merkle walk
  (aggregate paths only, no routed ``PPP/`` paths) are gathered from every owner.
* **Search** (``search.py``): node-local like 2.2.0 (a node searches the partitions it owns; a
  cluster client asks every node), BM25 with tantivy's analyzer, so scores match; but results
  carry the stored ``value`` (2.2.0 sends nil), a search scans the node's records (no index),
  live searches end with their connection and are not told about OR-map writes, ``boost`` is ignored.
* Not implemented: ORMAP_PUSH_DIFF, hybrid and vector search, SQL, journal, entry processors,
  ``cursor``/``groupBy`` in queries, TTL expiry (as on the real server), persistence, HTTP sync
  (``POST /sync`` answers 404), and the other HTTP endpoints but ``GET /health``.
"""
from __future__ import annotations

from .cluster import EmbeddedCluster
from .node import Node

__all__ = ["EmbeddedCluster", "Node", "ProcessCluster"]


def __getattr__(name: str) -> object:
    if name == "ProcessCluster":  # imported lazily: it pulls in subprocess handling
        from .process import ProcessCluster
        return ProcessCluster
    raise AttributeError(name)
