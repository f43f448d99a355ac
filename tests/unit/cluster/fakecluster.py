"""A tiny in-memory TopGun "cluster" for unit tests: no sockets, no server package.

``FakeCluster(["a", "b", "c"])`` gives each node a URL (``ws://a.test:1``); its
``transport_factory`` plugs into ``TopGunClient(transport_factory=...)`` (or a bare
``Connection``) and serves each connection with one greenlet over ``memory_pair()``:
PING -> PONG, PARTITION_MAP_REQUEST -> PARTITION_MAP (optionally never, like a standalone
2.2.0 server), OP_BATCH/CLIENT_OP -> OP_ACK after storing the ops (recording which node
received which key), QUERY_SUB -> QUERY_RESP over the shared store. Every node pushes the
map on connect and on ``publish()``. ``kill(node)`` closes that node's connections and
refuses new ones until ``revive(node)``.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Tuple

import gevent

from topgun.errors import ConnectionLost
from topgun.protocol import codec
from topgun.protocol.hashing import PARTITION_COUNT
from topgun.transport.memory import MemoryTransport, memory_pair


def url_of(node_id: str) -> str:
    return f"ws://{node_id}.test:1"


class FakeNode:
    def __init__(self, node_id: str) -> None:
        self.node_id = node_id
        self.url = url_of(node_id)
        self.up = True
        self.conns: List[MemoryTransport] = []
        self.received: List[str] = []          # keys of ops this node received, in order
        self.map_requests = 0
        self.batches = 0                         # OP_BATCH frames received
        self.hold_acks = False                   # True: never acknowledge writes


class FakeCluster:
    def __init__(self, node_ids: List[str], *, version: int = 1, answer_map_requests: bool = True,
                 push_on_connect: bool = True, partition_count: int = PARTITION_COUNT) -> None:
        self.nodes: Dict[str, FakeNode] = {n: FakeNode(n) for n in node_ids}
        self.version = version
        self.answer_map_requests = answer_map_requests
        self.push_on_connect = push_on_connect
        self.partition_count = partition_count
        self.store: Dict[Tuple[str, str], Any] = {}
        self.members = list(node_ids)
        self.owners = self._assign(self.members)
        self.greenlets: List[gevent.Greenlet] = []
        self.on_op: Optional[Callable[[FakeNode, Dict[str, Any]], None]] = None
        # (key, value) updates sent right behind each QUERY_RESP, as a server sends the ones it held
        self.updates_behind_resp: List[Tuple[str, Any]] = []

    @staticmethod
    def _assign(members: List[str]) -> List[str]:
        ids = sorted(members)
        return [ids[p % len(ids)] for p in range(PARTITION_COUNT)]

    # -- topology -------------------------------------------------------------------------

    def map_payload(self) -> Dict[str, Any]:
        ids = sorted(self.members)
        return {
            "version": self.version, "partitionCount": self.partition_count,
            "nodes": [{"nodeId": n, "endpoints": {"websocket": url_of(n)}, "status": "ACTIVE"} for n in ids],
            "partitions": [{"partitionId": p, "ownerNodeId": self.owners[p],
                            "backupNodeIds": [ids[(ids.index(self.owners[p]) + 1) % len(ids)]] if len(ids) > 1 else []}
                           for p in range(PARTITION_COUNT)],
            "generatedAt": 1}

    def publish(self, members: Optional[List[str]] = None, *, bump: int = 1) -> None:
        """Reassign partitions over ``members`` (default: unchanged), bump the version, push to all."""
        if members is not None:
            self.members = list(members)
            for n in members:
                self.nodes.setdefault(n, FakeNode(n))
            self.owners = self._assign(self.members)
        self.version += bump
        frame = codec.encode_wire({"type": "PARTITION_MAP", "payload": self.map_payload()})
        for node in self.nodes.values():
            for t in list(node.conns):
                try:
                    t.send(frame)
                except ConnectionLost:
                    pass

    def kill(self, node_id: str) -> None:
        node = self.nodes[node_id]
        node.up = False
        for t in node.conns:
            t.close()
        node.conns.clear()

    def revive(self, node_id: str) -> None:
        self.nodes[node_id].up = True

    def owner_of(self, key: str) -> str:
        from topgun.protocol.hashing import partition_id
        return self.owners[partition_id(key)]

    # -- transport ------------------------------------------------------------------------

    def transport_factory(self, url: str, timeout: float) -> MemoryTransport:
        node = next((n for n in self.nodes.values() if n.url == url.rstrip("/")), None)
        if node is None or not node.up:
            raise ConnectionLost(f"connection refused: {url}")
        client, server = memory_pair()
        node.conns.append(server)
        self.greenlets.append(gevent.spawn(self._serve, node, server))
        return client

    def _send(self, t: MemoryTransport, d: Dict[str, Any]) -> None:
        try:
            t.send(codec.encode_wire(d))
        except ConnectionLost:
            pass

    def _serve(self, node: FakeNode, t: MemoryTransport) -> None:
        pushed = False
        while True:
            data = t.recv()
            if data is None:
                return
            d = codec.decode_wire(data)
            kind = d["type"]
            if kind == "PING":
                self._send(t, {"type": "PONG", "timestamp": d["timestamp"], "serverTime": 0})
                if self.push_on_connect and not pushed:
                    pushed = True
                    self._send(t, {"type": "PARTITION_MAP", "payload": self.map_payload()})
            elif kind == "PARTITION_MAP_REQUEST":
                node.map_requests += 1
                if self.answer_map_requests:
                    self._send(t, {"type": "PARTITION_MAP", "payload": self.map_payload()})
            elif kind in ("OP_BATCH", "CLIENT_OP"):
                ops = d["payload"]["ops"] if kind == "OP_BATCH" else [d["payload"]]
                node.batches += kind == "OP_BATCH"
                for op in ops:
                    node.received.append(op["key"])
                    self.store[(op["mapName"], op["key"])] = op.get("record", {}).get("value")
                    if self.on_op is not None:
                        self.on_op(node, op)
                if not node.hold_acks:
                    self._send(t, {"type": "OP_ACK", "payload": {"lastId": ops[-1]["id"],
                                                                  "achievedLevel": "REPLICATED"}})
            elif kind == "QUERY_SUB":
                p = d["payload"]
                results = [{"key": k, "value": v} for (mp, k), v in sorted(self.store.items()) if mp == p["mapName"]]
                frames = [{"type": "QUERY_RESP", "payload": {"queryId": p["queryId"], "results": results}}]
                frames += [{"type": "QUERY_UPDATE", "payload": {"queryId": p["queryId"], "key": k, "value": v,
                                                                "changeType": "ENTER"}}
                           for k, v in self.updates_behind_resp]
                try:
                    t.send_many([codec.encode_wire(f) for f in frames])   # one burst, like one TCP read
                except ConnectionLost:
                    pass

    def close(self) -> None:
        for node in self.nodes.values():
            for t in node.conns:
                t.close()
        gevent.killall(self.greenlets, timeout=1.0)
