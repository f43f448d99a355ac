"""Where the write engine and the request runner get their connections from.

``ConnectionProvider`` is the whole contract between them and a topology. Neither has
cluster-specific branches: they ask for "the connection for this key" or "any connection",
wait on ``wait_for_change`` when none is usable, and retry requests with the provider's own
``retrying(deadline)`` (built by :func:`topgun.retry.retrying` in both providers).
``routing_version`` counts every event that may change an answer (connect, disconnect, new
partition map). A provider reports what it sees to one ``ProviderListener``;
:class:`Listeners` fans that stream out to several (the write engine and the query registry).

``SingleServerProvider`` keeps one connection to one URL and reconnects with jittered
exponential back-off, forever, until closed. Whatever a connect attempt raises (a network
error, a ``token=`` callable's own exception as ``TokenProviderError``, a bug) is backed off
and tried again, never the end of the loop. A refused token is asked for again with the same
back-off; once refusals are persistent (:class:`~topgun.retry.AuthRefusals`) requests fail
with ``AuthError`` at once and attempts slow to ``ReconnectPolicy.max_s``.
``wait_ready`` (the constructor's wait) gives up early when waiting cannot help: a
persistently refused token or a refused certificate, or ``REFUSED_ATTEMPTS`` connects in a row
refused by the host (nothing listens on that port). Reconnecting goes on.

Not in here: queues and acks (``engine.py``), running requests (``requests.py``), partition
maps and pools (``topgun.cluster``).
"""
from __future__ import annotations

import logging
from typing import Callable, Iterator, List, Optional, Protocol

import gevent
from gevent.event import Event
from gevent.pool import Group

from ..clock import Clock
from ..config import ReconnectPolicy, RetryPolicy
from ..errors import (
    AuthError,
    ClientClosed,
    ConnectionLost,
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

log = logging.getLogger(__name__)

__all__ = ["ProviderListener", "ConnectionProvider", "Listeners", "SingleServerProvider", "REFUSED_ATTEMPTS"]

#: Connects in a row refused by the host (ECONNREFUSED) after which a waiting constructor gives
#: up: about 0.1 s of back-off, enough for a server that is just binding its port.
REFUSED_ATTEMPTS = 3


class ProviderListener(Protocol):
    def on_connected(self, conn: Connection) -> None: ...
    def on_disconnected(self, conn: Connection, exc: Optional[BaseException]) -> None: ...
    def on_map_updated(self, version: int) -> None: ...
    def on_message(self, conn: Connection, msg: m.Message) -> None: ...


class ConnectionProvider(Protocol):
    def start(self, listener: ProviderListener) -> None:
        """Begin connecting in the background; returns at once."""

    def wait_ready(self, timeout: float) -> bool:
        """Block until at least one connection is usable (False on timeout)."""

    def connection_for_key(self, key: str) -> Connection:
        """The connection that should carry ``key``; raises a retryable TopGunError if none."""

    def any_connection(self) -> Connection:
        """Some open connection (subscriptions, map requests)."""

    def open_connections(self) -> List[Connection]:
        """Every open connection."""

    @property
    def routing_version(self) -> int: ...

    def wait_for_change(self, since: int, timeout: float) -> bool:
        """Return when ``routing_version`` moves past ``since`` (True) or after ``timeout`` (False)."""

    def request_refresh(self) -> None:
        """Routing looked stale (e.g. NOT_OWNER): fetch a fresh view soon. May do nothing."""

    def retrying(self, deadline: float) -> Retry:
        """The failover policy for one request that must end by ``deadline`` (``clock.monotonic()``)."""

    def note_resent(self, count: int) -> None:
        """The engine resent ``count`` writes (for the provider's counters). May do nothing."""

    def close(self) -> None: ...

    @property
    def last_error(self) -> Optional[BaseException]: ...


class Listeners:
    """One ``ProviderListener`` that passes every event on to several, in order."""

    def __init__(self, *listeners: ProviderListener) -> None:
        self.listeners = listeners

    def add(self, listener: ProviderListener) -> None:
        """Pass events to ``listener`` too, after the ones already here (a new tuple: safe mid-event)."""
        self.listeners = self.listeners + (listener,)

    def on_connected(self, conn: Connection) -> None:
        for listener in self.listeners:
            listener.on_connected(conn)

    def on_disconnected(self, conn: Connection, exc: Optional[BaseException]) -> None:
        for listener in self.listeners:
            listener.on_disconnected(conn, exc)

    def on_map_updated(self, version: int) -> None:
        for listener in self.listeners:
            listener.on_map_updated(version)

    def on_message(self, conn: Connection, msg: m.Message) -> None:
        for listener in self.listeners:
            listener.on_message(conn, msg)

    def __repr__(self) -> str:
        return f"<Listeners {', '.join(type(x).__name__ for x in self.listeners)}>"


class SingleServerProvider:
    """One server, one connection, reconnected for ever until ``close()``.

    ``on_connected(url)`` and ``on_disconnected(url, exc)`` are called as the connection comes
    up and goes (on the provider's greenlets; the caller guards them against raising).
    """

    def __init__(self, url: str, *, clock: Clock, connect: Callable[..., Connection],
                 reconnect: ReconnectPolicy, retry: Optional[RetryPolicy] = None,
                 refusals: Optional[AuthRefusals] = None, metrics: Optional[Metrics] = None,
                 on_connected: Optional[Callable[[str], None]] = None,
                 on_disconnected: Optional[Callable[[str, Optional[BaseException]], None]] = None) -> None:
        self.url = url
        self._on_connected = on_connected
        self._on_disconnected = on_disconnected
        self._clock = clock
        self._connect = connect  # connect(url, on_message=..., on_closed=...) -> opened Connection
        self._policy = reconnect
        self.retry_policy = retry or RetryPolicy()
        self._listener: Optional[ProviderListener] = None
        self._conn: Optional[Connection] = None
        self._routing = VersionedEvent()
        self._group = Group()
        self._closed = False
        self._ready = Event()
        self._hopeless = Event()  # wakes wait_ready: a refused token or port is not worth waiting out
        self._lost = Event()
        self.last_error: Optional[BaseException] = None
        self.reconnects = 0
        self.refusals = refusals or AuthRefusals()
        self.metrics = metrics
        self._port_refusals = 0  # connects in a row refused by the host

    def start(self, listener: ProviderListener) -> None:
        self._listener = listener
        self._group.spawn(self._supervise)

    def _supervise(self) -> None:
        delays = backoff_delays(self._policy)
        failures = 0
        while not self._closed:
            try:
                conn = self._connect(self.url, on_message=self._on_message, on_closed=self._on_closed)
            except Exception as exc:  # any type: a failed connect never ends the loop
                failures += 1
                self._clock.sleep(self._failed(exc, failures, delays))
                continue
            if self._closed:
                conn.close()
                return
            delays, failures = backoff_delays(self._policy), 0
            try:
                self._up(conn)
            except Exception:  # a listener's bug: drop this connection, back off and connect again
                log.warning("setting up the connection to %s failed; reconnecting", self.url, exc_info=True)
                conn.close()
                self._clock.sleep(next(delays))
                continue
            self._lost.wait()
            self.reconnects += 1

    def _up(self, conn: Connection) -> None:
        self.refusals.accepted()
        self._conn, self.last_error = conn, None
        self._hopeless.clear()
        self._lost.clear()
        self._ready.set()
        self._routing.bump()
        if self.metrics is not None:
            self.metrics.count("topgun.connects", 1)
            if self.reconnects:
                self.metrics.count("topgun.reconnects", 1)
        self._port_refusals = 0
        if self._listener:
            self._listener.on_connected(conn)
        if self._on_connected is not None:
            self._on_connected(self.url)

    def _failed(self, exc: Exception, failures: int, delays: Iterator[float]) -> float:
        """Note a failed connect attempt; returns how long to back off."""
        self.last_error = exc
        if self.metrics is not None:
            self.metrics.count("topgun.connect.failures", 1, error=type(exc).__name__)
        if isinstance(exc, AuthError) and not isinstance(exc, TokenProviderError):
            if self.metrics is not None:
                self.metrics.count("topgun.auth.refusals", 1)
            if not self.refusals.refused():
                # A token callable may hand out a better one: ask again soon, tell no caller yet.
                delay = next(delays)
                log.info("%s refused the token (%d in a row); asking for a new one in %.2fs",
                         self.url, self.refusals.count, delay)
                return delay
        if isinstance(exc, (AuthError, TLSVerificationError)) and not isinstance(exc, TokenProviderError):
            # Refused credentials or certificates will not fix themselves quickly, but a token
            # provider (or a proxy's new certificate) may; keep trying at the slowest pace
            # and let callers see the error.
            self._hopeless.set()
            self._routing.bump()
            log.warning("%s refused the connection: %s", self.url, exc)
            return self._policy.max_s
        self._port_refusals = self._port_refusals + 1 if refused(exc) else 0
        if self._port_refusals >= REFUSED_ATTEMPTS:
            self._hopeless.set()  # nothing listens there: a waiting constructor fails now
        delay = next(delays)
        if isinstance(exc, TopGunError):
            level = logging.WARNING if warn_now(failures) else logging.INFO
            log.log(level, "connect to %s failed %d times in a row (%s); retrying in %.2fs", self.url, failures,
                    describe(exc), delay)
        else:  # not one of ours: a bug, or user code (a token callable) raising something odd
            log.warning("connect to %s failed with an unexpected %s; retrying in %.2fs", self.url,
                        type(exc).__name__, delay, exc_info=exc)
        return delay

    def _on_message(self, conn: Connection, msg: m.Message) -> None:
        if self._listener:
            self._listener.on_message(conn, msg)

    def _on_closed(self, conn: Connection, exc: Optional[BaseException]) -> None:
        if conn is not self._conn:
            return
        self._conn = None
        self._ready.clear()
        self.last_error = exc or ConnectionLost(f"{self.url} closed the connection")
        self._routing.bump()
        if self._listener:
            self._listener.on_disconnected(conn, exc)
        if self._on_disconnected is not None and not self._closed:
            self._on_disconnected(self.url, exc)
        self._lost.set()

    def wait_ready(self, timeout: float) -> bool:
        """True once connected; False at the timeout, or as soon as the token, the certificate
        or (``REFUSED_ATTEMPTS`` times in a row) the port is refused."""
        gevent.wait([self._ready, self._hopeless], timeout=timeout, count=1)
        return self._ready.is_set()

    def connection_for_key(self, key: str) -> Connection:
        return self.any_connection()

    def any_connection(self) -> Connection:
        conn = self._conn
        if conn is None or not conn.is_open:
            if self._closed:
                raise ClientClosed("the client is closed")
            error = self.last_error
            if isinstance(error, AuthError) and self.refusals.persistent:
                raise AuthError(f"{self.url} keeps refusing the token: {error}", code=error.code) from error
            raise ConnectionLost(f"not connected to {self.url}") from self.last_error
        return conn

    def open_connections(self) -> List[Connection]:
        conn = self._conn
        return [conn] if conn is not None and conn.is_open else []

    @property
    def routing_version(self) -> int:
        return self._routing.version

    def wait_for_change(self, since: int, timeout: float) -> bool:
        return self._routing.wait_for_change(since, timeout)

    def request_refresh(self) -> None:
        pass  # one server: nothing to refresh

    def retrying(self, deadline: float) -> Retry:
        """Retry retryable errors until ``deadline``, waking early when the connection comes or goes."""
        metrics = self.metrics
        count = None if metrics is None else (
            lambda exc: metrics.count("topgun.retries", 1, error=type(exc).__name__))
        return retrying(self._routing, self.retry_policy, self._clock, self.request_refresh, deadline=deadline,
                        give_up=lambda: self._closed, on_retry=count)

    def note_resent(self, count: int) -> None:
        pass

    def close(self) -> None:
        self._closed = True
        conn = self._conn
        if conn is not None:
            conn.close()
        self._lost.set()
        self._routing.bump()
        self._group.kill(timeout=2.0)

    def __repr__(self) -> str:
        state = "connected" if self._conn is not None else "disconnected"
        return f"<SingleServerProvider {self.url} {state} reconnects={self.reconnects}>"
