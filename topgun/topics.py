"""Topics: publish to a named channel, subscribe to it, iterate or call back, ``close()``.

``client.topic(name)`` gives a :class:`TopicHandle`. ``publish(data)`` sends one TOPIC_PUB;
``subscribe(callback)`` (or ``subscribe()`` and iterate) receives the messages *other*
connections publish. The wire is WIRE.md section 12:

- Names are 1-256 characters of ``[A-Za-z0-9_-.:/]``. The real server ignores any other name
  without a word, so one is refused here with ``ConfigurationError`` before anything is sent.
- SUB, UNSUB and PUB get no reply. ``publish`` returns once the frame is written to the
  connection (not when anybody received it); ``subscribe`` returns after a PING round trip
  behind the TOPIC_SUB, so the server has seen the subscription by then (on the real server,
  which runs frames of one connection concurrently, almost always; on the dev server always).
- The publisher's own connection is excluded by the server: a client never receives what it
  published itself, even when subscribed.
- At most once: a message is delivered to the subscribers the topic's node knows when it
  arrives. There is no history and no replay.

Routing: the topic lives on the node owning its name's partition (``topgun.partition_id(name)``),
and every client sends both publications and subscriptions there, so clients connected through
different seeds meet (TopGun 2.2.0 keeps topics node-local). After a lost connection, a failover
or a partition map that moves the name, the subscription is made again on the new connection
(:mod:`topgun.binding`). **Messages published meanwhile are missed**: between the loss and the
new TOPIC_SUB (usually well under a second, at most until the owner is reachable again), and a
publisher that still routes to the old owner during a failover reaches nobody.

Not in here: routing and retries (``topgun.engine``, ``topgun.cluster``), re-attaching after a
lost connection (``topgun.binding``), the dev server's side (``topgun.server.topics``).
"""
from __future__ import annotations

import logging
import re
from typing import Any, Callable, Dict, Iterator, List, NamedTuple, Optional, Protocol

import gevent

from . import threads
from .binding import Bindings, BoundListener
from .delivery import Delivery, RunnerRegistry
from .engine.requests import RequestRunner
from .errors import ClientClosed, ConfigurationError
from .protocol import messages as m
from .transport.connection import Connection

log = logging.getLogger(__name__)

__all__ = ["TopicHandle", "TopicMessage", "TopicSubscription", "TopicRegistry", "check_name", "NAME_RULE"]

NAME_RULE = "1-256 characters of A-Z a-z 0-9 _ - . : /"
_NAME = re.compile(r"[A-Za-z0-9_\-.:/]{1,256}")


def check_name(name: Any, what: str = "topic") -> str:
    """Return ``name`` if the server would take it as a topic or lock name; else ConfigurationError."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ConfigurationError(f"bad {what} name {name!r}: it must be {NAME_RULE} "
                                 "(the server silently ignores any other name)")
    return name


class TopicMessage(NamedTuple):
    """One message received on a topic: ``timestamp`` is the server's wall clock in ms."""

    topic: str
    data: Any
    timestamp: Optional[int]


class _Source(Protocol):
    @property
    def runtime(self) -> Any: ...


class TopicRegistry(RunnerRegistry, BoundListener):
    """The topic subscriptions of one client runtime; a ``ProviderListener`` of its provider.

    Args:
        requests: routes and retries SUBs and PUBs.
        home: where blocking calls of subscriptions run.
        spawn: starts a greenlet owned by the runtime (re-subscribing).
    """

    def __init__(self, requests: RequestRunner, *, home: threads.Home,
                 spawn: Callable[..., gevent.Greenlet]) -> None:
        self.requests = requests
        self.home = home
        self._subs: Dict[str, List["TopicSubscription"]] = {}
        self.bindings = Bindings(requests, spawn=spawn, attach=self._attach, detach=self._detach, what="topic")
        self._closed = False

    @staticmethod
    def _attach(name: str, conn: Connection, remaining: float) -> None:
        conn.send(m.TopicSub(name))
        # No reply to TOPIC_SUB: a PING answered behind it means the server has read it.
        conn.request(m.Ping(conn.clock.now_ms()), remaining)

    @staticmethod
    def _detach(name: str, conn: Connection) -> None:
        conn.send(m.TopicUnsub(name))

    def publish(self, name: str, data: Any, timeout: Optional[float]) -> None:
        self.requests.call(lambda conn, remaining: conn.send(m.TopicPub(name, data)), key=name, timeout=timeout)

    def subscribe(self, name: str, callback: Optional[Callable[[TopicMessage], None]],
                  timeout: Optional[float]) -> "TopicSubscription":
        if self.closed:
            raise ClientClosed("the client is closed")
        sub = TopicSubscription(self, name, callback)
        subs = self._subs.setdefault(name, [])
        subs.append(sub)
        if len(subs) == 1 or name not in self.bindings.bound:
            try:
                self.bindings.bind(name, self.request_timeout if timeout is None else timeout)
            except BaseException:
                self.forget(sub)
                raise
        return sub

    def forget(self, sub: "TopicSubscription") -> None:
        subs = self._subs.get(sub.topic, [])
        if sub in subs:
            subs.remove(sub)
        if not subs:
            self._subs.pop(sub.topic, None)
            self.bindings.unbind(sub.topic)

    def close(self) -> None:
        self._closed = True
        for subs in list(self._subs.values()):
            for sub in list(subs):
                sub.close()
        self.bindings.close()

    def _subscriptions(self) -> Iterator["TopicSubscription"]:
        return (sub for group in self._subs.values() for sub in group)

    def __len__(self) -> int:
        return sum(len(s) for s in self._subs.values())

    # ProviderListener (the connection and map events: BoundListener) ---------------------

    def on_message(self, conn: Connection, msg: m.Message) -> None:
        if isinstance(msg, m.TopicMessage):
            message = TopicMessage(msg.topic, msg.data, msg.timestamp)
            for sub in list(self._subs.get(msg.topic, ())):
                sub._deliver(message)

    def __repr__(self) -> str:
        return f"<TopicRegistry topics={len(self._subs)} subscriptions={len(self)}{' closed' if self._closed else ''}>"


def _registry(sub: "TopicSubscription") -> TopicRegistry:
    return sub._registry


class TopicSubscription(Delivery[TopicMessage]):
    """Messages of one topic: iterate it, call :meth:`get`, or pass a callback; ``close()`` it."""

    def __init__(self, registry: TopicRegistry, topic: str,
                 callback: Optional[Callable[[TopicMessage], None]]) -> None:
        self._registry = registry
        self.topic = topic
        self._init_delivery(callback)
        self.closed = False
        self.received = 0

    def _deliver(self, message: TopicMessage) -> None:
        if self.closed:
            return
        self.received += 1
        self._hand_over(message)

    def _release(self) -> None:
        """Stop receiving; the last subscription of a topic sends TOPIC_UNSUB."""

    def __repr__(self) -> str:
        return f"<TopicSubscription {self.topic} {'closed' if self.closed else 'live'} received={self.received}>"


class TopicHandle:
    """A named topic. Obtain it with ``client.topic(name)``.

    Raises:
        ConfigurationError: the name breaks the server's rule (:data:`NAME_RULE`).
    """

    def __init__(self, client: _Source, name: str) -> None:
        self._client = client
        self.name = check_name(name)

    @property
    def runtime(self) -> Any:
        return self._client.runtime

    @threads.blocking()
    def publish(self, data: Any, *, timeout: Optional[float] = None) -> None:
        """Send ``data`` (anything msgpack encodes) to the topic's other subscribers.

        Returns once the frame is sent; there is no acknowledgement. The publishing client's
        own subscriptions do not receive it (the server excludes the publisher).

        Raises:
            OperationTimeout: no connection to the topic's node within ``timeout``.
            LocalProtocolError: ``data`` cannot be encoded.
        """
        self._client.runtime.topics.publish(self.name, data, timeout)

    @threads.blocking()
    def subscribe(self, callback: Optional[Callable[[TopicMessage], None]] = None, *,
                  timeout: Optional[float] = None) -> TopicSubscription:
        """Receive this topic's messages as :class:`TopicMessage` objects.

        With ``callback`` each message is passed to it (on the client's reader greenlet: keep
        it quick); without, iterate the subscription or call ``.get(timeout)``. It follows
        reconnects and failovers; messages published while it is being made again are missed.

        Raises:
            OperationTimeout: the subscription could not be made within ``timeout``.
        """
        return self._client.runtime.topics.subscribe(self.name, callback, timeout)  # type: ignore[no-any-return]

    watch = subscribe

    def __repr__(self) -> str:
        return f"<TopicHandle {self.name}>"
