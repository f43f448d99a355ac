"""TopGunClient: the one public client, for one server (``url=``) or a cluster (``cluster=``).

The same API in both modes. Inside: one :class:`~topgun.runtime.Runtime` (home, greenlets,
write engine, request runner, live-query registry, HLC) over a connection provider:
:class:`~topgun.engine.provider.SingleServerProvider` for ``url=``,
:class:`~topgun.cluster.provider.ClusterProvider` for ``cluster=``. Handles reach it through
``client.runtime``; the client hands down what its parts need and none of them reaches into it.
Every blocking call returns or raises by its deadline; every error derives from
:class:`topgun.TopGunError`.

Threads and processes: the client's greenlets live on one hub, its home (see
:mod:`topgun.threads`): the creating thread's hub under monkey-patching or in gevent code,
else a loop thread of its own; public blocking methods may be called from any thread. After
``os.fork()`` the child drops its runtime whole and builds a new one on first use (the hooks
are in :mod:`topgun.forking`; the reset is :meth:`TopGunClient._reset_in_child`).

Not in here: the wire, batching, retries, routing (``protocol``, ``engine``, ``retry``,
``cluster``); what a map can do (``maps``); live-query bookkeeping (``queries``).
"""
from __future__ import annotations

import logging
import os
import uuid
from typing import Any, Callable, Dict, List, Optional

import gevent

from . import forking, threads
from .clock import Clock, GeventClock
from .config import ClientConfig, ClusterConfig
from .counters import CounterHandle
from .engine.provider import ConnectionProvider, SingleServerProvider
from .errors import ClientClosed, ConnectTimeout, TopGunError, cause_of
from .locks import Lock
from .maps import MapHandle
from .metrics import guarded
from .ormaps import ORMapHandle
from .protocol import messages as m
from .retry import AuthRefusals
from .runtime import Runtime
from .storage.nearcache import NearCache
from .topics import TopicHandle
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
            (write_concern, batch_size, max_in_flight, reconnect, retry, node_id, ssl_context: an
            ``ssl.SSLContext`` for ``wss://``, default verification with the system trust store;
            storage: None (memory, the default), a path or ``"sqlite:///path"``, or a
            :class:`topgun.SQLiteStorage`: a durable outbox, replayed when a client starts on it,
            see :mod:`topgun.storage.outbox`), metrics: a :class:`topgun.metrics.Metrics` sink).

    Raises:
        ConfigurationError: bad arguments.
        StorageLocked: the ``storage=`` file is in use by another client.
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
        self._transport_factory = transport_factory
        self._ping_interval = ping_interval
        self._runtime: Optional[Runtime] = None
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
            import topgun.cluster.provider  # noqa: F401  (here, not first on the loop thread: see above)
        forking.track(self, on_fork=self._reset_in_child, at_exit=self._close_at_exit)
        if mode == "loop" and not wait_connected:
            # Nothing to wait for, so start the loop thread (and connect) on first use: a process
            # that forks before using the client (gunicorn --preload) runs no thread of ours first.
            self._start_pending = True
            return
        home = threads.Home(mode)
        try:
            home.run(self._start, home, wait_connected, what="TopGunClient()",
                     timeout=self.config.connect_timeout + threads.GRACE_S)
        except BaseException:
            home.close()
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

    def _start(self, home: threads.Home, wait_connected: bool) -> None:
        """Build and start a runtime on ``home``'s hub (also again in a forked child)."""
        config = self.config
        metrics = guarded(config.metrics)
        runtime = self._runtime = Runtime(
            home, self._make_provider(metrics), clock=self.clock, node_id=self.node_id,
            write_concern=config.effective_write_concern, batch_size=config.batch_size,
            max_in_flight=config.max_in_flight, request_timeout=config.request_timeout, storage=config.storage,
            metrics=metrics)
        runtime.start()
        if wait_connected and not runtime.wait_ready(config.connect_timeout):
            error = runtime.last_error
            self._close_on_home()
            if isinstance(error, TopGunError) and not isinstance(error, ClientClosed):
                raise error
            raise ConnectTimeout(f"no connection to {', '.join(self.config.endpoints)} "
                                 f"within {self.config.connect_timeout:.3g}s") from cause_of(error)

    def _make_provider(self, metrics: Any = None) -> ConnectionProvider:
        refusals = AuthRefusals.for_token(self.config.token)
        if self.config.cluster is None:
            assert self.config.url is not None
            return SingleServerProvider(self.config.url, clock=self.clock, connect=self._connect,
                                        reconnect=self.config.reconnect, retry=self.config.effective_retry,
                                        refusals=refusals, metrics=metrics)
        from .cluster.provider import ClusterProvider
        self.cluster = ClusterProvider(self.config.cluster, clock=self.clock, connect=self._connect,
                                       reconnect=self.config.reconnect, retry=self.config.effective_retry,
                                       auth_attempts=refusals.limit, metrics=metrics)
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

    @property
    def runtime(self) -> Runtime:
        """What the client runs on (home, engine, request runner, live queries, HLC), for handles.

        Looked up on every call: it is started here if it was deferred (``wait_connected=False``)
        or dropped by a fork.

        Raises:
            ClientClosed: the client was closed before it ever started.
        """
        runtime = self._runtime
        if runtime is None or self._start_pending:
            return self._start_on_first_use()
        return runtime

    @property
    def request_timeout(self) -> float:
        """The default deadline of each blocking call, in seconds."""
        return self.config.request_timeout

    def _start_on_first_use(self) -> Runtime:
        if self._start_pending and not self._closed:
            with self._start_lock:  # held for the claim only, never while waiting
                mine, self._starting = not self._starting, True
            if mine:
                try:
                    home = threads.Home(threads.choose_mode(self._thread_mode, seams=self._seams))
                    log.info("starting a %s home in pid %d on first use", home.mode, os.getpid())
                    home.run(self._start, home, False, what="TopGunClient start on first use",
                             timeout=self.config.connect_timeout + threads.GRACE_S)
                finally:
                    self._start_pending = self._starting = False
            else:
                threads.wait_until(lambda: not self._start_pending, self.config.connect_timeout + threads.GRACE_S)
        if self._runtime is None:
            raise ClientClosed("the client is closed")
        return self._runtime

    # ------------------------------------------------------------------ API

    def map(self, name: str, *, near_cache: Optional[NearCache] = None) -> MapHandle:
        """A handle on the map ``name`` (cheap; no IO).

        Args:
            near_cache: keep a local copy of what this handle reads, kept fresh by the map's
                change events (see :mod:`topgun.storage.nearcache`). Every handle on the map with
                the same :class:`topgun.NearCache` shares one cache.
        """
        self._check_open()
        return MapHandle(self, name, near_cache=near_cache)

    @property
    def stats(self) -> Dict[str, Any]:
        """Counters: ``engine`` (batches, acks, resends), ``outbox`` (None with memory storage) and
        ``near_cache`` (per map: hits, misses, invalidations, evictions, expired, clears, entries, live)."""
        runtime = self.runtime
        stats: Dict[str, Any] = runtime.home.run(runtime.stats, what="TopGunClient.stats", timeout=5.0)
        return stats

    def ormap(self, name: str) -> ORMapHandle:
        """A handle on the observed-remove map ``name``: several values per key (cheap; no IO)."""
        self._check_open()
        return ORMapHandle(self, name)

    def topic(self, name: str) -> TopicHandle:
        """A handle on the pub/sub topic ``name`` (cheap; no IO); see :mod:`topgun.topics`."""
        self._check_open()
        return TopicHandle(self, name)

    def lock(self, name: str, *, ttl: Optional[float] = None,
             on_lost: Optional[Callable[[Lock], None]] = None) -> Lock:
        """A distributed lock ``name`` (cheap; no IO until ``acquire``); see :mod:`topgun.locks`."""
        self._check_open()
        return Lock(self, name, ttl=ttl, on_lost=on_lost)

    def counter(self, name: str) -> CounterHandle:
        """A handle on the PN counter ``name`` (cheap; no IO); see :mod:`topgun.counters`."""
        self._check_open()
        return CounterHandle(self, name)

    @threads.blocking()
    def ping(self, timeout: Optional[float] = None) -> float:
        """Round trip to a server, in seconds."""
        start = self.clock.monotonic()
        self.runtime.requests.request(m.Ping(self.clock.now_ms()), timeout=timeout)
        return self.clock.monotonic() - start

    @property
    def connected(self) -> bool:
        # in a forked child, looking counts as first use
        return bool(self.runtime.provider.open_connections())

    @property
    def pending_writes(self) -> int:
        """Writes queued or in flight, not yet acknowledged."""
        engine = self.runtime.engine
        return engine.queued + engine.in_flight

    def close(self) -> None:
        """Unsubscribe live queries, fail queued writes with ClientClosed, close connections."""
        if self._closed:
            return
        if self._starting:  # another thread is starting it on first use: close what it starts
            threads.wait_until(lambda: not self._starting, self.config.connect_timeout + threads.GRACE_S)
        if self._start_pending:  # never started here (deferred, or dropped by a fork): nothing to close
            self._closed = True
            return
        runtime = self._runtime
        if runtime is None:  # never started
            self._closed = True
            return
        home = runtime.home
        try:
            home.run(self._close_on_home, timeout=5.0 + threads.GRACE_S, what="TopGunClient.close()")
        finally:
            home.close()

    def _close_on_home(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._runtime is not None:
            self._runtime.close()

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called (or the constructor gave up connecting)."""
        return self._closed

    def __enter__(self) -> "TopGunClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @property
    def thread_mode(self) -> str:
        """Where the greenlets run: ``"direct"`` or ``"loop"`` (resolved from ``thread_mode=``)."""
        return self.runtime.home.mode

    def _check_open(self) -> None:
        if self._closed:
            raise ClientClosed("the client is closed")

    # ------------------------------------------------------------------ fork and exit (topgun.forking calls these)

    def _reset_in_child(self, forking_hub: Any) -> None:
        """In a forked child: drop the inherited runtime whole; the next call starts a new one.

        Runs inside ``os.fork()``: it neither blocks nor switches greenlets (see :mod:`topgun.forking`).
        """
        self._start_lock = threads.allocate_lock()  # the forking thread may have held it
        runtime = self._runtime
        if self._closed or self._start_pending or runtime is None:
            return
        self._runtime, self._start_pending = None, True
        subs = runtime.queries.drop()  # the parent keeps its subscriptions; these never deliver
        runtime.drop_storage()  # the parent keeps its storage file; the copy is never closed here
        forking.bury(runtime, self.cluster, subs)
        home = runtime.home
        if home.mode == "direct" and home.hub is forking_hub:
            # The hub lives on here: close the copy there (failing its pending writes with
            # ClientClosed). Spawned before the sockets are detached, so it runs before any
            # reader greenlet wakes up to a cancelled socket.
            forking.reap(lambda: runtime.close(timeout=1.0, engine_timeout=1.0))
        else:
            home.abandon()
        forking.close_fds(self._sockets.sever())

    def _close_at_exit(self) -> None:
        runtime = self._runtime
        if runtime is not None and runtime.home.mode == "loop" and not self._closed and not self._start_pending:
            self.close()

    def __repr__(self) -> str:
        mode = f"cluster {list(self.config.cluster.seeds)}" if self.config.cluster else self.config.url
        if self._closed or self._start_pending:  # (never start the client just to print it)
            return f"<TopGunClient {mode} {'closed' if self._closed else 'not started'}>"
        state = "connected" if self.connected else "connecting"
        return f"<TopGunClient {mode} {state} pending={self.pending_writes}>"
