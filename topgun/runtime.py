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

and ``start()``/``close()`` bring them up and down in order. Handles (:class:`~topgun.maps.MapHandle`
and the structure handles to come) reach the client only through ``client.runtime`` and use
only the public members here.

Not in here: building the connections (the client's ``connect``), configuration parsing
(``topgun.config``), fork and exit hooks (``topgun.forking``).
"""
from __future__ import annotations

import logging
from typing import Optional

from gevent.pool import Group

from .clock import Clock
from .counters import CounterRegistry
from .engine.engine import WriteEngine
from .engine.provider import ConnectionProvider, Listeners
from .engine.requests import RequestRunner
from .locks import LockRegistry
from .protocol.hlc import HLC
from .queries import QueryRegistry
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
    """

    def __init__(self, home: Home, provider: ConnectionProvider, *, clock: Clock, node_id: str,
                 write_concern: str, batch_size: int, max_in_flight: int, request_timeout: float) -> None:
        self.home = home
        self.clock = clock
        self.group = Group()
        self.provider = provider
        self.hlc = HLC(node_id, clock.now_ms)
        self.engine = WriteEngine(provider, clock=clock, write_concern=write_concern, batch_size=batch_size,
                                  max_in_flight=max_in_flight, request_timeout=request_timeout)
        self.requests = RequestRunner(provider, clock=clock, request_timeout=request_timeout)
        self.queries = QueryRegistry(self.requests, home=home, spawn=self.group.spawn)
        self.topics = TopicRegistry(self.requests, home=home, spawn=self.group.spawn)
        self.locks = LockRegistry(self.requests, home=home, spawn=self.group.spawn)
        self.counters = CounterRegistry(self.requests, home=home, spawn=self.group.spawn, node_id=node_id)
        self.request_timeout = request_timeout
        self._closed = False

    def start(self) -> None:
        """Start the provider (its events go to the engine, then to the live queries) and the engine."""
        self.provider.start(Listeners(self.engine, self.queries, self.topics, self.locks, self.counters))
        self.engine.start()

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
        self.group.kill(timeout=timeout)
        self.requests.close()
        self.engine.close(timeout=engine_timeout)  # closes the provider too

    def __repr__(self) -> str:
        return (f"<Runtime {self.home.mode} {'closed' if self._closed else 'open'} "
                f"subscriptions={len(self.queries)} {self.engine!r}>")
