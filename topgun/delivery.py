"""Delivery: the half every subscription shares (live queries, topics, counters, OR-maps, live search).

A subscription hands each item it receives to :meth:`Delivery._hand_over`: to its callback if it
was given one (run on the client's reader greenlet; a callback that raises is logged and the next
item still arrives), else into a queue that :meth:`Delivery.get` and iteration read, from any
thread. ``with`` closes the subscription. :class:`SubscriptionSet` is the registry half that
registries keeping one flat dict of subscriptions share (``close()``, and ``drop()`` after a fork);
:class:`RunnerRegistry` the half that registries over the request runner share (live queries,
topics, counters: ``request_timeout``, ``closed`` and ``drop()``).
:func:`send_unsubscribe` is the last word a closing subscription sends on a connection: only
if it is open, and a connection going away meanwhile is no error. :func:`attach_everywhere` is
how the kinds held on every node (OR-maps, live search) first subscribe.

Not in here: what subscribing sends, resubscribing after reconnects (each kind does its own),
what an item is, and ``close()`` itself beyond its template (each subscription unsubscribes in
its own way, with its own message: ``_release()``); a subclass provides ``_release()``,
``closed`` and ``_registry`` (whose ``home`` runs the blocking calls).
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Dict, Generic, Iterable, Iterator, List, Optional, TypeVar

from gevent.queue import Empty, Queue

from . import threads
from .engine.requests import RequestRunner
from .errors import OperationTimeout, TopGunError
from .protocol import messages as m
from .transport.connection import Connection

log = logging.getLogger(__name__)

__all__ = ["Delivery", "RunnerRegistry", "SubscriptionSet", "attach_everywhere", "drop_all", "send_unsubscribe"]

T = TypeVar("T")


def drop_all(subs: Iterable[Any]) -> List[Any]:
    """After a fork: mark ``subs`` closed without a word to the server (the parent keeps the
    real ones; these copies would never deliver) and return them."""
    dropped = list(subs)
    for sub in dropped:
        sub.closed = True
    return dropped


def attach_everywhere(requests: RequestRunner, attach: Callable[[Connection, float], None], timeout: float) -> float:
    """Run ``attach(conn, remaining)`` on every open connection in turn, all within ``timeout``
    (with none open yet: on the one the runner finds, with its retries); returns the deadline."""
    deadline = requests.clock.monotonic() + timeout
    conns = requests.provider.open_connections()
    if not conns:
        requests.call(attach, timeout=timeout)
    for conn in conns:
        attach(conn, max(0.0, deadline - requests.clock.monotonic()))
    return deadline


def send_unsubscribe(conn: Connection, msg: m.Message) -> None:
    """Send ``msg`` (QUERY_UNSUB, SEARCH_UNSUB, ...) on ``conn`` if it is open; never raises TopGunError."""
    if conn.is_open:
        try:
            conn.send(msg)
        except TopGunError:
            pass  # the connection is going away; nothing left to unsubscribe from


class SubscriptionSet:
    """A registry's live subscriptions in ``_subs`` (any key): ``close()`` closes each (it
    unsubscribes), ``drop()`` after a fork only marks them (see :func:`drop_all`)."""

    closed: bool
    _subs: Dict[Any, Any]

    def close(self) -> None:
        self.closed = True
        for sub in list(self._subs.values()):
            sub.close()

    def drop(self) -> List[Any]:
        self.closed = True
        subs, self._subs = drop_all(self._subs.values()), {}
        return subs


class RunnerRegistry:
    """A registry over the request runner (``requests``): closed once it (``_closed``) or the
    runner is; ``drop()`` after a fork marks every subscription in ``_subs`` (see :func:`drop_all`)."""

    requests: RequestRunner
    _closed: bool
    _subs: Dict[Any, Any]

    @property
    def request_timeout(self) -> float:
        return self.requests.request_timeout

    @property
    def closed(self) -> bool:
        return self._closed or self.requests.closed

    def drop(self) -> List[Any]:
        """After a fork: mark every subscription closed without a word to the server; returns them."""
        self._closed = True
        subs, self._subs = drop_all(self._subscriptions()), {}
        return subs

    def _subscriptions(self) -> Iterable[Any]:
        """Every subscription in ``_subs`` (a registry keeping lists per name flattens them)."""
        return self._subs.values()


def _registry(sub: Any) -> Any:
    return sub._registry


class Delivery(Generic[T]):
    """Callback or queue, ``get(timeout)``, iteration and ``with`` for one subscription."""

    closed: bool
    _registry: Any

    def _init_delivery(self, callback: Optional[Callable[[T], None]]) -> None:
        self._callback = callback
        self._queue: "Queue[T]" = Queue()

    def _hand_over(self, item: T) -> None:
        if self._callback is None:
            self._queue.put(item)
            return
        try:
            self._callback(item)
        except Exception:  # user code must not break delivery of the next item
            log.exception("the callback of %r failed", self)

    @threads.blocking(none_waits_forever=True, host=_registry)
    def get(self, timeout: Optional[float] = None) -> T:
        """The next item (only without a callback). Raises OperationTimeout after ``timeout``."""
        try:
            return self._queue.get(timeout=timeout)
        except Empty:
            raise OperationTimeout(f"nothing new on {self!r} within {timeout}s") from None

    def __iter__(self) -> Iterator[T]:
        while not self.closed:
            try:
                yield self.get(0.5)  # through get(): callable from any thread
            except OperationTimeout:
                continue

    @threads.blocking(wait=5.0, host=_registry)
    def close(self) -> None:
        """Stop receiving, and unsubscribe on the server as this kind of subscription does."""
        if self.closed:
            return
        self.closed = True
        self._registry.forget(self)
        self._release()

    def _release(self) -> None:
        """What a closed subscription undoes on the server (QUERY_UNSUB, SEARCH_UNSUB, ...)."""

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
