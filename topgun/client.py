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

Nothing the running greenlets hold reaches the client (the providers get a ``_Connector`` and
the connection-state callbacks, not bound methods), so a client nobody references is collected;
one collected without ``close()`` emits a ``ResourceWarning`` and its runtime is closed on its
home (``_release_unclosed``), which ends its loop thread and closes its sockets.

Not in here: the wire, batching, retries, routing (``protocol``, ``engine``, ``retry``,
``cluster``); what a map can do (``maps``); live-query bookkeeping (``queries``).
"""
from __future__ import annotations

import dataclasses
import difflib
import inspect
import logging
import os
import uuid
import warnings
import weakref
from typing import Any, Callable, Dict, List, Optional
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import gevent

from . import forking, threads
from .clock import Clock, GeventClock
from .config import ClientConfig, ClusterConfig
from .counters import CounterHandle
from .engine.provider import ConnectionProvider, SingleServerProvider
from .errors import ClientClosed, ConfigurationError, ConnectTimeout, TopGunError, cause_of
from .locks import Lock
from .maps import MapHandle
from .metrics import guarded
from .ormaps import ORMapHandle
from .protocol import messages as m
from .retry import AuthRefusals
from .runtime import Runtime
from .storage.nearcache import NearCache
from .topics import TopicHandle
from .transport import trust
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
        config: a whole :class:`topgun.ClientConfig`; the other keywords that are not None
            override its fields (``dataclasses.replace``; ``url``/``cluster`` replace its endpoint).
        cluster: a :class:`topgun.ClusterConfig` for cluster mode (give url or cluster).
        token: a JWT string, or a callable returning one (called again on every
            (re)connect that needs authentication).
        request_timeout: default deadline of each blocking call, in seconds (default 10).
        connect_timeout: how long to wait for the first connection (and each handshake; default
            5). A port that refuses the connection a few times in a row ends the wait at once.
        wait_connected: if True (default), the constructor raises when no connection is
            made within ``connect_timeout``; if False, it returns at once and writes queue
            until a connection comes up.
        thread_mode: ``"auto"`` (default), ``"direct"`` (greenlets on the creating thread's hub)
            or ``"loop"`` (on a daemon thread of the client's own); see :mod:`topgun.threads`.
        on_connected, on_disconnected: ``on_connected(where)`` / ``on_disconnected(where, exc)``
            as connections come and go; ``where`` is the URL (one server) or the node id
            (cluster). Also assignable attributes.
        **options: the remaining :class:`topgun.config.ClientConfig` fields
            (write_concern, batch_size, max_in_flight, reconnect, retry, node_id, ssl_context: an
            ``ssl.SSLContext`` for ``wss://``, default verification with the system trust store;
            storage: None (memory, the default), a path or ``"sqlite:///path"``, or a
            :class:`topgun.SQLiteStorage`: a durable outbox, replayed when a client starts on it,
            see :mod:`topgun.storage.outbox`), metrics: a :class:`topgun.metrics.Metrics` sink).

    Raises:
        TypeError: an unknown keyword (the message suggests the closest option).
        ConfigurationError: bad arguments.
        StorageLocked: the ``storage=`` file is in use by another client.
        AuthError, TLSVerificationError, ConnectTimeout, ConnectionLost: with ``wait_connected``,
            no connection.
    """

    def __init__(self, url: Optional[str] = None, *, config: Optional[ClientConfig] = None,
                 cluster: Optional[ClusterConfig] = None, token: Any = None,
                 request_timeout: Optional[float] = None, connect_timeout: Optional[float] = None,
                 wait_connected: bool = True, clock: Optional[Clock] = None,
                 transport_factory: Optional[TransportFactory] = None, ping_interval: Optional[float] = 5.0,
                 thread_mode: str = "auto", on_connected: Optional[Callable[[str], None]] = None,
                 on_disconnected: Optional[Callable[[str, Optional[BaseException]], None]] = None,
                 **options: Any) -> None:
        self.config = _client_config(config, dict(url=url, cluster=cluster, token=token,
                                                  request_timeout=request_timeout,
                                                  connect_timeout=connect_timeout, **options))
        self.clock = clock or GeventClock()
        self.node_id = self.config.node_id or "py-" + uuid.uuid4().hex[:12]
        self._events = _ConnectionEvents(on_connected, on_disconnected)
        self._sockets = forking.SocketTracker()
        # The providers get this, not a bound method: nothing the running greenlets hold may
        # reach the client, or a client nobody references could never be collected (and warn).
        self._connect = _Connector(self.config, self.clock, transport_factory, ping_interval, self._sockets)
        self._runtime: Optional[Runtime] = None
        self._finalizer: "Optional[weakref.finalize[Any, Any]]" = None
        self._closed = False
        self._start_pending = False
        self._starting = False
        self._start_lock = threads.allocate_lock()
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
    def from_url(cls, url: str, **options: Any) -> "TopGunClient":
        """A client for one ``ws://`` or ``wss://`` URL, with common options in its query string.

        ``TopGunClient.from_url("ws://db:8080/ws?request_timeout=3&connect_timeout=1")``. The
        query parameters understood are ``request_timeout`` and ``connect_timeout`` (seconds),
        ``write_concern`` and ``cluster`` (``1``/``true``: cluster mode with the URL as its seed);
        they are removed from the URL before connecting. Any other parameter is a
        :class:`~topgun.errors.ConfigurationError` (a URL whose server needs a query string
        goes to ``TopGunClient(url=...)`` as it is). Keyword arguments win over the query string
        and go to the constructor.

        Raises:
            ConfigurationError: not a ws:// or wss:// URL, an unknown or malformed parameter.
        """
        if not isinstance(url, str):
            raise ConfigurationError(f"from_url() needs a ws:// URL as a str, got {type(url).__name__}")
        parts = urlsplit(url)
        if parts.scheme in ("http", "https"):
            raise ConfigurationError(f"{url!r} is an HTTP URL; TopGun speaks WebSocket: "
                                     f"ws{parts.scheme[4:]}://{parts.netloc}{parts.path or '/ws'}")
        from_query: Dict[str, Any] = {}
        for name, raw in parse_qsl(parts.query, keep_blank_values=True):
            convert = _URL_OPTIONS.get(name)
            if convert is None:
                hint = difflib.get_close_matches(name, _URL_OPTIONS, n=1)
                raise ConfigurationError(
                    f"from_url(): unknown query parameter {name!r}" + (f"; did you mean {hint[0]!r}?" if hint else "")
                    + f" (understood: {', '.join(sorted(_URL_OPTIONS))})")
            if name in from_query:
                raise ConfigurationError(f"from_url(): query parameter {name!r} is given twice")
            from_query[name] = convert(name, raw)
        plain = urlunsplit((parts.scheme, parts.netloc, parts.path, "", parts.fragment))
        merged = {**from_query, **options}
        if merged.pop("cluster", False):
            return cls(cluster=ClusterConfig(seeds=[plain]), **merged)
        return cls(plain, **merged)

    @classmethod
    def from_env(cls, *, url: Optional[str] = None, seeds: Optional[List[str]] = None, token: Any = None,
                 cluster: bool = False, ca_file: Optional[str] = None, **options: Any) -> "TopGunClient":
        """A client configured from the environment, the way the CLI and the web examples do it.

        Explicit arguments win; otherwise ``TOPGUN_SEEDS`` (comma-separated URLs: cluster mode),
        then ``TOPGUN_URL`` (one server), then ``ws://127.0.0.1:8080/ws``; the token comes from
        ``TOPGUN_TOKEN``. An explicit ``url`` ignores ``TOPGUN_SEEDS``; ``cluster=True`` uses
        cluster mode even for one URL. ``ca_file``, else ``TOPGUN_CA_FILE``, names a PEM bundle
        of private CA certificates that ``wss://`` connections trust (instead of the system
        store; see :mod:`topgun.transport.trust`); an ``ssl_context=`` option wins over both.
        ``options`` go to the constructor.

        Raises:
            ConfigurationError: bad arguments, or a CA file that is missing, unreadable or holds
                no certificate (the message names it and whether it came from ``ca_file`` or
                ``TOPGUN_CA_FILE``); and what the constructor raises.
        """
        # An ssl_context of the caller's (also one inside config=) wins: the file is not even read.
        if options.get("ssl_context") is None and getattr(options.get("config"), "ssl_context", None) is None:
            context = trust.ca_file_context_from_env(ca_file)
            if context is not None:
                options["ssl_context"] = context
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
        # Collected without close(): release the runtime (thread, sockets) and say so.
        self._finalizer = weakref.finalize(self, _release_unclosed, runtime, f"<TopGunClient {self._where()}>")
        self._finalizer.atexit = False  # at exit, forking closes loop-mode clients; no warning then
        runtime.start()
        if wait_connected and not runtime.wait_ready(config.connect_timeout):
            error = runtime.last_error
            self._close_on_home()
            if isinstance(error, TopGunError) and not isinstance(error, ClientClosed):
                raise error
            raise ConnectTimeout(f"no connection to {', '.join(self.config.endpoints)} "
                                 f"within {self.config.connect_timeout:.3g}s") from cause_of(error)

    def _make_provider(self, metrics: Any = None) -> ConnectionProvider:
        events = self._events
        refusals = AuthRefusals.for_token(self.config.token)
        if self.config.cluster is None:
            assert self.config.url is not None
            return SingleServerProvider(self.config.url, clock=self.clock, connect=self._connect,
                                        reconnect=self.config.reconnect, retry=self.config.effective_retry,
                                        refusals=refusals, metrics=metrics,
                                        on_connected=events.connected, on_disconnected=events.disconnected)
        from .cluster.provider import ClusterProvider
        self.cluster = ClusterProvider(self.config.cluster, clock=self.clock, connect=self._connect,
                                       reconnect=self.config.reconnect, retry=self.config.effective_retry,
                                       auth_attempts=refusals.limit, metrics=metrics,
                                       on_node_connected=events.connected, on_node_lost=events.disconnected)
        return self.cluster  # type: ignore[no-any-return]

    @property
    def on_connected(self) -> Optional[Callable[[str], None]]:
        """Called with the URL (one server) or node id (cluster) each time a connection comes up.

        Assignable. Runs on the client's hub: keep it quick, and do not call the client from it.
        In cluster mode it is the provider's ``on_node_connected`` (once per node, not per pooled
        connection); setting ``client.cluster.on_node_connected`` replaces it.
        """
        return self._events.on_connected

    @on_connected.setter
    def on_connected(self, fn: Optional[Callable[[str], None]]) -> None:
        self._events.on_connected = fn

    @property
    def on_disconnected(self) -> Optional[Callable[[str, Optional[BaseException]], None]]:
        """Called with (URL or node id, the error or None) each time a connection is lost. Assignable."""
        return self._events.on_disconnected

    @on_disconnected.setter
    def on_disconnected(self, fn: Optional[Callable[[str, Optional[BaseException]], None]]) -> None:
        self._events.on_disconnected = fn

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
        """True while at least one connection is open (False once closed)."""
        if self._closed:
            return False
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
        if self._finalizer is not None:
            self._finalizer.detach()  # closed on purpose: nothing to warn about
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
        if self._finalizer is not None:
            self._finalizer.detach()
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
        if self._finalizer is not None:
            self._finalizer.detach()  # the parent's runtime is buried here, never released
        subs = runtime.drop_subscriptions()  # the parent keeps its subscriptions; these never deliver
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

    def _where(self) -> str:
        return f"cluster {list(self.config.cluster.seeds)}" if self.config.cluster else str(self.config.url)

    def __repr__(self) -> str:
        mode = self._where()
        if self._closed or self._start_pending:  # (never start the client just to print it)
            return f"<TopGunClient {mode} {'closed' if self._closed else 'not started'}>"
        state = "connected" if self.connected else "connecting"
        return f"<TopGunClient {mode} {state} pending={self.pending_writes}>"


# ---------------------------------------------------------------------------- helpers of the client

_CONFIG_FIELDS = frozenset(f.name for f in dataclasses.fields(ClientConfig))


def _client_config(config: Optional[ClientConfig], keywords: Dict[str, Any]) -> ClientConfig:
    """The client's frozen config: ``config`` (or the defaults) with the keywords that are not None.

    An unknown keyword is a ``TypeError`` naming ``TopGunClient()`` and the closest option, not
    the dataclass's own ``ClientConfig.__init__`` message.
    """
    for name in keywords:
        if name not in _CONFIG_FIELDS:
            known = sorted(_CONFIG_FIELDS | set(inspect.signature(TopGunClient.__init__).parameters) - {"self",
                                                                                                    "options"})
            hint = difflib.get_close_matches(name, known, n=1)
            raise TypeError(f"TopGunClient() got an unexpected keyword argument {name!r}"
                            + (f"; did you mean {hint[0]!r}?" if hint else ""))
    given = {name: value for name, value in keywords.items() if value is not None}
    if config is None:
        return ClientConfig(**given)
    if not isinstance(config, ClientConfig):
        raise ConfigurationError(f"config= must be a topgun.ClientConfig, got {type(config).__name__}")
    # A keyword endpoint replaces the config's, whichever mode that was in.
    if "url" in given:
        given.setdefault("cluster", None)
    elif "cluster" in given:
        given.setdefault("url", None)
    return dataclasses.replace(config, **given) if given else config


def _seconds(name: str, raw: str) -> float:
    try:
        return float(raw)
    except ValueError:
        raise ConfigurationError(f"from_url(): {name}={raw!r} is not a number of seconds") from None


def _flag(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value not in ("1", "true", "yes", "0", "false", "no", ""):
        raise ConfigurationError(f"from_url(): {name}={raw!r} is not 1/0/true/false")
    return value in ("1", "true", "yes")


_URL_OPTIONS: Dict[str, Callable[[str, str], Any]] = {
    "request_timeout": _seconds, "connect_timeout": _seconds,
    "write_concern": lambda name, raw: raw.upper(), "cluster": _flag,
}


class _ConnectionEvents:
    """The client's ``on_connected``/``on_disconnected``, called by the provider (errors logged)."""

    def __init__(self, on_connected: Optional[Callable[[str], None]],
                 on_disconnected: Optional[Callable[[str, Optional[BaseException]], None]]) -> None:
        self.on_connected = on_connected
        self.on_disconnected = on_disconnected

    def connected(self, where: str) -> None:
        fn = self.on_connected
        if fn is not None:
            try:
                fn(where)
            except Exception:  # user code must not break reconnecting
                log.exception("on_connected callback %r failed", fn)

    def disconnected(self, where: str, exc: Optional[BaseException]) -> None:
        fn = self.on_disconnected
        if fn is not None:
            try:
                fn(where, exc)
            except Exception:
                log.exception("on_disconnected callback %r failed", fn)


class _Connector:
    """Opens one handshaken connection for the providers (``connect(url, ...) -> Connection``)."""

    def __init__(self, config: ClientConfig, clock: Clock, transport_factory: Optional[TransportFactory],
                 ping_interval: Optional[float], sockets: forking.SocketTracker) -> None:
        self.config, self.clock, self.ping_interval, self.sockets = config, clock, ping_interval, sockets
        self.transport_factory = transport_factory or self._tracked_websocket

    def __call__(self, url: str, *, node_id: Optional[str] = None,
                 on_message: Optional[Callable[[Connection, m.Message], None]] = None,
                 on_closed: Optional[Callable[[Connection, Optional[BaseException]], None]] = None,
                 spawn: Optional[Callable[..., gevent.Greenlet]] = None) -> Connection:
        conn = Connection(url, clock=self.clock, token=self.config.token,
                          connect_timeout=self.config.connect_timeout, node_id=node_id,
                          on_message=on_message, on_closed=on_closed, spawn=spawn or gevent.spawn,
                          transport_factory=self.transport_factory, ping_interval=self.ping_interval)
        return conn.open()

    def _tracked_websocket(self, url: str, timeout: float) -> Any:
        # Remember the sockets, so that a forked child can detach them (topgun.forking).
        return WebSocketTransport.connect(url, timeout, socket_module=self.sockets,
                                          ssl_context=self.config.ssl_context)

    def __repr__(self) -> str:
        return f"<Connector {', '.join(self.config.endpoints)}>"


def _release_unclosed(runtime: Runtime, what: str) -> None:
    """A client was collected without ``close()``: close its runtime on its home, then warn.

    Runs wherever the garbage collector runs, so it never blocks: the close is handed to the
    home's hub, and a loop thread stops once it is done.
    """
    runtime.home.release(runtime.close)
    warnings.warn(f"{what} was never closed; its connections and thread are being released now "
                  "(call client.close() or use 'with TopGunClient(...) as client:')", ResourceWarning,
                  stacklevel=2)
