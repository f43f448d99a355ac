"""The near cache: a local copy of the entries a map handle has read, kept fresh by change events.

``client.map("users", near_cache=NearCache(max_entries=10_000, ttl=60.0))``: a ``get()`` of a key
the cache holds is answered locally, with no round trip. The cache fills only from reads
(``get``), is bounded (least recently used entries go first) and, with ``ttl``, forgets an
entry that many seconds after it was read.

**Freshness.** The cache subscribes to the map's change events with the cheapest subscription
the server has: a QUERY_SUB whose predicate matches nothing. Both servers send a SERVER_EVENT,
with the new record, for every write to a map to each connection holding *any* query on it
(WIRE.md 6.1), and a query that matches nothing adds no QUERY_RESP results and no QUERY_UPDATE
frames. The real 2.2.0 cluster sends an event only from the node that took the write (10.6),
so the cache subscribes once per node (one connection each); the dev cluster sends it from
every node, and the copies are told apart by the record's timestamp (an event older than the
cached record is ignored). A PUT event updates a cached entry, a REMOVE drops it; keys not
held are ignored. The writer's own connection gets no event for its own writes, so this
client's ``set``/``remove`` drop the key locally, and a read racing an event or this client's
own write to the same key is not cached.

**Serving.** The cache serves only while it is *live*: a subscription acknowledged on every
node the client is connected to. When a subscribed connection is lost (a disconnect, a
killed node, a heartbeat that went unanswered) the cache is cleared at once, counted in
``clears``: events may be missed from then on, so nothing it held is served again. Reads
then go to the server until it has subscribed again everywhere, and fill it from there. It
never serves a value older than the disconnect it saw (a value can be as old as the time the
client takes to *notice* a dead connection: the heartbeat, ``ping_interval``). Repairing
instead of clearing, with a Merkle walk of the keys it held (WIRE.md 8), is not done.

Counters (``client.stats["near_cache"][map]``): ``hits``, ``misses``, ``invalidations``
(entries updated or dropped by events and own writes), ``evictions`` (LRU), ``expired`` (ttl),
``clears``, ``entries`` and ``live``.

**Hooks**: ``MapHandle.get`` asks :meth:`MapCache.lookup`, and on a miss reads with
:meth:`MapCache.begin_read` / :meth:`MapCache.end_read` around the round trip;
``MapHandle.set``/``remove`` call :meth:`MapCache.wrote`. :class:`NearCaches` is a provider
listener next to the engine and the live queries.

Not in here: reads themselves (``topgun.engine.reads``), live queries (``topgun.queries``), the
outbox (``outbox.py``).
"""
from __future__ import annotations

import logging
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Set, Tuple

import gevent

from ..clock import Clock
from ..engine.provider import ConnectionProvider
from ..engine.reads import MISSING
from ..engine.writes import PendingWrite
from ..errors import ClientClosed, ConfigurationError, TopGunError
from ..protocol import messages as m
from ..transport.connection import Connection

log = logging.getLogger(__name__)

__all__ = ["NearCache", "MapCache", "NearCaches", "NOT_CACHED"]

NOT_CACHED = object()
_ENSURE_ATTEMPTS = 50
_TS_NONE: Tuple[int, int, str] = (-1, -1, "")


@dataclass(frozen=True)
class NearCache:
    """How a map's near cache behaves.

    Args:
        max_entries: at most this many keys (missing keys count too); the least recently used go first.
        ttl: seconds an entry is served after it was read (None: until an event or a clear).
    """

    max_entries: int = 10_000
    ttl: Optional[float] = None

    def __post_init__(self) -> None:
        if not isinstance(self.max_entries, int) or isinstance(self.max_entries, bool) or self.max_entries < 1:
            raise ConfigurationError(f"max_entries must be a positive int, got {self.max_entries!r}")
        if self.ttl is not None and (not isinstance(self.ttl, (int, float)) or isinstance(self.ttl, bool)
                                     or not self.ttl > 0 or self.ttl == float("inf")):
            raise ConfigurationError(f"ttl must be a positive number of seconds or None, got {self.ttl!r}")


def _match_nothing(query_id: str) -> Dict[str, Any]:
    # No stored value has this field with this value, so the query never matches: the
    # subscription only makes the server send SERVER_EVENTs for the map.
    return {"predicate": {"op": "eq", "attribute": "__topgun_near_cache__", "value": query_id}}


def _node_of(conn: Connection) -> str:
    return conn.node_id or conn.url


class MapCache:
    """The near cache of one map in one runtime."""

    def __init__(self, name: str, config: NearCache, clock: Clock) -> None:
        self.name = name
        self.config = config
        self.clock = clock
        # key -> (value or MISSING, server timestamp or None, expires_at or None)
        self._entries: "OrderedDict[str, Tuple[Any, Optional[Tuple[int, int, str]], Optional[float]]]" = OrderedDict()
        self.subs: Dict[str, Tuple[Connection, str]] = {}  # node -> (connection, queryId)
        self.live = False
        self.epoch = 0
        self._reading: Dict[str, int] = {}
        self._dirty: Set[str] = set()
        self._own: Dict[str, PendingWrite] = {}
        self.ensuring = False
        self.again = False
        self.stats = {"hits": 0, "misses": 0, "invalidations": 0, "evictions": 0, "expired": 0, "clears": 0}

    # -- reads

    def lookup(self, key: str) -> Any:
        """The cached value (``MISSING`` for a key known to be absent) or ``NOT_CACHED``."""
        entry = self._entries.get(key) if self.live else None
        if entry is None:
            self.stats["misses"] += 1
            return NOT_CACHED
        if entry[2] is not None and entry[2] <= self.clock.monotonic():
            del self._entries[key]
            self.stats["expired"] += 1
            self.stats["misses"] += 1
            return NOT_CACHED
        self._entries.move_to_end(key)
        self.stats["hits"] += 1
        return entry[0]

    def begin_read(self, key: str) -> Tuple[int, bool]:
        self._reading[key] = self._reading.get(key, 0) + 1
        own = self._own.get(key)
        if own is not None:
            if own.done:
                del self._own[key]
            else:
                self._dirty.add(key)  # our own write is on its way: what the server says now may be older
        return (self.epoch, self.live)

    def end_read(self, key: str, token: Tuple[int, bool], record: Any) -> None:
        """Cache what a read returned (an ``LWWRecord`` or ``MISSING``) unless something raced it."""
        left = self._reading.get(key, 1) - 1
        fresh = key not in self._dirty
        if left > 0:
            self._reading[key] = left
        else:
            self._reading.pop(key, None)
            self._dirty.discard(key)
        epoch, was_live = token
        if not (fresh and was_live and self.live and epoch == self.epoch):
            return
        if record is MISSING:
            self._store(key, MISSING, None)
        else:
            ts = record.timestamp
            self._store(key, record.value, (ts.millis, ts.counter, ts.node_id))

    def abandon_read(self, key: str) -> None:
        left = self._reading.get(key, 1) - 1
        if left > 0:
            self._reading[key] = left
        else:
            self._reading.pop(key, None)
            self._dirty.discard(key)

    def _store(self, key: str, value: Any, ts: Optional[Tuple[int, int, str]]) -> None:
        ttl = self.config.ttl
        self._entries[key] = (value, ts, None if ttl is None else self.clock.monotonic() + ttl)
        self._entries.move_to_end(key)
        while len(self._entries) > self.config.max_entries:
            self._entries.popitem(last=False)
            self.stats["evictions"] += 1

    # -- changes

    def wrote(self, key: str, w: PendingWrite) -> None:
        """This client wrote ``key``: drop it; reads until the write is acknowledged are not cached."""
        if self._entries.pop(key, None) is not None:
            self.stats["invalidations"] += 1
        if key in self._reading:
            self._dirty.add(key)
        self._own[key] = w
        if len(self._own) > 2 * self.config.max_entries:
            for k in [k for k, pw in self._own.items() if pw.done]:
                del self._own[k]

    def apply_event(self, event: m.ServerEvent) -> None:
        key = event.key
        if key in self._reading:
            self._dirty.add(key)
        entry = self._entries.get(key)
        if entry is None:
            return
        record = event.record
        if event.event_type == "PUT" and record is not None and entry[1] is not None:
            ts = (record.timestamp.millis, record.timestamp.counter, record.timestamp.node_id)
            if ts <= entry[1]:
                return  # a copy of an event already applied, or an older write (dev cluster: events from every node)
            self._entries[key] = (record.value, ts, entry[2])
        else:
            # a REMOVE, an ORMap event, or an entry whose timestamp is unknown: forget it
            del self._entries[key]
        self.stats["invalidations"] += 1

    def clear(self, why: str) -> None:
        self.epoch += 1
        self.live = False
        had = len(self._entries)
        self._entries.clear()
        self.stats["clears"] += 1
        log.info("near cache of %s cleared (%s; %d entries)", self.name, why, had)

    def snapshot(self) -> Dict[str, Any]:
        return dict(self.stats, entries=len(self._entries), live=self.live)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return (f"<MapCache {self.name} {'live' if self.live else 'not live'} entries={len(self._entries)} "
                f"hits={self.stats['hits']} misses={self.stats['misses']}>")


class NearCaches:
    """The near caches of one runtime; a ``ProviderListener`` of its provider.

    Args:
        provider: where the subscriptions go (one per node).
        clock: for ttl and retry pacing.
        spawn: starts subscription greenlets (the runtime's group).
        request_timeout: deadline of each QUERY_SUB.
    """

    def __init__(self, provider: ConnectionProvider, *, clock: Clock, spawn: Callable[..., gevent.Greenlet],
                 request_timeout: float) -> None:
        self.provider = provider
        self.clock = clock
        self._spawn = spawn
        self.request_timeout = request_timeout
        self._caches: Dict[str, MapCache] = {}
        self._closed = False

    def get(self, name: str) -> Optional[MapCache]:
        return self._caches.get(name)

    def attach(self, name: str, config: NearCache) -> MapCache:
        """The map's cache, made (and subscribed, in the background) on first use."""
        cache = self._caches.get(name)
        if cache is not None:
            if cache.config != config:
                raise ConfigurationError(f"map {name!r} already has a near cache with {cache.config}; got {config}")
            return cache
        if self._closed:
            raise ClientClosed("the client is closed")
        cache = self._caches[name] = MapCache(name, config, self.clock)
        self._spawn(self._ensure, cache)
        return cache

    def _ensure(self, cache: MapCache) -> None:
        """Subscribe on one connection of every node that has none; live once all are acknowledged."""
        if cache.ensuring:
            cache.again = True
            return
        cache.ensuring = True
        try:
            for _ in range(_ENSURE_ATTEMPTS):
                if self._closed or self._caches.get(cache.name) is not cache:
                    return
                cache.again = False
                conns: Dict[str, Connection] = {}
                for conn in self.provider.open_connections():
                    conns.setdefault(_node_of(conn), conn)
                for node, conn in conns.items():
                    held = cache.subs.get(node)
                    if held is not None and held[0].is_open:
                        continue
                    self._subscribe(cache, node, conn, held)
                live = bool(conns) and all(node in cache.subs and cache.subs[node][0].is_open for node in conns)
                if live and not cache.again:
                    if not cache.live:
                        log.info("near cache of %s is live (%d node(s))", cache.name, len(conns))
                    cache.live = True
                    return
                cache.live = False
                self.clock.sleep(0.05 if cache.again else 0.2)
            log.warning("near cache of %s could not subscribe everywhere; it serves nothing until the next connect",
                        cache.name)
        finally:
            cache.ensuring = False

    def _subscribe(self, cache: MapCache, node: str, conn: Connection, held: Optional[Tuple[Connection, str]]) -> None:
        query_id = uuid.uuid4().hex
        try:
            if held is not None:
                # The real server keeps queries of closed sockets (WIRE.md 7.2); any connection may end them.
                conn.send(m.QueryUnsub(held[1]))
            reply = conn.request(m.QuerySub(query_id, cache.name, _match_nothing(query_id), None),
                                 self.request_timeout)
        except TopGunError as exc:
            log.info("near cache of %s: subscribing on %s failed (%s)", cache.name, node, exc)
            cache.subs.pop(node, None)
            cache.again = True
            return
        if not isinstance(reply, m.QueryResp) or not conn.is_open:
            cache.again = True
            return
        cache.subs[node] = (conn, query_id)

    # -- ProviderListener

    def on_connected(self, conn: Connection) -> None:
        for cache in self._caches.values():
            if _node_of(conn) not in cache.subs:
                cache.live = False  # a node without our subscription: its writes would go unseen
                self._spawn(self._ensure, cache)

    def on_disconnected(self, conn: Connection, exc: Optional[BaseException]) -> None:
        for cache in self._caches.values():
            node = _node_of(conn)
            held = cache.subs.get(node)
            if held is not None and held[0] is conn:
                cache.clear(f"lost {conn.url}")
                self._spawn(self._ensure, cache)

    def on_map_updated(self, version: int) -> None:
        for cache in self._caches.values():
            self._spawn(self._ensure, cache)

    def on_message(self, conn: Connection, msg: m.Message) -> None:
        if isinstance(msg, m.ServerEvent):
            cache = self._caches.get(msg.map_name)
            if cache is not None:
                cache.apply_event(msg)
        elif isinstance(msg, m.ServerBatchEvent):  # never sent by 2.2.0, but defined
            for event in msg.events:
                cache = self._caches.get(event.map_name)
                if cache is not None:
                    cache.apply_event(event)

    # -- lifecycle

    def stats(self) -> Dict[str, Dict[str, Any]]:
        return {name: cache.snapshot() for name, cache in self._caches.items()}

    def close(self) -> None:
        """Unsubscribe everywhere (the real server keeps queries of closed sockets)."""
        self._closed = True
        for cache in self._caches.values():
            cache.live = False
            for conn, query_id in cache.subs.values():
                if conn.is_open:
                    try:
                        conn.send(m.QueryUnsub(query_id))
                    except TopGunError:
                        pass
            cache.subs.clear()

    def drop(self) -> List[MapCache]:
        """After a fork: forget everything without a word to the server."""
        self._closed = True
        caches, self._caches = list(self._caches.values()), {}
        for cache in caches:
            cache.live = False
        return caches

    def __len__(self) -> int:
        return len(self._caches)

    def __repr__(self) -> str:
        return f"<NearCaches maps={len(self._caches)}{' closed' if self._closed else ''}>"
