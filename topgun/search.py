"""Full-text search over a map: one-shot (``MapHandle.search``) and live (``MapHandle.search_subscribe``).

What the 2.2.0 server does (probed; WIRE.md 17 and the 2.2.0 notes in docs):

- Every map is indexed (tantivy: every string inside a value, lower-cased, split on anything
  that is not a letter or digit, no stemming; OR-map values too). Scores are BM25. The query
  uses tantivy's syntax: words are OR-ed, ``AND``, ``+word``, ``-word`` and ``"a phrase"`` work;
  a query it cannot parse finds nothing. ``limit`` defaults to 10; ``minScore`` drops weaker
  hits; ``boost`` is ignored. ``matchedTerms`` are the query's own words, the same for every hit.
- ``value`` is always ``nil`` in results: :func:`search_once` fetches each hit's value (an LWW
  value, or an OR-map key's list of values) before it returns.
- The index is updated just after the write is acknowledged (about 15 ms here), so a search
  sent straight after a write can miss it.
- The index is **node-local**: each node indexes the writes it applied. In cluster mode the
  client therefore asks every node it is connected to and merges the hits by score (each
  node's BM25 statistics are its own, so scores from different nodes are only roughly
  comparable). The dev cluster does the same (each node searches the partitions it owns).
- ``SEARCH_SUB`` answers with a ``SEARCH_RESP`` (the first results) and then pushes
  ``SEARCH_UPDATE`` ENTER/UPDATE/LEAVE with the new score (``value`` nil; the subscriber's own
  writes included). Subscription ids are server-global, so they are UUIDs here.

Not in here: the map handle (``topgun.maps``), connections and retries (``topgun.engine``).
"""
from __future__ import annotations

import logging
import uuid
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Tuple

import gevent

from .delivery import Delivery, SubscriptionSet, attach_everywhere, send_unsubscribe
from .engine.ormap_reads import read_keys
from .engine.reads import MISSING, point_read
from .errors import ClientClosed, ConfigurationError, OperationTimeout, RemoteProtocolError, TopGunError
from .protocol import messages as m
from .runtime import Runtime
from .transport.connection import Connection

log = logging.getLogger(__name__)

__all__ = ["SearchResult", "SearchChange", "SearchSubscription", "search_options", "search_once"]


class SearchResult(NamedTuple):
    """One hit: the key, its BM25 score, the query terms, and the value stored under the key."""

    key: str
    score: float
    matched_terms: List[str]
    value: Any = None


class SearchChange(NamedTuple):
    """One change of a live search: ``kind`` is ENTER, UPDATE or LEAVE (score 0 on LEAVE).

    ``value`` is what the server sent: ``None`` on 2.2.0 (read the key if you need it).
    """

    key: str
    kind: str
    score: float
    matched_terms: List[str]
    value: Any = None


def search_options(text: Any, limit: Optional[int], min_score: Optional[float]) -> Dict[str, Any]:
    """Validate a search's arguments; the wire ``options`` map."""
    if not isinstance(text, str) or not text.strip():
        raise ConfigurationError(f"search text must be a non-empty str, got {text!r}")
    options: Dict[str, Any] = {}
    if limit is not None:
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
            raise ConfigurationError(f"limit= must be a positive int, got {limit!r}")
        options["limit"] = limit
    if min_score is not None:
        if not isinstance(min_score, (int, float)) or isinstance(min_score, bool) or min_score < 0:
            raise ConfigurationError(f"min_score= must be a number >= 0, got {min_score!r}")
        options["minScore"] = float(min_score)
    return options


def _hits(reply: m.Message) -> List[SearchResult]:
    if not isinstance(reply, m.SearchResp):
        raise RemoteProtocolError(f"expected SEARCH_RESP, got {reply.TYPE}")
    if reply.error:
        raise RemoteProtocolError(f"the server could not search: {reply.error}")
    out = []
    for r in reply.results:
        if isinstance(r, dict) and isinstance(r.get("key"), str):
            out.append(SearchResult(r["key"], float(r.get("score") or 0.0), list(r.get("matchedTerms") or ()),
                                    r.get("value")))
    return out


def _merge(per_node: List[List[SearchResult]], limit: int) -> List[SearchResult]:
    best: Dict[str, SearchResult] = {}
    for hits in per_node:
        for hit in hits:
            if hit.key not in best or hit.score > best[hit.key].score:
                best[hit.key] = hit
    return sorted(best.values(), key=lambda h: (-h.score, h.key))[:limit]


def search_once(runtime: Runtime, map_name: str, text: str, options: Dict[str, Any],
                timeout: Optional[float]) -> List[SearchResult]:
    """Search ``map_name`` (every connected node in cluster mode), then fetch the values the server left out."""
    clock = runtime.clock
    deadline = clock.monotonic() + (runtime.request_timeout if timeout is None else timeout)
    conns = runtime.provider.open_connections()
    if len(conns) <= 1:
        reply = runtime.requests.call(
            lambda conn, remaining: conn.request(m.Search(uuid.uuid4().hex, map_name, text, options or None),
                                                 remaining),
            timeout=max(0.0, deadline - clock.monotonic()))
        hits = _hits(reply)
    else:
        waiting = [(conn, conn.request_async(m.Search(rid, map_name, text, options or None)), rid)
                   for conn, rid in ((c, uuid.uuid4().hex) for c in conns)]
        per_node = []
        try:
            for conn, result, _ in waiting:
                try:
                    per_node.append(_hits(result.get(timeout=max(0.0, deadline - clock.monotonic()))))
                except gevent.Timeout:
                    raise OperationTimeout(f"no SEARCH_RESP from {conn.url} before the deadline") from None
        finally:
            for conn, result, rid in waiting:
                if not result.ready():
                    conn.forget(("search", rid), result)
        hits = _merge(per_node, options.get("limit", 10))
    return [hit if hit.value is not None else hit._replace(value=_fetch(runtime, map_name, hit.key, deadline))
            for hit in hits]


def _fetch(runtime: Runtime, map_name: str, key: str, deadline: float) -> Any:
    """The key's LWW value; for an OR-map key (also indexed) its list of values; else None."""
    def attempt(conn: Connection, remaining: float) -> Any:
        value = point_read(conn, map_name, key, remaining)
        if value is not MISSING:
            return value
        left = deadline - runtime.clock.monotonic()
        values = [r.value for r in read_keys(conn, map_name, [key], max(0.0, left))[key]]
        return values or None
    left = deadline - runtime.clock.monotonic()
    if left <= 0:
        raise OperationTimeout(f"no time left to read the value of {map_name}/{key!r}")
    return runtime.requests.call(attempt, key=key, timeout=left)


class SearchRegistry(SubscriptionSet):
    """The live searches of one runtime; a listener of its provider (``runtime.service``)."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.home = runtime.home
        self.request_timeout = runtime.request_timeout
        self._by_id: Dict[str, "SearchSubscription"] = {}   # subscriptionId on the wire -> subscription
        self._subs: Dict[int, "SearchSubscription"] = {}
        self.closed = False

    def open(self, map_name: str, text: str, options: Dict[str, Any],
             on_change: Optional[Callable[[SearchChange], None]], timeout: float) -> "SearchSubscription":
        if self.closed:
            raise ClientClosed("the client is closed")
        sub = SearchSubscription(self, map_name, text, options, on_change)
        self._subs[id(sub)] = sub
        try:
            sub._open(timeout)
        except BaseException:
            sub.close()
            raise
        return sub

    def bind(self, wire_id: str, sub: "SearchSubscription") -> None:
        self._by_id[wire_id] = sub

    def unbind(self, wire_id: str) -> None:
        self._by_id.pop(wire_id, None)

    def forget(self, sub: "SearchSubscription") -> None:
        self._subs.pop(id(sub), None)

    # ProviderListener
    def on_connected(self, conn: Connection) -> None:
        for sub in list(self._subs.values()):
            self.runtime.group.spawn(sub._resync)

    def on_disconnected(self, conn: Connection, exc: Optional[BaseException]) -> None:
        for sub in list(self._subs.values()):
            sub._lost(conn)

    def on_map_updated(self, version: int) -> None:
        for sub in list(self._subs.values()):
            self.runtime.group.spawn(sub._resync)

    def on_message(self, conn: Connection, msg: m.Message) -> None:
        if isinstance(msg, m.SearchUpdate):
            sub = self._by_id.get(msg.subscription_id)
            if sub is not None:
                sub._update(conn, msg)

    def __repr__(self) -> str:
        return f"<SearchRegistry subscriptions={len(self._subs)}{' closed' if self.closed else ''}>"


def _registry(sub: "SearchSubscription") -> SearchRegistry:
    return sub._registry


class SearchSubscription(Delivery[SearchChange]):
    """A live search: ``results`` follow the server's ENTER/UPDATE/LEAVE pushes. Always ``close()`` it."""

    def __init__(self, registry: SearchRegistry, map_name: str, text: str, options: Dict[str, Any],
                 on_change: Optional[Callable[[SearchChange], None]]) -> None:
        self._registry = registry
        self.map_name = map_name
        self.text = text
        self.options = options
        self._init_delivery(on_change)
        self._per_node: Dict[int, Tuple[Connection, str, Dict[str, SearchResult]]] = {}
        self._orphans: Dict[str, SearchResult] = {}   # results of nodes whose connection was lost
        self.closed = False
        self.resyncs = 0

    @property
    def results(self) -> Dict[str, SearchResult]:
        """The current hits by key (the best score over every node)."""
        merged: Dict[str, SearchResult] = dict(self._orphans)
        for _, _, hits in self._per_node.values():
            for key, hit in hits.items():
                if key not in merged or hit.score > merged[key].score:
                    merged[key] = hit
        return merged

    def _attach(self, conn: Connection, timeout: float) -> None:
        old = self._per_node.get(conn.cid)
        wire_id = old[1] if old is not None else uuid.uuid4().hex
        self._registry.bind(wire_id, self)
        reply = conn.request(m.SearchSub(wire_id, self.map_name, self.text, self.options or None), timeout)
        self._per_node[conn.cid] = (conn, wire_id, {h.key: h for h in _hits(reply)})
        if self.closed:
            self._unsubscribe_all()

    def _open(self, timeout: float) -> None:
        attach_everywhere(self._registry.runtime.requests, self._attach, timeout)

    def _lost(self, conn: Connection) -> None:
        gone = self._per_node.pop(conn.cid, None)
        if gone is not None:
            self._registry.unbind(gone[1])
            self._orphans.update(gone[2])

    def _resync(self) -> None:
        """Subscribe again on every open connection and report what changed as ordinary changes."""
        if self.closed:
            return
        before = self.results
        try:
            for conn in self._registry.runtime.provider.open_connections():
                self._attach(conn, self._registry.request_timeout)
        except TopGunError as exc:
            log.info("live search on %s could not resubscribe: %s", self.map_name, exc)
            return
        self._orphans = {}
        self.resyncs += 1
        after = self.results
        for key, hit in after.items():
            if key not in before:
                self._emit(SearchChange(key, "ENTER", hit.score, hit.matched_terms, hit.value))
            elif before[key].score != hit.score:
                self._emit(SearchChange(key, "UPDATE", hit.score, hit.matched_terms, hit.value))
        for key in before:
            if key not in after:
                self._emit(SearchChange(key, "LEAVE", 0.0, [], None))

    def _update(self, conn: Connection, u: m.SearchUpdate) -> None:
        node = self._per_node.get(conn.cid)
        if self.closed or node is None:
            return
        if u.change_type == "LEAVE":
            node[2].pop(u.key, None)
        else:
            node[2][u.key] = SearchResult(u.key, float(u.score or 0.0), list(u.matched_terms or ()), u.value)
        self._emit(SearchChange(u.key, u.change_type, float(u.score or 0.0), list(u.matched_terms or ()), u.value))

    def _emit(self, change: SearchChange) -> None:
        self._hand_over(change)

    def _unsubscribe_all(self) -> None:
        nodes, self._per_node = self._per_node, {}
        for conn, wire_id, _ in nodes.values():
            self._registry.unbind(wire_id)
            send_unsubscribe(conn, m.SearchUnsub(wire_id))

    def _release(self) -> None:
        """Stop receiving changes and send SEARCH_UNSUB (2.2.0 keeps a closed socket's searches otherwise)."""
        self._unsubscribe_all()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "live"
        return f"<SearchSubscription {self.map_name} {self.text!r} {state} results={len(self.results)}>"
