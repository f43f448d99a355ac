"""PN counters: ``client.counter(name)`` with ``increment``, ``decrement``, ``value`` and updates.

A PN counter is two maps of per-actor cumulative totals, ``p`` (increments) and ``n``
(decrements); its value is ``sum(p) - sum(n)``, and two states merge by taking the larger total
per actor, separately for ``p`` and ``n`` (WIRE.md section 14; the keys must be ``p``/``n``: the
TypeScript client's ``positive``/``negative`` are dropped by TopGun 2.2.0).

How this client uses it:

- Each client runtime counts as its own actor, ``<node_id>:<8 hex digits>`` (a forked child
  gets a new one), and keeps its **own cumulative totals** plus the merged state it has seen of
  every other actor. Every COUNTER_SYNC carries the whole known state, never a delta, so a
  resend or a reconnect never counts twice: merging a total again is a no-op.
- ``increment(n)`` adds ``n`` to the own total at once, has the state sent, and returns once
  the node sent a COUNTER_UPDATE holding own totals that include ``n`` (the reply to the sync
  may be an earlier push: that does not count), with the merged value known then. A negative
  ``n`` counts as a decrement of ``-n``. It raises ``OperationTimeout`` at its deadline (the
  amount stays in the totals and goes out with the next sync), retryable ``ConnectionLost``
  (failed over by the request runner) when the connection goes, ``ClientClosed`` on close.
- **At most one COUNTER_SYNC per name and connection is in flight** from this client. Changes
  made while one is under way wait; when it is answered (or fails), the first of them to wake
  sends one sync with everything not yet confirmed, and each returns once an update confirms
  totals that include it. So 50 greenlets (or threads) incrementing one counter at once cost
  two syncs, not 50, and a sync lost with its connection takes the changes waiting behind it
  along: each fails over (or raises) as a lone change does, and none counts twice.
- The counter lives on the node owning its name's partition (``topgun.partition_id(name)``).
  After a lost connection, a failover or a map that moves the name, the client sends its known
  state to the (new) owner again (:mod:`topgun.binding`). **So a counter survives a node restart
  from the clients' own totals**: the restarted node starts empty (2.2.0 and the dev server keep
  counters in memory), and the first client that re-attaches restores every actor's total it
  has seen; the value can only be lower if no live client had seen some actor's latest total.
- Updates: the server sends COUNTER_UPDATE to every connection that asked for or synced the
  counter. ``subscribe(on_update)`` (or iterate) receives the merged value after each change.
  Updates made while a re-attach is under way arrive with the next merge, as one larger step.

Not in here: routing and retries (``topgun.engine``), re-attaching (``topgun.binding``), the
dev server's side (``topgun.server.counters``). No batching across names or a delay to gather
changes: a sync goes out as soon as none of its name is in flight, so a lone change pays one
round trip, as before. Reads (``get``) ask with COUNTER_REQUEST and do not wait for syncs,
unless this client has changes the node has not confirmed (those are sent first).
"""
from __future__ import annotations

import logging
import math
import uuid
from typing import Any, Callable, Dict, Iterator, List, Optional, Protocol, Tuple, Union

import gevent
from gevent.event import Event

from . import threads
from .binding import Bindings, BoundListener
from .delivery import Delivery, RunnerRegistry
from .engine.requests import RequestRunner
from .errors import ClientClosed, ConfigurationError, ConnectionLost, OperationTimeout, RemoteProtocolError
from .protocol import messages as m
from .retry import VersionedEvent
from .transport.connection import Connection

log = logging.getLogger(__name__)

__all__ = ["CounterHandle", "CounterState", "CounterSubscription", "CounterRegistry"]

Number = Union[int, float]


def _number(x: float) -> Number:
    return int(x) if float(x).is_integer() else x


class CounterState:
    """One counter's known state: ``p`` and ``n``, actor -> cumulative total."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.p: Dict[str, float] = {}
        self.n: Dict[str, float] = {}

    def merge(self, state: Any) -> bool:
        """Merge a wire state (per-actor max); True if anything grew. Bad shapes raise RemoteProtocolError."""
        if not isinstance(state, dict):
            raise RemoteProtocolError(f"counter {self.name!r}: state is not a map")
        grew = False
        for side, mine in (("p", self.p), ("n", self.n)):
            theirs = state.get(side, {})
            if not isinstance(theirs, dict):
                raise RemoteProtocolError(f"counter {self.name!r}: state.{side} is not a map")
            for actor, total in theirs.items():
                if isinstance(total, bool) or not isinstance(total, (int, float)) or not math.isfinite(total):
                    raise RemoteProtocolError(f"counter {self.name!r}: bad total {total!r} for {actor!r}")
                if total > mine.get(str(actor), 0):
                    mine[str(actor)] = float(total)
                    grew = True
        return grew

    def add(self, actor: str, amount: Number) -> None:
        side = self.p if amount >= 0 else self.n
        side[actor] = side.get(actor, 0.0) + abs(amount)

    @property
    def value(self) -> Number:
        return _number(sum(self.p.values()) - sum(self.n.values()))

    def wire(self) -> Dict[str, Dict[str, Number]]:
        return {"p": {a: _number(t) for a, t in self.p.items()}, "n": {a: _number(t) for a, t in self.n.items()}}

    def __repr__(self) -> str:
        return f"<CounterState {self.name} value={self.value} actors={len(set(self.p) | set(self.n))}>"


class _Flight:
    """One COUNTER_SYNC under way: the own totals it carries; ``done`` is set when it ends."""

    def __init__(self, own: Tuple[float, float]) -> None:
        self.own = own
        self.done = Event()
        self.ok = False


class _Source(Protocol):
    @property
    def runtime(self) -> Any: ...


class CounterRegistry(RunnerRegistry, BoundListener):
    """The counters of one client runtime; a ``ProviderListener`` of its provider.

    Args:
        requests: routes and retries COUNTER_REQUEST / COUNTER_SYNC.
        home: where blocking calls of subscriptions run.
        spawn: starts a greenlet owned by the runtime (re-attaching).
        actor: this runtime's key in ``p``/``n`` (default: ``node_id`` plus random hex).
    """

    def __init__(self, requests: RequestRunner, *, home: threads.Home, spawn: Callable[..., gevent.Greenlet],
                 node_id: str, actor: Optional[str] = None) -> None:
        self.requests = requests
        self.home = home
        self.actor = actor or f"{node_id}:{uuid.uuid4().hex[:8]}"
        self.states: Dict[str, CounterState] = {}
        self._subs: Dict[str, List["CounterSubscription"]] = {}
        # Our own totals as the nodes last reported them, per counter (bumped on each rise).
        self._confirmed: Dict[str, Tuple[float, float]] = {}
        self._confirms = VersionedEvent()
        # The COUNTER_SYNC in flight per (name, connection) (see _attach).
        self._flights: Dict[Tuple[str, Connection], _Flight] = {}
        self.bindings = Bindings(requests, spawn=spawn, attach=self._attach, detach=lambda name, conn: None,
                                 what="counter")
        self._closed = False

    def state(self, name: str) -> CounterState:
        state = self.states.get(name)
        if state is None:
            state = self.states[name] = CounterState(name)
        return state

    def _attach(self, name: str, conn: Connection, remaining: float) -> None:
        state = self.state(name)
        if not (state.p or state.n):
            self._read(name, conn, remaining)
            return
        own = self._own(name)
        deadline = self.requests.clock.monotonic() + remaining
        key = (name, conn)
        # At most one COUNTER_SYNC of a name in flight per connection. A change made while one
        # is under way waits for it; the next sync (sent by the first waiter to wake) carries
        # every total made meanwhile, since each sync holds the cumulative totals.
        while True:
            self._check(name, conn, deadline)
            flight = self._flights.get(key)
            if flight is None:
                self._fly(name, conn, deadline)
                return  # it sent our totals (or more) and the node confirmed them
            if not flight.done.wait(max(0.0, deadline - self.requests.clock.monotonic())):
                raise OperationTimeout(f"counter {name!r}: {conn.url} sent no COUNTER_UPDATE with our totals")
            # A flight that did not carry our change, or failed, leaves it to the next one; a
            # lost connection or a close is raised by the check above.
            if flight.ok and self._confirmed_holds(name, own):
                return

    def _check(self, name: str, conn: Connection, deadline: float) -> None:
        if self.closed:
            raise ClientClosed("the client is closed")
        if not conn.is_open:  # retryable: the runner attaches again on the name's next connection
            raise ConnectionLost(f"counter {name!r}: {conn.url} was lost before it confirmed our totals")
        if deadline - self.requests.clock.monotonic() <= 0:
            raise OperationTimeout(f"counter {name!r}: {conn.url} sent no COUNTER_UPDATE with our totals")

    def _fly(self, name: str, conn: Connection, deadline: float) -> None:
        """Send the whole known state to ``conn`` and wait until the node confirms the own
        totals it held (waiting changes wake when this ends, either way)."""
        key = (name, conn)
        sent = self.state(name).wire()
        flight = self._flights[key] = _Flight(self._own(name))
        try:
            reply = conn.request(m.CounterSync(name, sent), max(0.0, deadline - self.requests.clock.monotonic()))
            if not isinstance(reply, m.CounterUpdate):
                raise RemoteProtocolError(f"expected COUNTER_UPDATE, got {reply.TYPE}")
            self._merge(name, reply.state)
            # That reply may be a COUNTER_UPDATE the node sent before it merged our sync (another
            # client's change looks the same on the wire); the answer to ours follows it.
            # Woken by each confirmation, lost connection and close (all bump _confirms).
            while not self._confirmed_holds(name, flight.own):
                self._check(name, conn, deadline)
                since, left = self._confirms.version, deadline - self.requests.clock.monotonic()
                if not self._confirms.wait_for_change(since, left):
                    raise OperationTimeout(f"counter {name!r}: {conn.url} sent no COUNTER_UPDATE with our totals")
            flight.ok = True
        finally:
            del self._flights[key]
            flight.done.set()

    def _own(self, name: str) -> Any:
        state = self.state(name)
        return (state.p.get(self.actor, 0.0), state.n.get(self.actor, 0.0))

    def _confirmed_holds(self, name: str, own: Any) -> bool:
        confirmed = self._confirmed.get(name, (0.0, 0.0))
        return bool(confirmed[0] >= own[0] and confirmed[1] >= own[1])

    def _read(self, name: str, conn: Connection, remaining: float) -> None:
        # COUNTER_REQUEST is answered by COUNTER_RESPONSE, which no other client's change
        # produces: the value is the node's as of this request.
        reply = conn.fresh_request(m.CounterRequest(name), remaining)
        if not isinstance(reply, m.CounterResponse):
            raise RemoteProtocolError(f"expected COUNTER_RESPONSE, got {reply.TYPE}")
        self._merge(name, reply.state)

    def _merge(self, name: str, wire_state: Any) -> None:
        state = self.state(name)
        before = state.value
        try:
            state.merge(wire_state)
        except RemoteProtocolError as exc:
            log.warning("%s", exc)
            return
        ours = (wire_state.get("p", {}).get(self.actor, 0), wire_state.get("n", {}).get(self.actor, 0))
        confirmed = self._confirmed.get(name, (0.0, 0.0))
        if ours[0] > confirmed[0] or ours[1] > confirmed[1]:
            self._confirmed[name] = (max(ours[0], confirmed[0]), max(ours[1], confirmed[1]))
            self._confirms.bump()
        if state.value != before:
            self._notify(name)

    def _notify(self, name: str) -> None:
        value = self.state(name).value
        for sub in list(self._subs.get(name, ())):
            sub._deliver(value)

    def sync(self, name: str, timeout: Optional[float], amount: Optional[Number] = None) -> Number:
        """Add ``amount`` to this actor's total (None: only read), make sure the name is attached
        on its node, and return the merged value."""
        if self.closed:
            raise ClientClosed("the client is closed")
        state = self.state(name)
        if amount:
            state.add(self.actor, amount)
            self._notify(name)  # our own change is a change too
        timeout = self.request_timeout if timeout is None else timeout
        if not amount and self.bindings.bound.get(name) is not None \
                and self._confirmed_holds(name, self._own(name)):
            # A read of a counter attached, whose node has confirmed all our changes: ask it
            # (see _read). Otherwise the sync below sends them first.
            self.requests.call(lambda conn, remaining: self._read(name, conn, remaining), key=name, timeout=timeout)
            return state.value
        # Each change attaches again on the name's current connection: a COUNTER_SYNC there is
        # what sends the new totals, and it re-subscribes the connection if the server forgot it.
        self.bindings.bind(name, timeout)
        return state.value

    def subscribe(self, name: str, on_update: Optional[Callable[[Number], None]],
                  timeout: Optional[float]) -> "CounterSubscription":
        self.sync(name, timeout)
        # Added after the first answer: ``sub.value`` starts there, updates are what comes later
        # (nothing can arrive in between: no greenlet switch).
        sub = CounterSubscription(self, name, on_update)
        self._subs.setdefault(name, []).append(sub)
        return sub

    def forget(self, sub: "CounterSubscription") -> None:
        subs = self._subs.get(sub.name, [])
        if sub in subs:
            subs.remove(sub)
        if not subs:
            self._subs.pop(sub.name, None)

    def close(self) -> None:
        self._closed = True
        self.drop()
        self.bindings.close()
        self._confirms.bump()

    def _subscriptions(self) -> Iterator["CounterSubscription"]:
        return (sub for group in self._subs.values() for sub in group)

    # ProviderListener (on_connected, on_map_updated: BoundListener) -----------------------

    def on_disconnected(self, conn: Connection, exc: Optional[BaseException]) -> None:
        super().on_disconnected(conn, exc)
        self._confirms.bump()  # an attach waiting for a confirmation on it gives up (retryable)

    def on_message(self, conn: Connection, msg: m.Message) -> None:
        if isinstance(msg, (m.CounterUpdate, m.CounterResponse)) and msg.name in self.states:
            self._merge(msg.name, msg.state)

    def __repr__(self) -> str:
        return f"<CounterRegistry {self.actor} counters={len(self.states)}{' closed' if self._closed else ''}>"


def _registry(sub: "CounterSubscription") -> CounterRegistry:
    return sub._registry


class CounterSubscription(Delivery[Number]):
    """New values of one counter: iterate it, call :meth:`get`, or pass ``on_update``; ``close()`` it."""

    def __init__(self, registry: CounterRegistry, name: str, on_update: Optional[Callable[[Number], None]]) -> None:
        self._registry = registry
        self.name = name
        self._init_delivery(on_update)
        self._last: Optional[Number] = registry.state(name).value
        self.closed = False

    @property
    def value(self) -> Number:
        """The latest merged value this client knows (no IO)."""
        return self._registry.state(self.name).value

    def _deliver(self, value: Number) -> None:
        if self.closed or value == self._last:
            return
        self._last = value
        self._hand_over(value)

    def _release(self) -> None:
        """Stop delivering (the server has no unsubscribe for counters; its updates are ignored)."""

    def __repr__(self) -> str:
        return f"<CounterSubscription {self.name} {'closed' if self.closed else 'live'} value={self.value}>"


class CounterHandle:
    """A named PN counter. Obtain it with ``client.counter(name)``."""

    def __init__(self, client: _Source, name: str) -> None:
        if not isinstance(name, str) or not name:
            raise ConfigurationError(f"counter names must be non-empty str, got {name!r}")
        self._client = client
        self.name = name

    @property
    def runtime(self) -> Any:
        return self._client.runtime

    @staticmethod
    def _amount(n: Any) -> Number:
        if isinstance(n, bool) or not isinstance(n, (int, float)) or not math.isfinite(n):
            raise ConfigurationError(f"counter amounts must be finite numbers, got {n!r}")
        return n

    @threads.blocking()
    def increment(self, n: Number = 1, *, timeout: Optional[float] = None) -> Number:
        """Add ``n`` (negative: subtract) and return the counter's merged value.

        Returns once the counter's node confirmed totals that include ``n``. Changes made while
        a sync of this counter is in flight go out together in the next one (one round trip).

        Raises:
            ConfigurationError: ``n`` is not a finite number.
            OperationTimeout: the counter's node did not answer within ``timeout``; the amount
                stays in this client's totals and goes out with the next sync or re-attach.
            ClientClosed: the client was closed before the node confirmed the change.
        """
        return self._client.runtime.counters.sync(self.name, timeout, self._amount(n))  # type: ignore[no-any-return]

    @threads.blocking()
    def decrement(self, n: Number = 1, *, timeout: Optional[float] = None) -> Number:
        """Subtract ``n`` and return the counter's merged value (see :meth:`increment`)."""
        return self._client.runtime.counters.sync(self.name, timeout, -self._amount(n))  # type: ignore[no-any-return]

    @threads.blocking()
    def get(self, *, timeout: Optional[float] = None) -> Number:
        """Ask the counter's node and return the merged value."""
        return self._client.runtime.counters.sync(self.name, timeout)  # type: ignore[no-any-return]

    @property
    def value(self) -> Number:
        """The counter's value, asked from its node (``get()`` with the default timeout)."""
        return self.get()

    @threads.blocking()
    def subscribe(self, on_update: Optional[Callable[[Number], None]] = None, *,
                  timeout: Optional[float] = None) -> CounterSubscription:
        """Receive the counter's new value after every change (other clients' included)."""
        return self._client.runtime.counters.subscribe(self.name, on_update, timeout)  # type: ignore[no-any-return]

    def __repr__(self) -> str:
        return f"<CounterHandle {self.name}>"
