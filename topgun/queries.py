"""Live queries: build a query, subscribe to it, receive changes until ``close()``.

A :class:`Subscription` holds one QUERY_SUB on one connection. Its ``results`` start as the
server's QUERY_RESP and follow every QUERY_UPDATE. Changes arrive through the callback or,
without one, by iterating the subscription. When its connection is lost it subscribes
again on another connection (or after reconnect) and reports what changed meanwhile as
ordinary changes, diffing the new results against the ones it held. ``close()`` always
sends QUERY_UNSUB: the server keeps subscriptions of closed sockets otherwise.

Query semantics are the server's (WIRE.md section 7): ``where`` is exact equality on top-level
fields of map values; ``predicate`` is a tree built with :class:`P`; ``sort`` uses its first
key only; ``limit`` is not re-applied to live updates.
"""
from __future__ import annotations

import logging
import uuid
from typing import Any, Callable, Dict, Iterator, List, NamedTuple, Optional

import gevent
from gevent.queue import Empty, Queue

from . import threads
from .errors import ClientClosed, ConfigurationError, OperationTimeout, TopGunError
from .protocol import messages as m

log = logging.getLogger(__name__)

__all__ = ["Change", "P", "Subscription", "build_query"]


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


class Subscription:
    """A live query. Iterate it, or pass ``on_change``; always ``close()`` it (or use ``with``)."""

    def __init__(self, client: Any, map_name: str, query: Dict[str, Any], fields: Optional[List[str]],
                 on_change: Optional[Callable[[Change], None]]) -> None:
        self._client = client
        self.map_name = map_name
        self.query = query
        self.fields = fields
        self.query_id = uuid.uuid4().hex
        self._on_change = on_change
        self._queue: "Queue[Change]" = Queue()
        self.results: Dict[str, Any] = {}
        self.conn: Any = None
        self.closed = False
        self.resubscribes = 0
        # Updates that arrive while a QUERY_SUB's answer is on its way: the server sends the ones
        # it held right behind QUERY_RESP, and the reader delivers them before _subscribe resumes.
        self._held: Optional[List[m.QueryUpdate]] = None

    # called by the client --------------------------------------------------------

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
            reply = self._client._engine.call(attempt, timeout=timeout)
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
        if self._on_change is None:
            self._queue.put(change)
            return
        try:
            self._on_change(change)
        except Exception:  # user code must not break delivery to others
            log.exception("on_change callback of query %s failed", self.query_id)

    def _connection_lost(self) -> None:
        """Resubscribe elsewhere, for as long as the subscription is open."""
        self.conn = None
        while not self.closed and not self._client._engine.closed:
            try:
                self._subscribe(self._client.config.request_timeout, initial=False)
                self.resubscribes += 1
                log.info("query %s on %s resubscribed", self.query_id, self.map_name)
                return
            except ClientClosed:
                return
            except TopGunError as exc:
                log.info("resubscribing query %s failed (%s); retrying", self.query_id, exc)
                self._client.clock.sleep(0.2)

    # public ------------------------------------------------------------------------

    @threads.blocking(none_waits_forever=True)
    def get(self, timeout: Optional[float] = None) -> Change:
        """Next change (only without ``on_change``). Raises OperationTimeout after ``timeout``."""
        try:
            return self._queue.get(timeout=timeout)
        except Empty:
            raise OperationTimeout(f"no change on query {self.query_id} within {timeout}s") from None

    def __iter__(self) -> Iterator[Change]:
        while not self.closed:
            try:
                yield self.get(0.5)  # through get(): callable from any thread
            except OperationTimeout:
                continue

    @threads.blocking(wait=5.0)
    def close(self) -> None:
        """Stop receiving changes and unsubscribe on the server."""
        if self.closed:
            return
        self.closed = True
        self._client._forget_subscription(self)
        conn = self.conn
        if conn is not None and conn.is_open:
            try:
                conn.send(m.QueryUnsub(self.query_id))
            except TopGunError:
                pass  # the connection is going away; nothing left to unsubscribe from
        gevent.sleep(0)

    def __enter__(self) -> "Subscription":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "live"
        return f"<Subscription {self.map_name} {self.query_id[:8]} {state} results={len(self.results)}>"
