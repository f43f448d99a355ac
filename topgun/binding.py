"""Bindings: a name's server-side state kept on the connection its partition routes to.

Topic subscriptions and counter subscriptions live on one connection of the server (TopGun
2.2.0 keeps them node-local and drops them with the connection). A :class:`Bindings` holds,
for each name, the connection its state was attached on, and re-attaches it when that stops
being right:

- the connection is lost (reconnect, or failover to the partition's new owner);
- the routing changes (a new partition map or a node connecting) so that the name's
  partition (``topgun.partition_id(name)``, the same FNV-1a function as keys) now routes to
  another connection: the state is attached there and detached from the old one.

Attaching is the owner's ``attach(name, conn, remaining_seconds)``; it runs through the
request runner (``key=name``), so it follows the same routing and retries as reads, and a
re-attach that fails is tried again with back-off for as long as the name is bound.
:class:`BoundListener` is the provider-listener half of a registry that owns a ``Bindings``:
it hands the provider's connection and map events to it.

Not in here: what attaching means (``topics.py`` sends TOPIC_SUB, ``counters.py`` a
COUNTER_SYNC), locks (a lock cannot move: ``locks.py`` reports it lost instead).
"""
from __future__ import annotations

import logging
from typing import Callable, Dict, Optional, Set

import gevent

from .engine.requests import RequestRunner
from .errors import ClientClosed, TopGunError, describe
from .transport.connection import Connection

log = logging.getLogger(__name__)

__all__ = ["BoundListener", "Bindings"]

Attach = Callable[[str, Connection, float], None]
Detach = Callable[[str, Connection], None]

REBIND_PAUSE_S = 0.2   # between failed re-attach rounds (each round has its own deadline)


class Bindings:
    """Names attached to connections, re-attached after a lost connection or a routing change.

    Args:
        requests: runs each attach on the name's connection, with failover retries.
        spawn: starts a greenlet owned by the runtime (re-attaching).
        attach: ``attach(name, conn, remaining)``: put the name's state on ``conn`` (may block).
        detach: ``detach(name, conn)``: take it off ``conn`` (must not block).
        what: a word for logs ("topic", "counter").
        on_rebound: called with the name after each successful re-attach (for counters of it).
    """

    def __init__(self, requests: RequestRunner, *, spawn: Callable[..., gevent.Greenlet], attach: Attach,
                 detach: Detach, what: str, on_rebound: Optional[Callable[[str], None]] = None) -> None:
        self.requests = requests
        self._spawn = spawn
        self._attach = attach
        self._detach = detach
        self.what = what
        self.on_rebound = on_rebound
        self.bound: Dict[str, Optional[Connection]] = {}
        self._moving: Set[str] = set()
        self.rebinds = 0
        self.closed = False

    def bind(self, name: str, timeout: float) -> Connection:
        """Attach ``name`` on its connection now (blocking); it is followed from then on."""
        known = name in self.bound
        self.bound.setdefault(name, None)
        try:
            return self._bind_once(name, timeout)
        except BaseException:
            if not known:  # a name followed before stays followed (a re-attach may be under way)
                self.bound.pop(name, None)
            raise

    def _bind_once(self, name: str, timeout: float) -> Connection:
        used: Dict[str, Connection] = {}

        def attempt(conn: Connection, remaining: float) -> None:
            self._attach(name, conn, remaining)
            used["conn"] = conn

        self.requests.call(attempt, key=name, timeout=timeout)
        conn = used["conn"]
        old = self.bound.get(name)
        if name not in self.bound:  # unbound while attaching: take it off again
            self._safe_detach(name, conn)
            return conn
        self.bound[name] = conn
        if old is not None and old is not conn and old.is_open:
            self._safe_detach(name, old)
        return conn

    def unbind(self, name: str) -> None:
        """Stop following ``name`` and detach it from its connection."""
        conn = self.bound.pop(name, None)
        if conn is not None and conn.is_open:
            self._safe_detach(name, conn)

    def _safe_detach(self, name: str, conn: Connection) -> None:
        try:
            self._detach(name, conn)
        except TopGunError:
            pass  # the connection is going away; nothing left to detach from

    def close(self) -> None:
        self.closed = True
        for name in list(self.bound):
            self.unbind(name)

    # events (from the registry that owns this) ------------------------------------------

    def connection_lost(self, conn: Connection) -> None:
        for name, bound in list(self.bound.items()):
            if bound is conn:
                self.bound[name] = None
                self._move(name)

    def routing_changed(self) -> None:
        """Re-attach every name whose route no longer is the connection it is on."""
        provider = self.requests.provider
        for name, bound in list(self.bound.items()):
            if bound is None or name in self._moving:
                continue
            try:
                now = provider.connection_for_key(name)
            except TopGunError:
                continue  # no route right now; a lost connection re-attaches through connection_lost
            if now is not bound:
                self._move(name)

    def _move(self, name: str) -> None:
        if name in self._moving or self.closed:
            return
        self._moving.add(name)
        self._spawn(self._rebind, name)

    def _rebind(self, name: str) -> None:
        try:
            while name in self.bound and not self.closed and not self.requests.closed:
                try:
                    conn = self._bind_once(name, self.requests.request_timeout)
                except ClientClosed:
                    return
                except TopGunError as exc:
                    log.info("re-attaching %s %r failed (%s); retrying", self.what, name, describe(exc))
                    self.requests.clock.sleep(REBIND_PAUSE_S)
                    continue
                if not conn.is_open:  # lost again while attaching
                    continue
                self.rebinds += 1
                log.info("%s %r re-attached on %r", self.what, name, self.bound.get(name))
                if self.on_rebound is not None:
                    self.on_rebound(name)
                return
        finally:
            self._moving.discard(name)

    def __len__(self) -> int:
        return len(self.bound)

    def __repr__(self) -> str:
        return f"<Bindings {self.what} names={len(self.bound)} moving={len(self._moving)} rebinds={self.rebinds}>"


class BoundListener:
    """The ``ProviderListener`` events of a registry whose names are bound (``bindings``): a new
    connection or partition map re-checks every name's route, a lost connection re-attaches its names."""

    bindings: Bindings

    def on_connected(self, conn: Connection) -> None:
        self.bindings.routing_changed()

    def on_map_updated(self, version: int) -> None:
        self.bindings.routing_changed()

    def on_disconnected(self, conn: Connection, exc: Optional[BaseException]) -> None:
        self.bindings.connection_lost(conn)
