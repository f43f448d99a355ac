"""Queries: build a query, run it once, or subscribe to it and receive changes until ``close()``.

:func:`query_once` runs a one-shot QUERY_SUB (and its QUERY_UNSUB) through the request runner.
:class:`QueryRegistry` holds the live subscriptions of one client runtime. It is a listener of
the connection provider's push stream: QUERY_UPDATE frames go straight to their subscription,
and a lost connection makes its subscriptions subscribe again.

A :class:`Subscription` holds one QUERY_SUB on one connection. Its ``results`` start as the
server's QUERY_RESP and follow every QUERY_UPDATE. Changes arrive through the callback or,
without one, by iterating the subscription. When its connection is lost it subscribes
again on another connection (or after reconnect) and reports what changed meanwhile as
ordinary changes, diffing the new results against the ones it held. ``close()`` always
sends QUERY_UNSUB: the server keeps subscriptions of closed sockets otherwise.

Query semantics are the server's (WIRE.md section 7): ``where`` is exact equality on top-level
fields of map values; ``predicate`` is a tree built with :class:`P`; ``sort`` uses its first
key only; ``limit`` is not re-applied to live updates.

Not in here: choosing connections and retrying (``topgun.engine``), the map handle
(``topgun.maps``), threads (every blocking call runs on the runtime's home via ``threads.blocking``).
"""
from __future__ import annotations

import logging
import uuid
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Tuple

import gevent

from . import threads
from .clock import Clock
from .delivery import Delivery, RunnerRegistry, send_unsubscribe
from .engine.reads import walk_all
from .engine.requests import RequestRunner
from .errors import ClientClosed, ConfigurationError, RemoteProtocolError, ServerError, TopGunError
from .protocol import messages as m
from .transport.connection import Connection

log = logging.getLogger(__name__)

__all__ = ["Change", "P", "Subscription", "QueryRegistry", "build_query", "query_once"]


class Change(NamedTuple):
    """One change seen by a live query: ``kind`` is ENTER, UPDATE or LEAVE (value None)."""

    key: str
    value: Any
    kind: str


class P:
    """Predicate builders: ``P.and_(P.gte("age", 18), P.like("name", "A%"))``."""

    @staticmethod
    def _leaf(op: str, attribute: str, value: Any = None) -> Dict[str, Any]:
        node = {"op": op, "attribute": attribute}
        if value is not None:
            node["value"] = value
        return node

    eq = staticmethod(lambda a, v: P._leaf("eq", a, v))
    neq = staticmethod(lambda a, v: P._leaf("neq", a, v))
    gt = staticmethod(lambda a, v: P._leaf("gt", a, v))
    gte = staticmethod(lambda a, v: P._leaf("gte", a, v))
    lt = staticmethod(lambda a, v: P._leaf("lt", a, v))
    lte = staticmethod(lambda a, v: P._leaf("lte", a, v))
    like = staticmethod(lambda a, v: P._leaf("like", a, v))
    regex = staticmethod(lambda a, v: P._leaf("regex", a, v))
    in_ = staticmethod(lambda a, v: P._leaf("in", a, list(v)))
    between = staticmethod(lambda a, lo, hi: P._leaf("between", a, [lo, hi]))
    is_null = staticmethod(lambda a: P._leaf("isNull", a))
    is_not_null = staticmethod(lambda a: P._leaf("isNotNull", a))
    starts_with = staticmethod(lambda a, v: P._leaf("startsWith", a, v))
    ends_with = staticmethod(lambda a, v: P._leaf("endsWith", a, v))

    @staticmethod
    def and_(*children: Dict[str, Any]) -> Dict[str, Any]:
        return {"op": "and", "children": list(children)}

    @staticmethod
    def or_(*children: Dict[str, Any]) -> Dict[str, Any]:
        return {"op": "or", "children": list(children)}

    @staticmethod
    def not_(child: Dict[str, Any]) -> Dict[str, Any]:
        return {"op": "not", "children": [child]}


def build_query(where: Optional[Dict[str, Any]] = None, predicate: Optional[Dict[str, Any]] = None,
                sort: Optional[Dict[str, str]] = None, limit: Optional[int] = None) -> Dict[str, Any]:
    """Validate and assemble the wire query object."""
    query: Dict[str, Any] = {}
    if where is not None:
        if not isinstance(where, dict):
            raise ConfigurationError("where= must be a dict of field -> value")
        query["where"] = where
    if predicate is not None:
        if not isinstance(predicate, dict) or "op" not in predicate:
            raise ConfigurationError("predicate= must be a predicate node, e.g. P.eq('name', 'Ada')")
        query["predicate"] = predicate
    if sort is not None:
        if not isinstance(sort, dict) or any(v not in ("asc", "desc") for v in sort.values()):
            raise ConfigurationError("sort= must be a dict of field -> 'asc' | 'desc'")
        query["sort"] = sort
    if limit is not None:
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 0:
            raise ConfigurationError(f"limit= must be a non-negative int, got {limit!r}")
        query["limit"] = limit
    return query


def query_once(requests: RequestRunner, map_name: str, query: Dict[str, Any], fields: Optional[List[str]],
               timeout: Optional[float]) -> List[Tuple[str, Any]]:
    """A one-shot query: (key, value) pairs in the server's order (see ``MapHandle.query``)."""
    clock = requests.clock

    def attempt(conn: Connection, remaining: float) -> List[Tuple[str, Any]]:
        query_id = uuid.uuid4().hex
        start = clock.monotonic()
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
            left = remaining - (clock.monotonic() - start)
            return list(walk_all(conn, map_name, max(0.0, left)).items())
        return [(r["key"], r.get("value")) for r in reply.results]

    return requests.call(attempt, timeout=timeout, op="query")  # type: ignore[no-any-return]


class QueryRegistry(RunnerRegistry):
    """The live subscriptions of one client runtime; a ``ProviderListener`` of its provider.

    Args:
        requests: runs each QUERY_SUB (with failover retries).
        home: where the subscriptions' blocking calls run.
        spawn: starts a greenlet owned by the runtime (resubscribing after a lost connection).
    """

    def __init__(self, requests: RequestRunner, *, home: threads.Home,
                 spawn: Callable[..., gevent.Greenlet]) -> None:
        self.requests = requests
        self.home = home
        self._spawn = spawn
        self._subs: Dict[str, "Subscription"] = {}
        self._closed = False

    @property
    def clock(self) -> Clock:
        return self.requests.clock

    def subscribe(self, map_name: str, query: Dict[str, Any], fields: Optional[List[str]],
                  on_change: Optional[Callable[[Change], None]], timeout: Optional[float]) -> "Subscription":
        """Open a live query (see ``MapHandle.subscribe``)."""
        if self.closed:
            raise ClientClosed("the client is closed")
        sub = Subscription(self, map_name, query, fields, on_change)
        self._subs[sub.query_id] = sub
        try:
            return sub.open(timeout if timeout is not None else self.request_timeout)
        except BaseException:
            self._subs.pop(sub.query_id, None)
            raise

    def forget(self, sub: "Subscription") -> None:
        self._subs.pop(sub.query_id, None)

    def __len__(self) -> int:
        return len(self._subs)

    def close(self) -> None:
        """Close every subscription (each sends its QUERY_UNSUB)."""
        self._closed = True
        for sub in list(self._subs.values()):
            sub.close()

    # ProviderListener -------------------------------------------------------------------

    def on_connected(self, conn: Connection) -> None:
        pass

    def on_map_updated(self, version: int) -> None:
        pass

    def on_message(self, conn: Connection, msg: m.Message) -> None:
        if isinstance(msg, m.QueryUpdate):
            sub = self._subs.get(msg.query_id)
            if sub is not None:
                sub._deliver(msg)

    def on_disconnected(self, conn: Connection, exc: Optional[BaseException]) -> None:
        for sub in list(self._subs.values()):
            if sub.conn is conn:
                self._spawn(sub._connection_lost)

    def __repr__(self) -> str:
        return f"<QueryRegistry subscriptions={len(self._subs)}{' closed' if self._closed else ''}>"


def _registry(sub: "Subscription") -> QueryRegistry:
    return sub._registry


class Subscription(Delivery[Change]):
    """A live query. Iterate it, or pass ``on_change``; always ``close()`` it (or use ``with``)."""

    def __init__(self, registry: QueryRegistry, map_name: str, query: Dict[str, Any], fields: Optional[List[str]],
                 on_change: Optional[Callable[[Change], None]]) -> None:
        self._registry = registry
        self.map_name = map_name
        self.query = query
        self.fields = fields
        self.query_id = uuid.uuid4().hex
        self._init_delivery(on_change)
        self.results: Dict[str, Any] = {}
        self.conn: Any = None
        self.closed = False
        self.resubscribes = 0
        # Updates that arrive while a QUERY_SUB's answer is on its way: the server sends the ones
        # it held right behind QUERY_RESP, and the reader delivers them before _subscribe resumes.
        self._held: Optional[List[m.QueryUpdate]] = None

    # called by the registry ------------------------------------------------------

    def open(self, timeout: float) -> "Subscription":
        self._subscribe(timeout, initial=True)
        return self

    def _subscribe(self, timeout: float, initial: bool) -> None:
        msg = m.QuerySub(self.query_id, self.map_name, self.query, self.fields)

        def attempt(conn: Any, remaining: float) -> m.QueryResp:
            reply = conn.request(msg, remaining)
            self.conn = conn
            return reply  # type: ignore[no-any-return]

        self._held = []
        try:
            reply = self._registry.requests.call(attempt, timeout=timeout, op="subscribe")
        finally:
            held, self._held = self._held, None
        fresh = {r["key"]: r.get("value") for r in reply.results}
        if initial:
            self.results = fresh
            self._replay(held)
            return
        old, self.results = self.results, dict(fresh)
        for key, value in fresh.items():
            if key not in old:
                self._emit(Change(key, value, "ENTER"))
            elif old[key] != value:
                self._emit(Change(key, value, "UPDATE"))
        for key in old:
            if key not in fresh:
                self._emit(Change(key, None, "LEAVE"))
        self._replay(held)

    def _replay(self, held: List[m.QueryUpdate]) -> None:
        for update in held:  # newer than the results they arrived behind
            self._deliver(update)

    def _deliver(self, update: m.QueryUpdate) -> None:
        if self.closed:
            return
        if self._held is not None:
            self._held.append(update)
            return
        if update.change_type == "LEAVE":
            self.results.pop(update.key, None)
        else:
            self.results[update.key] = update.value
        self._emit(Change(update.key, update.value, update.change_type))

    def _emit(self, change: Change) -> None:
        self._hand_over(change)

    def _connection_lost(self) -> None:
        """Resubscribe elsewhere, for as long as the subscription is open."""
        self.conn = None
        registry = self._registry
        while not self.closed and not registry.closed:
            try:
                self._subscribe(registry.request_timeout, initial=False)
                self.resubscribes += 1
                log.info("query %s on %s resubscribed", self.query_id, self.map_name)
                return
            except ClientClosed:
                return
            except TopGunError as exc:
                log.info("resubscribing query %s failed (%s); retrying", self.query_id, exc)
                registry.clock.sleep(0.2)

    # public ------------------------------------------------------------------------

    def _release(self) -> None:
        """Stop receiving changes and unsubscribe on the server."""
        if self.conn is not None:
            send_unsubscribe(self.conn, m.QueryUnsub(self.query_id))
        gevent.sleep(0)

    def __repr__(self) -> str:
        state = "closed" if self.closed else "live"
        return f"<Subscription {self.map_name} {self.query_id[:8]} {state} results={len(self.results)}>"
