"""TopGunClient: the one public client, for one server (``url=``) or a cluster (``cluster=``).

The same API in both modes. Inside: a :class:`~topgun.sync.engine.SyncEngine` that asks a
connection provider for connections: :class:`~topgun.sync.provider.SingleServerProvider`
for ``url=``, :class:`~topgun.cluster.cluster_client.ClusterClient` for ``cluster=``.
Every blocking call returns or raises by its deadline; every error derives from
:class:`topgun.TopGunError`.

Threads and processes: the client's greenlets live on one hub, its home (see
:mod:`topgun.threads`): the creating thread's hub under monkey-patching or in gevent code,
else a loop thread of its own; public blocking methods may be called from any thread. After
``os.fork()`` the child drops what it inherited and reconnects on first use (:mod:`topgun.forking`).
"""
from __future__ import annotations

import logging
import os
import uuid
from typing import Any, Callable, Dict, List, Optional, Tuple

import gevent
from gevent.pool import Group

from . import forking, threads
from .clock import Clock, GeventClock
from .config import ClientConfig, ClusterConfig
from .errors import ClientClosed, ConnectTimeout, RemoteProtocolError, ServerError, TopGunError
from .maps import MapHandle
from .protocol import messages as m
from .protocol.hlc import HLC
from .queries import Change, Subscription
from .sync.engine import SyncEngine
from .sync.provider import ConnectionProvider, SingleServerProvider
from .sync.reads import walk_all
from .transport.connection import Connection, TransportFactory

# Imported here, not on first connect: a first import on the loop thread could be cut in half by
# a fork (gunicorn --preload), leaving the child a partially initialised module.
from .transport.websocket import WebSocketTransport

log = logging.getLogger(__name__)

__all__ = ["TopGunClient", "DEFAULT_URL"]

DEFAULT_URL = "ws://127.0.0.1:8080/ws"


class TopGunClient:
    """A blocking, gevent-friendly TopGun client.

    Args:
        url: one server, ``ws://host:port/ws`` (or ``wss://`` through a TLS proxy).
        cluster: a :class:`topgun.ClusterConfig` for cluster mode (give url or cluster).
        token: a JWT string, or a callable returning one (called again on every
            (re)connect that needs authentication).
        request_timeout: default deadline of each blocking call, in seconds.
        connect_timeout: how long to wait for the first connection (and each handshake).
        wait_connected: if True (default), the constructor raises when no connection is
            made within ``connect_timeout``; if False, it returns at once and writes queue
            until a connection comes up.
        thread_mode: ``"auto"`` (default), ``"direct"`` (greenlets on the creating thread's hub)
            or ``"loop"`` (on a daemon thread of the client's own); see :mod:`topgun.threads`.
        **options: the remaining :class:`topgun.config.ClientConfig` fields
            (write_concern, batch_size, max_in_flight, reconnect, node_id, ssl_context: an
            ``ssl.SSLContext`` for ``wss://``, default verification with the system trust store).

    Raises:
        ConfigurationError: bad arguments.
        AuthError, TLSVerificationError, ConnectTimeout, ConnectionLost: with ``wait_connected``,
            no connection.
    """

    def __init__(self, url: Optional[str] = None, *, cluster: Optional[ClusterConfig] = None,
                 token: Any = None, request_timeout: float = 10.0, connect_timeout: float = 5.0,
                 wait_connected: bool = True, clock: Optional[Clock] = None,
                 transport_factory: Optional[TransportFactory] = None, ping_interval: Optional[float] = 5.0,
                 thread_mode: str = "auto", **options: Any) -> None:
        self.config = ClientConfig(url=url, cluster=cluster, token=token, request_timeout=request_timeout,
                                   connect_timeout=connect_timeout, **options)
        self.clock = clock or GeventClock()
        self.node_id = self.config.node_id or "py-" + uuid.uuid4().hex[:12]
        self._hlc = HLC(self.node_id, self.clock.now_ms)
        self._transport_factory = transport_factory
        self._ping_interval = ping_interval
        self._subs: Dict[str, Subscription] = {}
        self._closed = False
        self._start_pending = False
        self._starting = False
        self._start_lock = threads.allocate_lock()
        self._sockets = forking.SocketTracker()
        self.cluster: Any = None
        self._thread_mode = thread_mode
        self._seams = clock is not None or transport_factory is not None
        mode = threads.choose_mode(thread_mode, seams=self._seams)
        if self.config.cluster is not None:
            import topgun.cluster.cluster_client  # noqa: F401  (here, not first on the loop thread: see above)
        forking.track(self)
        if mode == "loop" and not wait_connected:
            # Nothing to wait for, so start the loop thread (and connect) on first use: a process
            # that forks before using the client (gunicorn --preload) runs no thread of ours first.
            self._home: Optional[threads.Home] = None
            self._start_pending = True
            return
        self._home = threads.Home(mode)
        try:
            self._home.run(self._start, wait_connected, what="TopGunClient()",
                           timeout=self.config.connect_timeout + threads.GRACE_S)
        except BaseException:
            self._home.close()
            raise

    @classmethod
    def from_env(cls, *, url: Optional[str] = None, seeds: Optional[List[str]] = None, token: Any = None,
                 cluster: bool = False, **options: Any) -> "TopGunClient":
        """A client configured from the environment, the way the CLI and the web examples do it.

        Explicit arguments win; otherwise ``TOPGUN_SEEDS`` (comma-separated URLs: cluster mode),
        then ``TOPGUN_URL`` (one server), then ``ws://127.0.0.1:8080/ws``; the token comes from
        ``TOPGUN_TOKEN``. An explicit ``url`` ignores ``TOPGUN_SEEDS``; ``cluster=True`` uses
        cluster mode even for one URL. ``options`` go to the constructor.
        """
        if seeds is None:
            raw = "" if url else os.environ.get("TOPGUN_SEEDS", "")
            seeds = [s.strip() for s in raw.split(",") if s.strip()]
        token = token or os.environ.get("TOPGUN_TOKEN") or None
        if seeds:
            return cls(cluster=ClusterConfig(seeds=seeds), token=token, **options)
        url = url or os.environ.get("TOPGUN_URL", DEFAULT_URL)
        if cluster:
            return cls(cluster=ClusterConfig(seeds=[url]), token=token, **options)
        return cls(url=url, token=token, **options)

    def _start(self, wait_connected: bool) -> None:
        """Build the provider and engine on the home's hub (also again in a forked child)."""
        self._group = Group()
        provider = self._make_provider()
        self._engine = SyncEngine(
            provider, clock=self.clock, write_concern=self.config.effective_write_concern,
            batch_size=self.config.batch_size, max_in_flight=self.config.max_in_flight,
            request_timeout=self.config.request_timeout, on_message=self._on_message,
            on_disconnected=self._on_disconnected)
        self._engine.start()
        if wait_connected and not provider.wait_ready(self.config.connect_timeout):
            error = provider.last_error
            self._close_on_home()
            if isinstance(error, TopGunError) and not isinstance(error, ClientClosed):
                raise error
            raise ConnectTimeout(f"no connection to {', '.join(self.config.endpoints)} "
                                 f"within {self.config.connect_timeout:.3g}s")

    def _make_provider(self) -> ConnectionProvider:
        if self.config.cluster is None:
            assert self.config.url is not None
            return SingleServerProvider(self.config.url, clock=self.clock, connect=self._connect,
                                        reconnect=self.config.reconnect)
        from .cluster.cluster_client import ClusterClient
        self.cluster = ClusterClient(self.config.cluster, clock=self.clock, connect=self._connect,
                                     reconnect=self.config.reconnect)
        return self.cluster  # type: ignore[no-any-return]

    def _connect(self, url: str, *, node_id: Optional[str] = None,
                 on_message: Optional[Callable[[Connection, m.Message], None]] = None,
                 on_closed: Optional[Callable[[Connection, Optional[BaseException]], None]] = None,
                 spawn: Optional[Callable[..., gevent.Greenlet]] = None) -> Connection:
        """Open one handshaken connection (used by the providers)."""
        conn = Connection(url, clock=self.clock, token=self.config.token,
                          connect_timeout=self.config.connect_timeout, node_id=node_id,
                          on_message=on_message, on_closed=on_closed, spawn=spawn or gevent.spawn,
                          transport_factory=self._transport_factory or self._tracked_websocket,
                          ping_interval=self._ping_interval)
        return conn.open()

    def _tracked_websocket(self, url: str, timeout: float) -> Any:
        # Remember the sockets, so that a forked child can detach them (topgun.forking).
        return WebSocketTransport.connect(url, timeout, socket_module=self._sockets,
                                          ssl_context=self.config.ssl_context)

    def _home_for_call(self) -> threads.Home:
        """The home a public call runs on, started now if it was deferred or dropped by a fork."""
        if self._start_pending and not self._closed:
            with self._start_lock:  # held for the claim only, never while waiting
                mine, self._starting = not self._starting, True
            if mine:
                try:
                    home = threads.Home(threads.choose_mode(self._thread_mode, seams=self._seams))
                    log.info("starting a %s home in pid %d on first use", home.mode, os.getpid())
                    home.run(self._start, False, what="TopGunClient start on first use",
                             timeout=self.config.connect_timeout + threads.GRACE_S)
                    self._home = home
                finally:
                    self._start_pending = self._starting = False
            else:
                threads.wait_until(lambda: not self._start_pending, self.config.connect_timeout + threads.GRACE_S)
        if self._home is None:
            raise ClientClosed("the client is closed")
        return self._home

    # ------------------------------------------------------------------ API

    def map(self, name: str) -> MapHandle:
        """A handle on the map ``name`` (cheap; no IO)."""
        self._check_open()
        return MapHandle(self, name)

    @threads.blocking()
    def ping(self, timeout: Optional[float] = None) -> float:
        """Round trip to a server, in seconds."""
        start = self.clock.monotonic()
        self._engine.request(m.Ping(self.clock.now_ms()), timeout=timeout)
        return self.clock.monotonic() - start

    @property
    def connected(self) -> bool:
        self._home_for_call()  # in a forked child, looking counts as first use
        return bool(self._engine.provider.open_connections())

    @property
    def pending_writes(self) -> int:
        """Writes queued or in flight, not yet acknowledged."""
        self._home_for_call()
        return self._engine.queued + self._engine.in_flight

    def close(self) -> None:
        """Unsubscribe live queries, fail queued writes with ClientClosed, close connections."""
        if self._closed:
            return
        if self._starting:  # another thread is starting it on first use: close what it starts
            threads.wait_until(lambda: not self._starting, self.config.connect_timeout + threads.GRACE_S)
        if self._start_pending:  # never started here (deferred, or dropped by a fork): nothing to close
            self._closed = True
            return
        home = self._home
        if home is None:  # already closed
            self._closed = True
            return
        try:
            home.run(self._close_on_home, timeout=5.0 + threads.GRACE_S, what="TopGunClient.close()")
        finally:
            home.close()

    def _close_on_home(self) -> None:
        if self._closed:
            return
        self._closed = True
        for sub in list(self._subs.values()):
            sub.close()
        self._group.kill(timeout=1.0)
        self._engine.close()

    def __enter__(self) -> "TopGunClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @property
    def thread_mode(self) -> str:
        """Where the greenlets run: ``"direct"`` or ``"loop"`` (resolved from ``thread_mode=``)."""
        return self._home_for_call().mode

    def _check_open(self) -> None:
        if self._closed:
            raise ClientClosed("the client is closed")

    # ------------------------------------------------------------------ queries

    def _query_once(self, map_name: str, query: Dict[str, Any], fields: Optional[List[str]],
                    timeout: Optional[float]) -> List[Tuple[str, Any]]:
        self._check_open()

        def attempt(conn: Connection, remaining: float) -> List[Tuple[str, Any]]:
            query_id = uuid.uuid4().hex
            start = self.clock.monotonic()
            try:
                reply = conn.request(m.QuerySub(query_id, map_name, query, fields), remaining)
            finally:
                if conn.is_open:
                    conn.send(m.QueryUnsub(query_id))
            if not isinstance(reply, m.QueryResp):
                raise RemoteProtocolError(f"expected QUERY_RESP, got {reply.TYPE}")
            if reply.has_more:
                # The server stops at 10,000 results and cannot page. A whole map is still
                # readable through its Merkle tree; a filtered query is not, so say so.
                if query or fields:
                    raise ServerError(f"the query on {map_name!r} matched more than the server returns at "
                                      f"once ({len(reply.results)}); narrow it or pass limit=", code="TRUNCATED")
                left = remaining - (self.clock.monotonic() - start)
                return list(walk_all(conn, map_name, max(0.0, left)).items())
            return [(r["key"], r.get("value")) for r in reply.results]

        return self._engine.call(attempt, timeout=timeout)  # type: ignore[no-any-return]

    def _subscribe(self, map_name: str, query: Dict[str, Any], fields: Optional[List[str]],
                   on_change: Optional[Callable[[Change], None]], timeout: Optional[float]) -> Subscription:
        self._check_open()
        sub = Subscription(self, map_name, query, fields, on_change)
        self._subs[sub.query_id] = sub
        try:
            return sub.open(timeout if timeout is not None else self.config.request_timeout)
        except BaseException:
            self._subs.pop(sub.query_id, None)
            raise

    def _forget_subscription(self, sub: Subscription) -> None:
        self._subs.pop(sub.query_id, None)

    def _on_message(self, conn: Connection, msg: m.Message) -> None:
        if isinstance(msg, m.QueryUpdate):
            sub = self._subs.get(msg.query_id)
            if sub is not None:
                sub._deliver(msg)

    def _on_disconnected(self, conn: Connection, exc: Optional[BaseException]) -> None:
        for sub in list(self._subs.values()):
            if sub.conn is conn:
                self._group.spawn(sub._connection_lost)

    def __repr__(self) -> str:
        mode = f"cluster {list(self.config.cluster.seeds)}" if self.config.cluster else self.config.url
        if self._closed or self._start_pending:  # (never start the client just to print it)
            return f"<TopGunClient {mode} {'closed' if self._closed else 'not started'}>"
        state = "connected" if self.connected else "connecting"
        return f"<TopGunClient {mode} {state} pending={self.pending_writes}>"
