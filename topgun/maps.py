"""MapHandle: the operations on one named map, over the client's runtime.

Writes are last-writer-wins records stamped with the client's HLC. ``set`` returns once the
server acknowledged the write; ``set_async`` returns an ``AsyncResult`` at once. Keys must
be ``str`` and values must be msgpack-encodable (dict, list, str, bytes, int, float, bool,
None); anything else raises ``ConfigurationError`` before it is queued.

The handle keeps no state of its own beyond its name (and its near-cache settings): every call
looks up ``client.runtime`` (a forked child gets a new one) and uses only its public members:
the write engine, the request runner, the query registry, the HLC, the near caches and the
outbox. With ``near_cache=``, ``get`` asks the map's cache first (:mod:`topgun.storage.nearcache`)
and writes drop the key from it; ``put_all`` writes each window's outbox rows in one
transaction (:mod:`topgun.storage.outbox`).

Not in here: wire shapes (``topgun.protocol.fastpath``), batching and acks (``topgun.engine``),
live-query bookkeeping (``topgun.queries``), full-text search (``topgun.search``).
"""
from __future__ import annotations

import itertools
from typing import Any, Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Protocol, Tuple, Union

import gevent
from gevent.event import AsyncResult

from . import threads
from .engine.reads import MISSING, point_read, point_record
from .engine.writes import PendingWrite
from .errors import ConfigurationError, TopGunError
from .protocol import codec
from .queries import Change, Subscription, build_query, query_once
from .runtime import Runtime
from .search import SearchChange, SearchRegistry, SearchResult, SearchSubscription, search_once, search_options
from .storage.nearcache import NOT_CACHED, MapCache, NearCache

__all__ = ["MapHandle", "RuntimeSource"]


class RuntimeSource(Protocol):
    """What a handle holds on to: something that gives the current runtime (the client)."""

    @property
    def runtime(self) -> Runtime: ...

_MAX_VALUE_BYTES = codec.MAX_FRAME_BYTES - 4096
_YIELD_EVERY = 500  # put_all lets other greenlets run after this many entries (no hub held > 0.1 s)


def _check_key(key: Any) -> str:
    if not isinstance(key, str):
        raise ConfigurationError(f"map keys must be str, got {type(key).__name__}: {key!r}")
    return key


_SCALARS = (int, float, bool, type(None))
_MSGPACK_TYPES = (str, bytes, bytearray, dict, list, tuple) + _SCALARS


#: Exact types _check_value accepts without looking further (containers are checked by encoding).
_PLAIN_TYPES = frozenset({int, float, bool, type(None), dict, list, tuple})


def _check_value(value: Any) -> None:
    """Cheap checks before queueing; the full check is the frame's own encoding.

    Containers are not encoded twice: one holding something msgpack cannot encode fails only
    its own write (ConfigurationError) when the engine encodes its frame.
    """
    if isinstance(value, _SCALARS):
        return
    if not isinstance(value, _MSGPACK_TYPES):
        raise ConfigurationError(f"value cannot be stored: {type(value).__name__} is not msgpack-encodable "
                                 "(use dict, list, str, bytes, int, float, bool or None)")
    # A str may take up to 4 bytes per character encoded; only look closer near the limit.
    near_limit = _MAX_VALUE_BYTES // (4 if isinstance(value, str) else 1)
    if isinstance(value, (str, bytes, bytearray)) and len(value) > near_limit:
        size = len(codec.encode_wire(value))
        if size > _MAX_VALUE_BYTES:
            raise ConfigurationError(f"value is {size} bytes encoded; the limit is {_MAX_VALUE_BYTES}")


class MapHandle:
    """A named map. Obtain it with ``client.map(name)``."""

    def __init__(self, client: "RuntimeSource", name: str, *, near_cache: Optional[NearCache] = None) -> None:
        if not isinstance(name, str) or not name:
            raise ConfigurationError(f"map names must be non-empty str, got {name!r}")
        if near_cache is not None and not isinstance(near_cache, NearCache):
            raise ConfigurationError(f"near_cache= must be a topgun.NearCache, got {near_cache!r}")
        self._client = client
        self.name = name
        self.near_cache = near_cache

    def _cache(self, runtime: Runtime) -> Optional[MapCache]:
        if self.near_cache is None:
            return runtime.near_caches.get(self.name)  # another handle on the map may have one
        return runtime.near_caches.attach(self.name, self.near_cache)

    @property
    def runtime(self) -> Runtime:
        """The client's current runtime (looked up per call: a forked child gets a new one)."""
        return self._client.runtime

    # ------------------------------------------------------------------ writes

    def _put(self, runtime: Runtime, key: str, value: Any, ttl: Optional[float],
             timeout: Optional[float]) -> PendingWrite:
        if type(key) is not str:
            _check_key(key)
        if type(value) not in _PLAIN_TYPES:  # what _check_value passes at once, without a call
            _check_value(value)
        if ttl is not None:
            # Refused rather than sent: both servers store ttlMs and never expire the entry (WIRE.md 4.2).
            raise ConfigurationError(f"ttl={ttl!r} is not supported: neither the TopGun 2.2.0 server nor the "
                                     "dev cluster expires entries, so the value would live on; remove it yourself")
        w = runtime.engine.submit_put(self.name, key, value, runtime.hlc.now(), timeout=timeout)
        cache = runtime.near_caches.get(self.name)
        if cache is not None:
            cache.wrote(key, w)
        return w

    def _put_checked(self, runtime: Runtime, chunk: List[Tuple[str, Any]], deadline: float) -> List[PendingWrite]:
        """A put_all window, already checked; it keeps the near cache honest like ``_put``."""
        writes = runtime.engine.submit_many(self.name, chunk, runtime.hlc, deadline)
        cache = runtime.near_caches.get(self.name)
        if cache is not None:
            for w in writes:
                cache.wrote(w.key, w)
        return writes

    def _remove(self, runtime: Runtime, key: str, timeout: Optional[float]) -> PendingWrite:
        _check_key(key)
        w = runtime.engine.submit_put(self.name, key, None, runtime.hlc.now(), timeout=timeout,
                                      op_type="REMOVE")
        cache = runtime.near_caches.get(self.name)
        if cache is not None:
            cache.wrote(key, w)
        return w

    @threads.blocking()
    def set(self, key: str, value: Any, *, ttl: Optional[float] = None, timeout: Optional[float] = None) -> None:
        """Store ``value`` under ``key`` and wait for the server's acknowledgement.

        Raises:
            ConfigurationError: bad key or value.
            OperationTimeout: not acknowledged within ``timeout`` (default: request_timeout).
        """
        runtime = self._client.runtime
        runtime.engine.wait([self._put(runtime, key, value, ttl, timeout)])

    put = set

    @threads.blocking()
    def set_async(self, key: str, value: Any, *, ttl: Optional[float] = None,
                  timeout: Optional[float] = None) -> AsyncResult:
        """Queue a write; the returned AsyncResult completes on acknowledgement."""
        return self._put(self._client.runtime, key, value, ttl, timeout).result

    @threads.blocking()
    def remove(self, key: str, *, timeout: Optional[float] = None) -> None:
        """Delete ``key`` and wait for the acknowledgement."""
        runtime = self._client.runtime
        runtime.engine.wait([self._remove(runtime, key, timeout)])

    delete = remove

    @threads.blocking()
    def remove_async(self, key: str, *, timeout: Optional[float] = None) -> AsyncResult:
        return self._remove(self._client.runtime, key, timeout).result

    @threads.blocking()
    def put_all(self, items: Union[Mapping[str, Any], Iterable[Tuple[str, Any]]], *,
                timeout: Optional[float] = None) -> int:
        """Write many entries (sent as OP_BATCH frames); returns how many were acknowledged.

        Not atomic: entries go out in windows of ``max_in_flight`` (at most 5000), each checked whole before it is
        queued. A bad key or value raises ConfigurationError once the windows before it are
        acknowledged, and nothing of its own window is written. A write that fails raises
        after the others finished.
        """
        pairs = iter(items.items() if isinstance(items, Mapping) else items)
        runtime = self._client.runtime
        engine = runtime.engine
        deadline = engine.clock.monotonic() + (engine.request_timeout if timeout is None else timeout)
        # Queue a window at a time, two windows in flight: the server keeps busy while a bounded
        # number of writes is alive (tens of thousands queued at once cost more in garbage
        # collection than in sending), and the hub is never held for long.
        window = max(_YIELD_EVERY, min(engine.max_in_flight, 5000))
        outstanding: List[List[PendingWrite]] = []
        count = 0
        error: Optional[BaseException] = None
        while True:
            chunk = list(itertools.islice(pairs, window))
            try:
                for k, v in chunk:  # a window is checked whole before any of it is queued
                    if type(k) is not str:
                        _check_key(k)
                    if type(v) not in _PLAIN_TYPES:  # what _check_value passes at once, without a call
                        _check_value(v)
            except ConfigurationError:
                for writes in outstanding:  # what was queued before is seen through, then we fail
                    engine.settle(writes)
                raise
            # Checked above; one deadline for all, so they stay in deadline order in the engine.
            if runtime.outbox is not None:
                with runtime.outbox.deferred():  # one transaction per window, before any of it can be sent
                    ops = self._put_checked(runtime, chunk, deadline)
            else:
                ops = self._put_checked(runtime, chunk, deadline)
            if ops:
                outstanding.append(ops)
                count += len(ops)
            if outstanding and (len(outstanding) > 1 or not ops):
                try:
                    engine.wait(outstanding.pop(0))
                except TopGunError as exc:  # keep going: report the first failure at the end
                    error = error or exc
            elif ops:
                gevent.sleep(0)
            if not ops and not outstanding:
                break
        if error is not None:
            raise error
        return count

    # ------------------------------------------------------------------ reads

    @threads.blocking()
    def get(self, key: str, default: Any = None, *, timeout: Optional[float] = None) -> Any:
        """The value the server holds for ``key``, or ``default``."""
        _check_key(key)
        runtime = self._client.runtime
        cache = self._cache(runtime)
        if cache is None:
            value = runtime.requests.call(
                lambda conn, remaining: point_read(conn, self.name, key, remaining), key=key, timeout=timeout, op="get")
            return default if value is MISSING else value
        value = cache.lookup(key)
        if value is NOT_CACHED:
            token = cache.begin_read(key)
            try:
                record = runtime.requests.call(
                    lambda conn, remaining: point_record(conn, self.name, key, remaining), key=key, timeout=timeout,
                    op="get")
            except BaseException:
                cache.abandon_read(key)
                raise
            cache.end_read(key, token, record)
            value = MISSING if record is MISSING else record.value
        return default if value is MISSING else value

    def __contains__(self, key: str) -> bool:
        return self.get(key, MISSING) is not MISSING

    def __getitem__(self, key: str) -> Any:
        """``m[key]``: like :meth:`get`, but a missing key raises ``KeyError``."""
        value = self.get(key, MISSING)
        if value is MISSING:
            raise KeyError(key)
        return value

    def __setitem__(self, key: str, value: Any) -> None:
        """``m[key] = value``: :meth:`set` (waits for the acknowledgement)."""
        self.set(key, value)

    def __delitem__(self, key: str) -> None:
        """``del m[key]``: :meth:`remove`. Unlike a dict, a missing key is no error (no read is made)."""
        self.remove(key)

    @threads.blocking()
    def query(self, *, where: Optional[Dict[str, Any]] = None, predicate: Optional[Dict[str, Any]] = None,
              sort: Optional[Dict[str, str]] = None, limit: Optional[int] = None,
              fields: Optional[List[str]] = None, timeout: Optional[float] = None) -> List[Tuple[str, Any]]:
        """A one-shot query: (key, value) pairs in the server's order."""
        return query_once(self._client.runtime.requests, self.name, build_query(where, predicate, sort, limit),
                          fields, timeout)

    @threads.blocking()
    def entries(self, *, timeout: Optional[float] = None) -> Dict[str, Any]:
        """Every entry of the map, as a dict."""
        return dict(self.query(timeout=timeout))

    def items(self) -> List[Tuple[str, Any]]:
        return list(self.entries().items())

    def keys(self) -> List[str]:
        return list(self.entries())

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self.entries())

    # ------------------------------------------------------------------ live

    @threads.blocking()
    def subscribe(self, on_change: Optional[Callable[[Change], None]] = None, *,
                  where: Optional[Dict[str, Any]] = None, predicate: Optional[Dict[str, Any]] = None,
                  sort: Optional[Dict[str, str]] = None, limit: Optional[int] = None,
                  fields: Optional[List[str]] = None, timeout: Optional[float] = None) -> Subscription:
        """A live query over this map. Other clients' writes arrive as :class:`Change` objects.

        With ``on_change`` they are passed to it (on the client's reader greenlet: keep it
        quick); without, iterate the subscription or call ``.get(timeout)``. ``.results``
        holds the current matching entries. Close it with ``.close()`` or a ``with`` block.
        """
        query = build_query(where, predicate, sort, limit)
        return self._client.runtime.queries.subscribe(self.name, query, fields, on_change, timeout)

    watch = subscribe

    # ------------------------------------------------------------------ full-text search

    @threads.blocking()
    def search(self, text: str, *, limit: Optional[int] = None, min_score: Optional[float] = None,
               timeout: Optional[float] = None) -> List[SearchResult]:
        """Full-text search over the map's values, best score first.

        Args:
            text: the query (words are OR-ed; ``AND``, ``+word``, ``-word``, ``"a phrase"``).
            limit: at most this many hits (the server's default is 10).
            min_score: leave out hits scoring below this.

        Returns:
            :class:`~topgun.search.SearchResult` (key, score, matched_terms, value); values the
            server leaves out (2.2.0 always does) are read before this returns.

        Raises:
            ConfigurationError: empty text or a bad limit/min_score.
            OperationTimeout: no answer (and values) within ``timeout``.
        """
        return search_once(self._client.runtime, self.name, text, search_options(text, limit, min_score), timeout)

    @threads.blocking()
    def search_subscribe(self, text: str, on_change: Optional[Callable[[SearchChange], None]] = None, *,
                         limit: Optional[int] = None, min_score: Optional[float] = None,
                         timeout: Optional[float] = None) -> SearchSubscription:
        """A live search: ``.results`` start as the first hits and follow ENTER/UPDATE/LEAVE changes.

        Changes go to ``on_change`` (on the client's reader greenlet) or, without it, to iteration
        and ``.get(timeout)``; your own writes are reported too. Close it with ``.close()``.
        """
        options = search_options(text, limit, min_score)
        runtime = self._client.runtime
        registry: SearchRegistry = runtime.service("search", SearchRegistry)
        return registry.open(self.name, text, options, on_change,
                             runtime.request_timeout if timeout is None else timeout)

    def __repr__(self) -> str:
        return f"<MapHandle {self.name}>"
