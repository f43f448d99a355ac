"""ClusterProvider: the ConnectionProvider for cluster mode (pool + partition map + router).

How it finds and follows the cluster:
- *Discovery.* While no pooled connection is open (at start, and after every node was
  lost) one greenlet connects to the seeds in turn (the next seed at once; jittered back-off
  once every seed failed; a waiting constructor gives up after ``REFUSED_ATTEMPTS`` rounds in
  which every seed refused the TCP connect; whatever an attempt raises, a token callable's
  ``TokenProviderError`` included, is backed off, never the end of discovery), asks for the
  PARTITION_MAP, and closes that seed connection once the pool is up. A seed that sends no
  map within ``map_wait`` (1 s) is a standalone server (TopGun 2.2.0 never answers then): it
  becomes one node owning every partition, so cluster mode works against one server too.
- *Maps.* Every PARTITION_MAP (pushed or requested, from any connection) is validated and
  kept as its node's latest; the client routes with the map of the lowest node id it is
  connected to (``map_choice.py`` says why: versions are per node in TopGun 2.2.0). Each
  node is asked for its map once when first connected. Applying a map connects the pool to
  every node it lists and disconnects the nodes it dropped. A backup refresh runs every
  ``partition_map_refresh_interval`` seconds (jittered); one refresh is in flight at a time.
- *Failover.* Requests retry through ``retrying(deadline)`` (:func:`topgun.retry.retrying`
  over the live map: a newer map ends a back-off). A lost connection makes its node
  unroutable at once (routing version bump), asks another node for a fresh map and lets the
  pool reconnect with back-off, for as long as the map lists the node. The engine resends
  that connection's unacknowledged batches; the router holds keys whose owner is down (see
  ``router.py``) until the map changes.
- *Loss warning.* A map change that removes a partition's owner and all its backups at
  once (more nodes lost than the map keeps backups) may have lost acknowledged writes to
  it: that is logged at WARNING and counted in ``stats["partitions_lost"]``.
- *Observability.* ``owner_of(key)``, ``map_version``, ``node_states()``, ``stats`` and
  three callbacks: ``on_map_updated(pmap)``, ``on_node_connected(node_id)``,
  ``on_node_lost(node_id, exc)`` (constructor arguments, also assignable attributes).

Deliberately not here: queues, acks and resending (``topgun.engine``), the retry loop itself
(``topgun.retry``), wire encoding.
"""
from __future__ import annotations

import itertools
import logging
import random
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Set

import gevent
from gevent.event import Event

from ..clock import Clock
from ..config import ClusterConfig, ReconnectPolicy, RetryPolicy
from ..engine.provider import REFUSED_ATTEMPTS, ProviderListener
from ..errors import (
    AuthError,
    ClientClosed,
    ClusterUnavailable,
    ConnectionLost,
    ConnectTimeout,
    RemoteProtocolError,
    TLSVerificationError,
    TokenProviderError,
    TopGunError,
    describe,
    refused,
)
from ..metrics import Metrics
from ..protocol import messages as m
from ..retry import AuthRefusals, Retry, VersionedEvent, backoff_delays, retrying, warn_now
from ..transport.connection import Connection
from .endpoints import EndpointResolver
from .map_choice import MapChoice
from .partition_map import LivePartitionMap, PartitionMap, lost_partitions, single_node_map
from .pool import CONNECTED, ConnectFn, ConnectionPool
from .router import PartitionRouter, RoutingStats, unavailable

log = logging.getLogger(__name__)

__all__ = ["ClusterProvider", "NodeState"]

MAP_WAIT_S = 1.0            # a seed that sends no map by then is a standalone server
REFRESH_TIMEOUT_S = 1.0     # a map request without an answer by then no longer blocks the next one
# currentVersion 0: always answered, also by restarted nodes whose versions are lower than ours.
_MAP_REQUEST = m.PartitionMapRequest(current_version=0)  # type: ignore[call-arg]
POOL_GRACE_S = 5.0          # after discovery, how long the pool may take before seeds are tried again


def _no_seed_error(failed: Dict[str, BaseException]) -> BaseException:
    """One error naming every seed of a failed round; the last one's own error is its cause."""
    last = list(failed.values())[-1]
    if all(type(e) is type(last) for e in failed.values()) and isinstance(last, (AuthError, TLSVerificationError)):
        return last  # the same refusal everywhere: the seed's own words say it best
    error = ConnectionLost("no seed accepted a connection: " + "; ".join(f"{s}: {describe(e)}"
                                                                          for s, e in failed.items()))
    error.__cause__ = last
    return error


@dataclass(frozen=True)
class NodeState:
    """One node as the client sees it: ``state`` is CONNECTING, CONNECTED, DEGRADED or DOWN;
    ``status`` is what the partition map says (ACTIVE, JOINING, ...)."""

    node_id: str
    url: str
    state: str
    status: Optional[str]
    open_connections: int
    reconnects: int
    partitions: int
    last_error: Optional[str]


class ClusterProvider:
    """Connection provider for a TopGun cluster; reached as ``client.cluster``.

    Args:
        config: seeds, connections per node, smart routing, refresh interval, retry policy.
        clock: the client's clock.
        connect: ``connect(url, *, node_id, on_message, on_closed, spawn) -> Connection``.
        reconnect: back-off between reconnect attempts to one node.
        owner_down: ``"wait"`` (hold keys of a lost owner until the map changes) or
            ``"forward"`` (send them through the backup or any live node meanwhile).
        map_wait: seconds to wait for a seed's PARTITION_MAP before treating it as standalone
            (default ``MAP_WAIT_S``, 1 s).
        on_map_updated, on_node_connected, on_node_lost: observability callbacks.
        retry: the failover policy of requests (default: ``config.retry``).
        auth_attempts: refused tokens in a row before ``wait_ready`` gives up on authentication
            (1 for a fixed token, ``AUTH_ATTEMPTS`` for a token callable).
        metrics: a :class:`topgun.metrics.Metrics` sink, or None.
    """

    def __init__(self, config: ClusterConfig, *, clock: Clock, connect: ConnectFn, reconnect: ReconnectPolicy,
                 owner_down: str = "wait", map_wait: Optional[float] = None,
                 on_map_updated: Optional[Callable[[PartitionMap], None]] = None,
                 on_node_connected: Optional[Callable[[str], None]] = None,
                 on_node_lost: Optional[Callable[[str, Optional[BaseException]], None]] = None,
                 rng: Callable[[], float] = random.random, retry: Optional[RetryPolicy] = None,
                 auth_attempts: int = 1, metrics: Optional[Metrics] = None) -> None:
        self.config = config
        self.metrics = metrics
        self.refusals = AuthRefusals(auth_attempts)
        self.retry_policy = retry or config.retry
        self._clock = clock
        self._connect = connect
        self._policy = reconnect
        self._map_wait = MAP_WAIT_S if map_wait is None else map_wait
        self._rng = rng
        self.on_map_updated = on_map_updated
        self.on_node_connected = on_node_connected
        self.on_node_lost = on_node_lost
        self.pmap = LivePartitionMap()
        self.choice = MapChoice()
        self.endpoints = EndpointResolver(config)
        self.stats_counters = RoutingStats()
        self._routing = VersionedEvent()
        self._pool = ConnectionPool(connect, clock=clock, policy=reconnect, size=config.connections_per_node,
                                    on_connected=self._node_connected, on_connection_lost=self._connection_lost,
                                    on_message=self._on_message, rng=rng, auth_attempts=auth_attempts,
                                    on_connect_failed=self._count_failure)
        self.router = PartitionRouter(self.pmap, self._pool, smart=config.smart_routing, owner_down=owner_down,
                                      stats=self.stats_counters)
        self._listener: Optional[ProviderListener] = None
        self._closed = False
        self._ready = Event()
        self._refused = Event()
        self._all_up = Event()
        self._has_connection = Event()
        self._no_connections = Event()
        self._no_connections.set()
        self._map_refused = False
        self._up: Set[str] = set()
        self._ever_up: Set[str] = set()
        self._refresh_until = 0.0
        self._refresh_conn: Optional[Connection] = None
        self._rr = itertools.count()
        self.map_requests = 0
        self.partitions_lost = 0        # partitions whose owner and backups vanished in one map change
        self.resent = 0  # writes the engine resent (see note_resent)
        self.last_error: Optional[BaseException] = None

    # ------------------------------------------------------------------ lifecycle

    def start(self, listener: ProviderListener) -> None:
        """Begin discovery and the periodic refresh in the background; returns at once."""
        self._listener = listener
        self._pool.spawn(self._discover)
        self._pool.spawn(self._refresh_periodically)

    def wait_ready(self, timeout: float) -> bool:
        """Block until a map is applied and a node is connected (then briefly for all nodes)."""
        deadline = self._clock.monotonic() + timeout
        gevent.wait([self._ready, self._refused], timeout=timeout, count=1)
        if not self._ready.is_set():
            # No connection yet, or the only map we got was refused (see last_error).
            if self.pmap.current is not None and not self._map_refused:
                self.last_error = self._unreachable_error(timeout)
            return False
        # Give the pool a moment to reach every node, so the first writes go straight to owners.
        self._all_up.wait(min(2.0, max(0.0, deadline - self._clock.monotonic())))
        return True

    def _unreachable_error(self, timeout: float) -> ConnectTimeout:
        """A map arrived but none of its nodes could be reached: name them, not the seed."""
        current = self.pmap.current
        assert current is not None
        nodes = self._pool.nodes
        dead = [f"{nid} at {node.url}" + (f" ({describe(node.last_error)})" if node.last_error else "")
                for nid, node in sorted(nodes.items())]
        more = f" and {len(dead) - 5} more" if len(dead) > 5 else ""
        return ConnectTimeout(f"partition map v{current.version} from {current.source} routes to nodes none of "
                              f"which could be reached within {timeout:.3g}s: {', '.join(dead[:5])}{more}")

    def close(self) -> None:
        """Close every connection and end every greenlet (discovery, refresh, readers)."""
        if self._closed:
            return
        self._closed = True
        self._routing.bump()
        self._pool.close()

    # ------------------------------------------------------------------ discovery

    def _discover(self) -> None:
        seeds = list(self.config.seeds)
        delays = backoff_delays(self._policy, self._rng)
        failures = 0
        failed: Dict[str, BaseException] = {}   # this round's seeds that failed, and how
        refused_rounds = 0
        for attempt in itertools.count():
            if self._closed:
                return
            if self._pool.open_connections():
                failed.clear()
                self._no_connections.wait()
                continue
            seed = seeds[attempt % len(seeds)]
            try:
                conn = self._connect(seed, on_message=self._on_seed_message, spawn=self._pool.spawn)
            except Exception as exc:  # any type: discovery never ends while the client is open
                failures += 1
                failed[seed] = exc
                if len(failed) < len(seeds):
                    self._seed_failed(seed, exc, failures, 0.0)  # the next seed at once
                    continue
                refused_rounds = refused_rounds + 1 if all(refused(e) for e in failed.values()) else 0
                if refused_rounds >= REFUSED_ATTEMPTS:
                    self._refused.set()  # nothing listens at any seed: a waiting constructor fails now
                round_error = _no_seed_error(failed) if len(seeds) > 1 else exc
                failed.clear()
                self._seed_failed(seed, exc, failures, next(delays), error=round_error)
                continue
            failed.clear()
            refused_rounds = 0
            failures = 0
            self.refusals.accepted()
            try:
                self._bootstrap(conn, seed)
                # Keep the seed connection until the pool is up: it may push the next map.
                self._has_connection.wait(POOL_GRACE_S)
            except Exception:  # a bug while bootstrapping: log, back off, try again
                log.warning("bootstrapping from seed %s failed", seed, exc_info=True)
            finally:
                conn.close()
            if self._has_connection.is_set():
                delays = backoff_delays(self._policy, self._rng)
            else:
                self._clock.sleep(next(delays))

    def _seed_failed(self, seed: str, exc: Exception, failures: int, delay: float,
                     error: Optional[BaseException] = None) -> None:
        """Note a failed seed (``error``: what callers see, e.g. one naming every seed); back off ``delay``."""
        self.last_error = exc if error is None else error
        self._count_failure(exc)
        if isinstance(exc, TLSVerificationError) or (
                isinstance(exc, AuthError) and not isinstance(exc, TokenProviderError) and self.refusals.refused()):
            self._refused.set()  # refused credentials: wait_ready returns now, not at its timeout
        if not isinstance(exc, TopGunError):
            log.warning("seed %s failed with an unexpected %s; next try in %.2fs", seed, type(exc).__name__, delay,
                        exc_info=exc)
        else:
            level = logging.WARNING if warn_now(failures) else logging.INFO
            log.log(level, "seed %s unreachable %d times in a row (%s); next try in %.2fs", seed, failures,
                    describe(exc), delay)
        self._clock.sleep(delay)

    def _count_failure(self, exc: BaseException) -> None:
        if self.metrics is not None:
            self.metrics.count("topgun.connect.failures", 1, error=type(exc).__name__)
            if isinstance(exc, AuthError) and not isinstance(exc, TokenProviderError):
                self.metrics.count("topgun.auth.refusals", 1)

    def _bootstrap(self, conn: Connection, seed: str) -> None:
        applied = self.pmap.applied
        try:
            conn.send(_MAP_REQUEST)
            self.map_requests += 1
        except TopGunError as exc:
            self.last_error = exc
            return
        if self.pmap.wait_for_any(applied, self._map_wait) or self._map_refused:
            return
        # No answer: a standalone server (TopGun 2.2.0 never answers without a cluster).
        log.info("seed %s sent no partition map within %.1fs: using it as a single node", seed, self._map_wait)
        self._offer(None, single_node_map(seed, seed))

    def _on_seed_message(self, conn: Connection, msg: m.Message) -> None:
        if isinstance(msg, m.PartitionMap):
            self._handle_map(conn, msg)

    # ------------------------------------------------------------------ maps

    def _on_message(self, conn: Connection, msg: m.Message) -> None:
        if isinstance(msg, m.PartitionMap):
            self._handle_map(conn, msg)
            return
        if self._listener is not None:
            self._listener.on_message(conn, msg)

    def _handle_map(self, conn: Connection, msg: m.PartitionMap) -> None:
        if self._closed:
            return
        if conn is self._refresh_conn or self._refresh_conn is None:
            self._refresh_until, self._refresh_conn = 0.0, None
        try:
            pmap = PartitionMap.from_message(msg, source=conn.node_id or conn.url,
                                             max_nodes=self.config.max_map_nodes)
        except RemoteProtocolError as exc:
            # Nothing of it is applied: routing and connections stay as they were.
            log.error("%s; keeping partition map v%d", exc, self.pmap.version)
            self.last_error = exc
            self._map_refused = True
            self._refused.set()
            self._routing.bump()
            return
        self._offer(self._source_of(conn, pmap), pmap)

    @staticmethod
    def _source_of(conn: Connection, pmap: PartitionMap) -> Optional[str]:
        """The node id that sent ``pmap``: the pool's, or (a seed connection) the map's entry for its URL."""
        if conn.node_id is not None:
            return conn.node_id
        def bare(url: Optional[str]) -> str:
            return (url or "").rstrip("/").removesuffix("/ws")
        return next((nid for nid, entry in pmap.nodes.items() if entry.url and bare(entry.url) == bare(conn.url)),
                    None)

    def _offer(self, source: Optional[str], pmap: PartitionMap) -> None:
        if self.choice.offer(source, pmap):
            self._map_refused = False
            self._install(self.choice.trusted())

    def _install(self, pmap: Optional[PartitionMap]) -> None:
        # Forced: the trusted map may carry a lower version than the current one (another
        # node's count, or a node restarted and counting from 1 again).
        previous = self.pmap.current
        if pmap is None or pmap is previous or not self.pmap.apply(pmap, force=True):
            return
        lost = lost_partitions(previous, pmap)
        if lost:
            self.partitions_lost += len(lost)
            assert previous is not None
            gone = sorted({previous.owner(p) for p in lost} | {b for p in lost for b in previous.backups_of(p)})
            log.warning("partition map v%d from %s: %d partitions lost their owner and every backup at once "
                        "(nodes %s gone); acknowledged writes to them may be lost", pmap.version, pmap.source,
                        len(lost), ", ".join(gone))
        self._map_refused = False
        self._refused.clear()
        self._pool.update(self.endpoints.resolve_all(pmap.connectable()))
        self._routing.bump()
        self._update_ready()
        if self._listener is not None:
            self._listener.on_map_updated(pmap.version)
        if self.metrics is not None:
            self.metrics.gauge("topgun.map.version", pmap.version)
        self._callback(self.on_map_updated, pmap)

    def _ask_for_map(self, conn: Connection) -> None:
        try:
            conn.send(_MAP_REQUEST)
        except TopGunError:
            return
        self.map_requests += 1

    def request_refresh(self) -> None:
        """Ask one connected node for the partition map, unless a request is already in flight."""
        if self._closed:
            return
        now = self._clock.monotonic()
        if self._refresh_until > now:
            return
        conns = self._pool.routable_connections()
        if not conns:
            return  # discovery takes over once nothing is connected
        conn = conns[int(self._rng() * len(conns)) % len(conns)]
        try:
            conn.send(_MAP_REQUEST)
        except TopGunError:
            return
        self.map_requests += 1
        self._refresh_until, self._refresh_conn = now + REFRESH_TIMEOUT_S, conn

    def _refresh_periodically(self) -> None:
        interval = self.config.partition_map_refresh_interval
        while not self._closed:
            self._clock.sleep(interval * (0.8 + 0.4 * self._rng()))
            self.request_refresh()

    # ------------------------------------------------------------------ pool events

    def _node_connected(self, node_id: str, conn: Connection) -> None:
        self._no_connections.clear()
        self._has_connection.set()
        self._routing.bump()
        self._update_ready()
        if self._listener is not None:
            self._listener.on_connected(conn)
        if self.metrics is not None:
            self.metrics.count("topgun.connects", 1)
            if node_id not in self._up and node_id in self._ever_up:
                self.metrics.count("topgun.reconnects", 1)
        if node_id not in self._up:
            self._up.add(node_id)
            self._ever_up.add(node_id)
            log.info("node %s connected at %s", node_id, conn.url)
            current = self.pmap.current
            if node_id not in self.choice.sources() and current is not None and not current.synthetic:
                self._ask_for_map(conn)     # MapChoice needs every node's view, not only the seed's
            self._callback(self.on_node_connected, node_id)

    def _connection_lost(self, node_id: str, conn: Connection, exc: Optional[BaseException]) -> None:
        if self._closed:
            return
        if conn is self._refresh_conn:
            self._refresh_until, self._refresh_conn = 0.0, None
        self._routing.bump()
        if not self._pool.open_connections():
            self.choice.clear()            # the next map counts, whichever node and version it has
            self._has_connection.clear()
            self._no_connections.set()
        self._update_ready()
        if self._listener is not None:
            self._listener.on_disconnected(conn, exc)
        if node_id in self._up and not self._pool.routable(node_id):
            self._up.discard(node_id)
            self.choice.forget(node_id)
            self._install(self.choice.trusted())
            if self._pool.node(node_id) is not None:
                self.last_error = exc
                log.warning("lost node %s (%s); asking for a new partition map", node_id, describe(exc))
                self.request_refresh()
            self._callback(self.on_node_lost, node_id, exc)

    def _update_ready(self) -> None:
        live = self._pool.routable_nodes()
        if self.pmap.current is not None and live:
            self._ready.set()
        else:
            self._ready.clear()
        nodes = self._pool.nodes.values()
        if self.pmap.current is not None and live and all(n.state == CONNECTED for n in nodes):
            self._all_up.set()
        else:
            self._all_up.clear()

    def _callback(self, fn: Optional[Callable[..., None]], *args: Any) -> None:
        if fn is None:
            return
        try:
            fn(*args)
        except Exception:  # user code must not break routing
            log.exception("cluster callback %r failed", fn)

    # ------------------------------------------------------------------ ConnectionProvider

    def connection_for_key(self, key: str) -> Connection:
        """The connection for ``key`` (owner's, or a forwarder).

        Raises:
            ClusterUnavailable: (retryable) no usable connection for it now.
            AuthError: every node keeps refusing the token (see :meth:`_refused_everywhere`).
        """
        if self._closed:
            raise ClientClosed("the client is closed")
        try:
            return self.router.route(key)
        except ClusterUnavailable as exc:
            raise self._refused_everywhere() or exc

    def any_connection(self) -> Connection:
        """Some routable connection, round robin over nodes' connections (raises as above)."""
        if self._closed:
            raise ClientClosed("the client is closed")
        conns = self._pool.routable_connections()
        if not conns:
            raise self._refused_everywhere() or unavailable("no cluster node is connected")
        return conns[next(self._rr) % len(conns)]

    def _refused_everywhere(self) -> Optional[AuthError]:
        """An AuthError when every node of the map (or, before a map, the seeds) keeps refusing
        the token: waiting for the deadline would not change that, so callers hear it at once,
        as in ``url=`` mode. None otherwise."""
        def token_refused(error: Optional[BaseException]) -> bool:
            return isinstance(error, AuthError) and not isinstance(error, TokenProviderError)
        nodes = list(self._pool.nodes.values())
        if nodes:
            if not all(n.refusals.persistent and token_refused(n.last_error) for n in nodes):
                return None
            error = nodes[0].last_error
            where = f"every node ({', '.join(sorted(n.node_id for n in nodes))})"
        else:
            if not (self.refusals.persistent and token_refused(self.last_error)):
                return None
            error, where = self.last_error, "the seeds"
        assert isinstance(error, AuthError)
        refusal = AuthError(f"{where} keep refusing the token: {error}", code=error.code, details=error.details)
        refusal.__cause__ = error
        return refusal

    def open_connections(self) -> List[Connection]:
        return self._pool.open_connections()

    @property
    def routing_version(self) -> int:
        return self._routing.version

    def wait_for_change(self, since: int, timeout: float) -> bool:
        return self._routing.wait_for_change(since, timeout)

    def retrying(self, deadline: float) -> Retry:
        """The failover policy for one request: waits for newer partition maps."""
        metrics = self.metrics

        def count(exc: BaseException) -> None:
            self.stats_counters.retries += 1
            if metrics is not None:
                metrics.count("topgun.retries", 1, error=type(exc).__name__)
        return retrying(self.pmap, self.retry_policy, self._clock, self.request_refresh, deadline=deadline,
                        on_retry=count, give_up=lambda: self._closed)

    def note_resent(self, count: int) -> None:
        """Writes the engine resent count as retries in ``stats``."""
        self.resent += count

    # ------------------------------------------------------------------ observability

    def owner_of(self, key: str) -> Optional[str]:
        """The node id that owns ``key`` in the current partition map (None before any map)."""
        return self.router.owner_of(key)

    @property
    def map_version(self) -> int:
        """The current partition map's version (-1 before any map; 0 for a standalone server)."""
        return self.pmap.version

    @property
    def partition_map(self) -> Optional[PartitionMap]:
        return self.pmap.current

    def node_states(self) -> Dict[str, NodeState]:
        """node id -> :class:`NodeState` for every node the pool is connected (or connecting) to."""
        current = self.pmap.current
        out = {}
        for node_id, node in sorted(self._pool.nodes.items()):
            entry = current.nodes.get(node_id) if current is not None else None
            out[node_id] = NodeState(
                node_id, node.url, node.state, entry.status if entry is not None else None,
                len(node.open_conns()), node.reconnects,
                len(current.partitions_of(node_id)) if current is not None else 0,
                describe(node.last_error) if node.last_error is not None else None)
        return out

    @property
    def stats(self) -> Dict[str, int]:
        """Routing counters: direct, forwarded, misses, retries (requests retried by failover
        plus writes the engine resent), map_requests, and partitions_lost (partitions whose
        owner and backups all vanished in one map change: their acknowledged writes may be lost)."""
        counters = self.stats_counters.as_dict()
        counters["retries"] += self.resent
        counters["map_requests"] = self.map_requests
        counters["partitions_lost"] = self.partitions_lost
        return counters

    @property
    def smart_routing(self) -> bool:
        return self.router.smart

    def __repr__(self) -> str:
        mode = "smart" if self.router.smart else "dumb"
        return (f"<ClusterProvider {mode} map v{self.map_version} nodes={self._pool.routable_nodes()}"
                f"{' closed' if self._closed else ''}>")
