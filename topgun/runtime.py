"""Runtime: everything one started client runs on, in one typed object.

A :class:`Runtime` is built on the client's home when the client starts (and again in a forked
child, on first use), and replaced whole: nothing in it is patched up in place. It holds

- ``home``: the hub the greenlets live on (:mod:`topgun.threads`),
- ``group``: the greenlets the client itself spawns (resubscribing live queries),
- ``provider``: the connection provider (one server, or the cluster's),
- ``engine``: the write engine (queue, batches, acks),
- ``requests``: the request runner (reads, queries, with failover retries),
- ``queries``: the live-query registry, a listener of the provider next to the engine,
- ``topics``, ``locks``, ``counters``: the registries of topic subscriptions, held locks and
  PN counters (:mod:`topgun.topics`, :mod:`topgun.locks`, :mod:`topgun.counters`), listeners too,
- ``hlc``: the hybrid logical clock that stamps writes,
- ``service(name, make)``: one helper per name for the structure handles (the OR-map and search
  subscription registries), built on first use, a listener of the provider, closed with the runtime,
- ``outbox``: the durable outbox (:mod:`topgun.storage.outbox`) with durable storage, else None,
- ``near_caches``: the maps' near caches (:mod:`topgun.storage.nearcache`), a listener too,

and ``start()``/``close()`` bring them up and down in order. ``start()`` replays what the
storage's outbox holds before it returns, so those writes are queued ahead of any new one.
Handles (:class:`~topgun.maps.MapHandle`
and the structure handles to come) reach the client only through ``client.runtime`` and use
only the public members here.

Not in here: building the connections (the client's ``connect``), configuration parsing
(``topgun.config``), fork and exit hooks (``topgun.forking``).
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Dict, List, Optional

from gevent.pool import Group

from .clock import Clock
from .counters import CounterRegistry
from .engine.engine import WriteEngine
from .engine.provider import ConnectionProvider, Listeners
from .engine.requests import RequestRunner
from .locks import LockRegistry
from .metrics import Metrics
from .protocol.hlc import HLC
from .queries import QueryRegistry
from .storage import MemoryStorage, StorageSpec
from .storage.nearcache import NearCaches
from .storage.outbox import Outbox
from .threads import Home
from .topics import TopicRegistry

log = logging.getLogger(__name__)

__all__ = ["Runtime"]


class Runtime:
    """One client's home, greenlets, provider, engine, request runner, live queries and HLC.

    Args:
        home: the hub everything here runs on.
        provider: not started yet; :meth:`start` starts it.
        clock: the client's clock.
        node_id: the HLC's node id (the client's).
        write_concern, batch_size, max_in_flight, request_timeout: the engine's settings.
        storage: a storage spec (:mod:`topgun.storage`); a durable one gets an outbox.
        metrics: the sink of the engine's and the request runner's metrics (None: none).

    Raises:
        StorageLocked, ConfigurationError: the storage cannot be opened.
    """

    def __init__(self, home: Home, provider: ConnectionProvider, *, clock: Clock, node_id: str,
                 write_concern: str, batch_size: int, max_in_flight: int, request_timeout: float,
                 storage: Optional[StorageSpec] = None, metrics: Optional[Metrics] = None) -> None:
        self.home = home
        self.clock = clock
        self.group = Group()
        self.provider = provider
        self.hlc = HLC(node_id, clock.now_ms)
        self.engine = WriteEngine(provider, clock=clock, write_concern=write_concern, batch_size=batch_size,
                                  max_in_flight=max_in_flight, request_timeout=request_timeout, metrics=metrics)
        self.requests = RequestRunner(provider, clock=clock, request_timeout=request_timeout, metrics=metrics)
        self.queries = QueryRegistry(self.requests, home=home, spawn=self.group.spawn)
        self.near_caches = NearCaches(provider, clock=clock, spawn=self.group.spawn, request_timeout=request_timeout)
        self.outbox: Optional[Outbox] = None
        spec = storage if storage is not None else MemoryStorage()
        adapter = spec.open()
        if adapter.durable:
            engine = self.engine
            self.outbox = Outbox(
                adapter, clock=clock, max_age=spec.max_age, resend_timeout=request_timeout,
                on_dropped=getattr(spec, "on_dropped", None),
                submit=lambda name, key, value, ts, op, timeout: engine.submit_put(
                    name, key, value, ts, op_type=op, timeout=timeout))
            engine.outbox = self.outbox
        self.topics = TopicRegistry(self.requests, home=home, spawn=self.group.spawn)
        self.locks = LockRegistry(self.requests, home=home, spawn=self.group.spawn)
        self.counters = CounterRegistry(self.requests, home=home, spawn=self.group.spawn, node_id=node_id)
        self.listeners = Listeners(self.engine, self.queries, self.near_caches, self.topics, self.locks,
                                   self.counters)
        self._services: Dict[str, Any] = {}
        self.request_timeout = request_timeout
        self._closed = False

    def start(self) -> None:
        """Start the provider (its events go to the engine, then to the live queries) and the engine."""
        self.provider.start(self.listeners)
        self.engine.start()
        if self.outbox is not None:
            self.outbox.replay()
            self.outbox.start()

    def service(self, name: str, make: Callable[["Runtime"], Any]) -> Any:
        """The runtime's one ``name`` helper, built by ``make(self)`` on first use.

        It hears the provider's events from then on (``on_connected``, ``on_disconnected``,
        ``on_map_updated``, ``on_message``) and its ``close()`` runs when the runtime closes.
        A forked child's new runtime builds its own.
        """
        found = self._services.get(name)
        if found is None:
            found = self._services[name] = make(self)
            self.listeners.add(found)
        return found

    def wait_ready(self, timeout: float) -> bool:
        """True once the provider has a usable connection; False at the timeout."""
        return self.provider.wait_ready(timeout)

    @property
    def last_error(self) -> Optional[BaseException]:
        return self.provider.last_error

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self, timeout: float = 1.0, engine_timeout: float = 2.0) -> None:
        """Unsubscribe live queries, stop the greenlets, fail queued writes, close connections."""
        if self._closed:
            return
        self._closed = True
        self.queries.close()
        for registry in (self.topics, self.locks, self.counters):
            registry.close()
        for service in list(self._services.values()):
            try:
                service.close()
            except Exception:  # one helper's failure must not keep the runtime open
                log.exception("closing %r failed", service)
        self.group.kill(timeout=timeout)
        self.requests.close()
        self.near_caches.close()
        self.engine.close(timeout=engine_timeout)  # closes the provider too
        if self.outbox is not None:
            self.outbox.close()  # after the engine: rows of writes it failed stay for the next start

    def drop_subscriptions(self) -> List[Any]:
        """After a fork: every subscription of every kind marked closed, without a word to the
        server (the parent keeps them; these copies would never deliver); returns them."""
        subs: List[Any] = list(self.queries.drop()) + self.topics.drop() + self.counters.drop()
        for service in self._services.values():
            drop = getattr(service, "drop", None)
            if drop is not None:
                subs.extend(drop())
        return subs

    def drop_storage(self) -> None:
        """After a fork: let go of the storage without closing it (the parent still uses the file)."""
        if self.outbox is not None:
            self.outbox.detach()
        self.near_caches.drop()

    def stats(self) -> Dict[str, Any]:
        """Counters: the engine's, the outbox's (with durable storage) and each near cache's."""
        return {"engine": dict(self.engine.stats),
                "outbox": self.outbox.snapshot() if self.outbox is not None else None,
                "near_cache": self.near_caches.stats()}

    def __repr__(self) -> str:
        return (f"<Runtime {self.home.mode} {'closed' if self._closed else 'open'} "
                f"subscriptions={len(self.queries)} {self.engine!r}>")
