"""Where the SyncEngine gets its connections from.

``ConnectionProvider`` is the whole contract between the engine and a topology. The engine
has no cluster-specific branches: it asks for "the connection for this key" or "any
connection", and waits on ``wait_for_change`` when none is usable. ``routing_version``
counts every event that may change an answer (connect, disconnect, new partition map).

``SingleServerProvider`` keeps one connection to one URL and reconnects with jittered
exponential back-off, forever, until closed.
"""
from __future__ import annotations

import logging
import random
from typing import Callable, List, Optional, Protocol

import gevent
from gevent.event import Event
from gevent.pool import Group
from tenacity import RetryCallState
from tenacity.stop import stop_base

from ..clock import Clock
from ..config import ReconnectPolicy
from ..errors import AuthError, ClientClosed, ConnectionLost, TLSVerificationError, TopGunError
from ..protocol import messages as m
from ..transport.connection import Connection

log = logging.getLogger(__name__)

__all__ = ["ProviderListener", "ConnectionProvider", "SingleServerProvider", "Routing", "backoff_delays", "StopAt"]


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

    def close(self) -> None: ...

    @property
    def last_error(self) -> Optional[BaseException]: ...


class Routing:
    """A version counter with an event to wait on, shared by providers."""

    def __init__(self) -> None:
        self.version = 0
        self._changed = Event()

    def bump(self) -> None:
        self.version += 1
        changed, self._changed = self._changed, Event()
        changed.set()

    def wait_for_change(self, since: int, timeout: float) -> bool:
        if self.version != since:
            return True
        self._changed.wait(max(0.0, timeout))
        return self.version != since


def backoff_delays(policy: ReconnectPolicy, rng: Callable[[], float] = random.random):
    """Endless jittered exponential delays: initial, x multiplier, capped at max_s."""
    delay = policy.initial_s
    while True:
        yield delay * (1.0 - policy.jitter * rng())
        delay = min(policy.max_s, delay * policy.multiplier)


class StopAt(stop_base):
    """Tenacity stop: once ``clock`` reaches ``deadline`` (``stop_after_delay`` reads its own clock)."""

    def __init__(self, clock: Clock, deadline: float) -> None:
        self.clock, self.deadline = clock, deadline

    def __call__(self, retry_state: RetryCallState) -> bool:
        return self.clock.monotonic() >= self.deadline


class SingleServerProvider:
    """One server, one connection, reconnected for ever until ``close()``."""

    def __init__(self, url: str, *, clock: Clock, connect: Callable[..., Connection],
                 reconnect: ReconnectPolicy) -> None:
        self.url = url
        self._clock = clock
        self._connect = connect  # connect(url, on_message=..., on_closed=...) -> opened Connection
        self._policy = reconnect
        self._listener: Optional[ProviderListener] = None
        self._conn: Optional[Connection] = None
        self._routing = Routing()
        self._group = Group()
        self._closed = False
        self._ready = Event()
        self._auth_failed = Event()  # wakes wait_ready: a refused token is not worth waiting out
        self._lost = Event()
        self.last_error: Optional[BaseException] = None
        self.reconnects = 0

    def start(self, listener: ProviderListener) -> None:
        self._listener = listener
        self._group.spawn(self._supervise)

    def _supervise(self) -> None:
        delays = backoff_delays(self._policy)
        while not self._closed:
            try:
                conn = self._connect(self.url, on_message=self._on_message, on_closed=self._on_closed)
            except (AuthError, TLSVerificationError) as exc:
                # Wrong credentials or certificates will not fix themselves quickly, but a token
                # provider (or a proxy's new certificate) may; keep trying at the slowest pace
                # and let callers see the error.
                self.last_error = exc
                self._auth_failed.set()
                log.warning("%s refused the connection: %s", self.url, exc)
                self._routing.bump()
                self._clock.sleep(self._policy.max_s)
                continue
            except TopGunError as exc:
                self.last_error = exc
                delay = next(delays)
                log.info("connect to %s failed (%s); retrying in %.2fs", self.url, exc, delay)
                self._clock.sleep(delay)
                continue
            if self._closed:
                conn.close()
                return
            delays = backoff_delays(self._policy)
            self._conn, self.last_error = conn, None
            self._auth_failed.clear()
            self._lost.clear()
            self._ready.set()
            self._routing.bump()
            if self._listener:
                self._listener.on_connected(conn)
            self._lost.wait()
            self.reconnects += 1

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
        self._lost.set()

    def wait_ready(self, timeout: float) -> bool:
        """True once connected; False at the timeout or as soon as authentication fails."""
        gevent.wait([self._ready, self._auth_failed], timeout=timeout, count=1)
        return self._ready.is_set()

    def connection_for_key(self, key: str) -> Connection:
        return self.any_connection()

    def any_connection(self) -> Connection:
        conn = self._conn
        if conn is None or not conn.is_open:
            if self._closed:
                raise ClientClosed("the client is closed")
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
