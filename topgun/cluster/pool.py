"""ConnectionPool: ``connections_per_node`` connections to every node, kept up until removed.

Contract:
- ``update({node_id: url})`` is the set of nodes to be connected to. New nodes get a
  supervisor greenlet that opens their connections; nodes left out are disconnected and
  forgotten; a node whose URL changed is reconnected at the new URL.
- Each supervisor reconnects with jittered exponential back-off (``backoff_delays``) and never
  gives up while the node is in the pool, whatever a connect attempt raises (a token
  callable's exception arrives as ``TokenProviderError`` and is backed off like any failed
  connect). Refused tokens are asked for again at the same pace until they are persistent
  (:class:`~topgun.retry.AuthRefusals`), then at ``ReconnectPolicy.max_s``.
- Every greenlet (supervisors, each connection's reader and heartbeat) lives in one
  ``gevent.pool.Group``; ``close()`` closes the connections and kills the group.
- ``connection(node_id, key)`` is always the same connection of that node for the same key
  (mmh3 of the key picks the slot), so one key's frames keep one order; if that slot is
  down, another open slot of the node is used.
- A lost connection makes its node unroutable at once (``routable`` is False) until the
  supervisor has opened a new connection to it; ``on_connection_lost`` is called for it.
- At most ``max_dials`` connection attempts (TCP connect plus handshake) are in flight at
  once, across all nodes, so a map naming hundreds of unreachable nodes costs a bounded
  number of sockets and greenlets doing work, not one per node.

Not in here: which nodes should exist (the partition map), routing decisions, retries.
"""
from __future__ import annotations

import logging
import random
from functools import partial
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional

import gevent
import mmh3
from gevent.event import Event
from gevent.lock import BoundedSemaphore
from gevent.pool import Group

from ..clock import Clock
from ..config import ReconnectPolicy
from ..errors import AuthError, TLSVerificationError, TokenProviderError, TopGunError, describe
from ..protocol import messages as m
from ..retry import AuthRefusals, backoff_delays, warn_now
from ..transport.connection import Connection

log = logging.getLogger(__name__)

__all__ = ["ConnectionPool", "NodeConnections", "CONNECTING", "CONNECTED", "DEGRADED", "DOWN", "MAX_DIALS"]

#: Connection attempts in flight at once, over all nodes of one pool.
MAX_DIALS = 8

CONNECTING, CONNECTED, DEGRADED, DOWN = "CONNECTING", "CONNECTED", "DEGRADED", "DOWN"

ConnectFn = Callable[..., Connection]


def key_slot(key: str, n: int, seed: int = 0) -> int:
    """Stable slot in ``range(n)`` for ``key`` (murmur3, unsigned)."""
    return int(mmh3.hash(key, seed, signed=False)) % n if n > 1 else 0


class NodeConnections:
    """The connections to one node and their supervisor's state."""

    def __init__(self, node_id: str, url: str, size: int) -> None:
        self.node_id = node_id
        self.url = url
        self.conns: List[Optional[Connection]] = [None] * size
        self.lost = False           # a connection dropped; unroutable until one reconnects
        self.ever_connected = False
        self.removed = False
        self.reconnects = 0
        self.last_error: Optional[BaseException] = None
        self.failures = 0           # failed connect attempts in a row
        self.refusals = AuthRefusals()
        self.wake = Event()
        self.supervisor: Optional[gevent.Greenlet] = None

    def open_conns(self) -> List[Connection]:
        return [c for c in self.conns if c is not None and c.is_open]

    @property
    def routable(self) -> bool:
        return not self.lost and not self.removed and any(c is not None and c.is_open for c in self.conns)

    @property
    def state(self) -> str:
        n = len(self.open_conns())
        if n and not self.lost:
            return CONNECTED if n == len(self.conns) else DEGRADED
        return DOWN if self.ever_connected or self.last_error is not None else CONNECTING

    def __repr__(self) -> str:
        return (f"<NodeConnections {self.node_id} {self.url} {self.state} "
                f"open={len(self.open_conns())}/{len(self.conns)} reconnects={self.reconnects}>")


class ConnectionPool:
    """node id -> that node's connections; owns every greenlet of the cluster client."""

    def __init__(self, connect: ConnectFn, *, clock: Clock, policy: ReconnectPolicy, size: int,
                 on_connected: Callable[[str, Connection], None],
                 on_connection_lost: Callable[[str, Connection, Optional[BaseException]], None],
                 on_message: Callable[[Connection, m.Message], None],
                 rng: Callable[[], float] = random.random, max_dials: int = MAX_DIALS,
                 auth_attempts: int = 1, on_connect_failed: Optional[Callable[[BaseException], None]] = None) -> None:
        self._connect = connect
        self._clock = clock
        self._policy = policy
        self.size = size
        self._on_connected = on_connected
        self._on_connection_lost = on_connection_lost
        self._on_message = on_message
        self._rng = rng
        self._auth_attempts = auth_attempts
        self._on_connect_failed = on_connect_failed
        self._nodes: Dict[str, NodeConnections] = {}
        self._dials = BoundedSemaphore(max_dials)
        # A node the map drops and lists again (a restart) keeps counting its reconnects.
        self._reconnects: Dict[str, int] = {}
        self.dialing = 0             # connection attempts in flight now
        self.max_dialing = 0         # the most ever in flight at once
        self.group = Group()
        self.closed = False

    # ------------------------------------------------------------------ membership

    def update(self, wanted: Mapping[str, str]) -> None:
        """Connect to exactly the nodes in ``wanted`` (node id -> URL)."""
        if self.closed:
            return
        for node_id in [n for n in self._nodes if n not in wanted]:
            self._remove(node_id, "no longer in the partition map")
        for node_id, url in wanted.items():
            node = self._nodes.get(node_id)
            if node is not None and node.url != url:
                self._remove(node_id, f"moved to {url}")
                node = None
            if node is None:
                node = self._nodes[node_id] = NodeConnections(node_id, url, self.size)
                node.refusals = AuthRefusals(self._auth_attempts)
                node.reconnects = self._reconnects.get(node_id, 0)
                node.supervisor = self.group.spawn(self._supervise, node)

    def _remove(self, node_id: str, why: str) -> None:
        node = self._nodes.pop(node_id)
        node.removed = True
        if node.ever_connected or node_id in self._reconnects:
            self._reconnects[node_id] = node.reconnects
        log.info("disconnecting node %s (%s)", node_id, why)
        if node.supervisor is not None and node.supervisor is not gevent.getcurrent():
            node.supervisor.kill(block=False)
        for conn in node.open_conns():
            conn.close()

    def spawn(self, fn: Callable[..., Any], *args: Any) -> gevent.Greenlet:
        """Run ``fn`` in the pool's group (so ``close()`` ends it)."""
        return self.group.spawn(fn, *args)

    # ------------------------------------------------------------------ supervisor

    def _supervise(self, node: NodeConnections) -> None:
        delays = backoff_delays(self._policy, self._rng)
        while not node.removed and not self.closed:
            try:
                error = self._connect_all(node)
            except Exception as exc:  # a bug in a callback: never the end of the supervisor
                log.warning("supervising node %s failed; backing off", node.node_id, exc_info=True)
                error = exc
            if error is None and (node.removed or self.closed):
                return
            if error is not None:
                self._clock.sleep(self._failed(node, error, delays))
                continue
            delays = backoff_delays(self._policy, self._rng)
            node.wake.clear()
            if all(c is not None and c.is_open for c in node.conns):
                node.wake.wait()

    def _connect_all(self, node: NodeConnections) -> Optional[BaseException]:
        """Open the node's missing connections; the first error, or None (also when removed)."""
        for slot, conn in enumerate(node.conns):
            if conn is not None and conn.is_open:
                continue
            try:
                conn = self._dial(node)
            except Exception as exc:  # any type: user code (token=) and bugs included
                return exc
            if conn is None:
                return None  # removed or closed while waiting for a dial slot
            if node.removed or self.closed:
                conn.close()
                return None
            # One per time the node comes back (not per connection): after a lost
            # connection, or when a node the pool had connected to is listed again.
            if node.lost or (not node.ever_connected and node.node_id in self._reconnects):
                node.reconnects += 1
            node.conns[slot] = conn
            node.ever_connected = True
            node.lost = False
            node.last_error = None
            node.failures = 0
            node.refusals.accepted()
            self._on_connected(node.node_id, conn)
        return None

    def _failed(self, node: NodeConnections, error: BaseException, delays: Iterator[float]) -> float:
        """Note a failed attempt to connect to ``node``; returns how long to back off."""
        node.last_error = error
        node.failures += 1
        if self._on_connect_failed is not None:
            self._on_connect_failed(error)
        refused = isinstance(error, AuthError) and not isinstance(error, TokenProviderError)
        # Refused credentials or certificates do not fix themselves soon: slowest pace, unless a
        # token callable may still hand out a better token.
        slow = (refused and node.refusals.refused()) or isinstance(error, TLSVerificationError)
        delay = self._policy.max_s if slow else next(delays)
        if not isinstance(error, TopGunError):
            log.warning("connect to node %s at %s failed with an unexpected %s; retrying in %.2fs",
                        node.node_id, node.url, type(error).__name__, delay, exc_info=error)
        else:
            level = logging.WARNING if warn_now(node.failures) else logging.INFO
            log.log(level, "connect to node %s at %s failed %d times in a row (%s); retrying in %.2fs",
                    node.node_id, node.url, node.failures, describe(error), delay)
        return delay

    def _dial(self, node: NodeConnections) -> Optional[Connection]:
        with self._dials:
            if node.removed or self.closed:
                return None
            self.dialing += 1
            self.max_dialing = max(self.max_dialing, self.dialing)
            try:
                return self._connect(node.url, node_id=node.node_id, on_message=self._on_message,
                                     on_closed=partial(self._closed, node), spawn=self.group.spawn)
            finally:
                self.dialing -= 1

    def _closed(self, node: NodeConnections, conn: Connection, exc: Optional[BaseException]) -> None:
        if conn not in node.conns:
            return
        if not node.removed and not self.closed:
            node.lost = True
            node.last_error = exc
            node.wake.set()
        self._on_connection_lost(node.node_id, conn, exc)

    # ------------------------------------------------------------------ lookups

    def node(self, node_id: str) -> Optional[NodeConnections]:
        return self._nodes.get(node_id)

    @property
    def nodes(self) -> Dict[str, NodeConnections]:
        return dict(self._nodes)

    def routable(self, node_id: str) -> bool:
        node = self._nodes.get(node_id)
        return node is not None and node.routable

    def routable_nodes(self) -> List[str]:
        return sorted(nid for nid, node in self._nodes.items() if node.routable)

    def connection(self, node_id: str, key: str) -> Optional[Connection]:
        """The connection of ``node_id`` that carries ``key``, or None if the node is unroutable."""
        node = self._nodes.get(node_id)
        if node is None or node.lost or node.removed:
            return None
        slot = key_slot(key, self.size)
        conn = node.conns[slot]
        if conn is not None and conn.is_open:  # routable, then: not lost, not removed, one open
            return conn
        others = node.open_conns()
        return others[slot % len(others)] if others else None

    def open_connections(self) -> List[Connection]:
        return [c for node in self._nodes.values() for c in node.open_conns()]

    def routable_connections(self) -> List[Connection]:
        return [c for node in self._nodes.values() if node.routable for c in node.open_conns()]

    # ------------------------------------------------------------------ lifecycle

    def close(self, timeout: float = 2.0) -> None:
        """Close every connection and end every greenlet of the group."""
        self.closed = True
        for node in self._nodes.values():
            node.removed = True
            node.wake.set()
            for conn in node.open_conns():
                conn.close()
        self.group.kill(timeout=timeout)

    def __repr__(self) -> str:
        states = ", ".join(f"{nid}={node.state}" for nid, node in sorted(self._nodes.items()))
        return f"<ConnectionPool size={self.size} {states or 'empty'}{' closed' if self.closed else ''}>"
