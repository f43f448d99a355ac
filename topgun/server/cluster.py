"""EmbeddedCluster: N dev-server nodes inside this process, on 127.0.0.1 and ports chosen by the OS.

Fast to start and stop, so integration tests can have one each. ``kill(node_id)`` closes every
socket of the node at once and throws its memory away (to its peers this looks like a crashed
process); ``restart(node_id)`` starts a fresh, empty node with the same id on the same port,
which joins the others and gets its partitions back with their data; ``add_node()`` grows the
cluster. For real processes and SIGKILL see :class:`topgun.server.process.ProcessCluster`.

Everything runs in the caller's gevent hub: talk to the nodes with gevent sockets (the topgun
client does), never with blocking ones, or the nodes cannot answer.
"""
from __future__ import annotations

import logging
from typing import Any, Dict, List, Optional

import gevent

from topgun.clock import Clock, GeventClock
from topgun.protocol.hashing import partition_id

from .node import Node
from .placement import PartitionTable

__all__ = ["EmbeddedCluster"]

log = logging.getLogger(__name__)


class EmbeddedCluster:
    """N in-process nodes named ``n1``..``nN``.

    Args:
        nodes: how many nodes :meth:`start` starts.
        jwt_secret: run every node in JWT mode with this HS256 secret.
        strict: nodes answer writes for partitions they do not own with ERROR NOT_OWNER.
        clock: passed to every node.
        host: listen address.
        certfile, keyfile: every node serves ``wss://`` with this certificate (see ``Node``).

    Example::

        with EmbeddedCluster(3) as cluster:
            url = cluster.urls[0]
            cluster.kill(cluster.owner_of("user:42"))
            cluster.wait_converged()
    """

    def __init__(self, nodes: int = 3, *, jwt_secret: Optional[str] = None, strict: bool = False,
                 clock: Optional[Clock] = None, host: str = "127.0.0.1",
                 certfile: Optional[str] = None, keyfile: Optional[str] = None) -> None:
        if nodes < 1:
            raise ValueError(f"nodes must be >= 1, got {nodes}")
        self.size = nodes
        self.jwt_secret = jwt_secret
        self.strict = strict
        self.clock: Clock = clock if clock is not None else GeventClock()
        self.host = host
        self.certfile, self.keyfile = certfile, keyfile
        self.nodes: Dict[str, Node] = {}        # live nodes
        self.ports: Dict[str, int] = {}         # every node ever started, for restart()
        self._next = 1

    # -- lifecycle

    def start(self, timeout: float = 15.0) -> "EmbeddedCluster":
        """Start the nodes; returns once all of them agree on one map that includes them all."""
        deadline = self.clock.monotonic() + timeout
        first = self._start_node(self._new_node(self._take_id(), seeds=()), timeout)
        joiners = [self._new_node(self._take_id(), seeds=(first.url,)) for _ in range(self.size - 1)]
        left = max(0.1, deadline - self.clock.monotonic())
        jobs = [gevent.spawn(self._start_node, n, left) for n in joiners]
        try:
            gevent.joinall(jobs, raise_error=True)
        except BaseException:
            gevent.killall(jobs)
            self.stop()
            raise
        self.wait_converged(max(0.1, deadline - self.clock.monotonic()))
        return self

    def stop(self) -> None:
        """Stop every node (idempotent)."""
        for node in list(self.nodes.values()):
            node.stop()
        self.nodes.clear()

    def __enter__(self) -> "EmbeddedCluster":
        return self.start() if not self.nodes else self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def kill(self, node_id: str) -> None:
        """Crash a node: close all its sockets, kill its greenlets, lose its data."""
        node = self.nodes.pop(node_id)
        node.kill()

    def restart(self, node_id: str, timeout: float = 15.0) -> Node:
        """Start ``node_id`` again (empty) on its old port; it rejoins through the live nodes.

        Returns once it is part of the partition map (and so has its data back).
        """
        if node_id in self.nodes:
            self.kill(node_id)
        port = self.ports[node_id]
        node = self._new_node(node_id, seeds=tuple(n.url for n in self.nodes.values()), port=port)
        return self._start_node(node, timeout)

    def add_node(self, node_id: Optional[str] = None, timeout: float = 15.0) -> Node:
        """Start one more node; returns once the cluster's map includes it (data moved)."""
        node = self._new_node(node_id or self._take_id(), seeds=tuple(n.url for n in self.nodes.values()))
        return self._start_node(node, timeout)

    # -- looking at it

    @property
    def urls(self) -> List[str]:
        """ws URLs of the live nodes, in node id order."""
        return [self.nodes[n].url for n in sorted(self.nodes)]

    def url(self, node_id: str) -> str:
        return self.nodes[node_id].url

    def node(self, node_id: str) -> Node:
        return self.nodes[node_id]

    @property
    def table(self) -> PartitionTable:
        """The newest partition table any live node has."""
        return max((n.table for n in self.nodes.values()), key=lambda t: t.version)

    def owner_of(self, key: str) -> str:
        """The node id that owns ``key`` under the newest map."""
        return self.table.owners[partition_id(key)]

    def backups_of(self, key: str) -> List[str]:
        return list(self.table.backups[partition_id(key)])

    def converged(self) -> bool:
        """All live nodes have the same map, and it lists exactly the live nodes."""
        versions = {n.table.version for n in self.nodes.values()}
        return len(versions) == 1 and set(self.table.nodes) == set(self.nodes)

    def wait_converged(self, timeout: float = 10.0) -> PartitionTable:
        """Block until :meth:`converged`; returns the agreed table.

        Raises:
            TimeoutError: not converged within ``timeout``.
        """
        deadline = self.clock.monotonic() + timeout
        while not self.converged():
            if self.clock.monotonic() > deadline:
                raise TimeoutError(f"cluster did not converge in {timeout}s: "
                                   + ", ".join(f"{n.node_id}=v{n.table.version}" for n in self.nodes.values()))
            self.clock.sleep(0.01)
        return self.table

    # -- internals

    def _take_id(self) -> str:
        while f"n{self._next}" in self.ports:
            self._next += 1
        node_id = f"n{self._next}"
        self._next += 1
        return node_id

    def _new_node(self, node_id: str, seeds: Any, port: int = 0) -> Node:
        node = Node(node_id, host=self.host, port=port, seeds=seeds, jwt_secret=self.jwt_secret,
                    strict=self.strict, clock=self.clock, certfile=self.certfile, keyfile=self.keyfile)
        self.nodes[node_id] = node
        self.ports.setdefault(node_id, 0)
        return node

    def _start_node(self, node: Node, timeout: float) -> Node:
        try:
            node.start(timeout)
        except BaseException:
            self.nodes.pop(node.node_id, None)
            raise
        self.ports[node.node_id] = node.port
        return node

    def __repr__(self) -> str:
        version = self.table.version if self.nodes else 0
        return f"<EmbeddedCluster nodes={sorted(self.nodes)} v{version}>"
