"""ORMapHandle: an observed-remove map, several values per key (``client.ormap(name)``).

``add(key, value)`` stores one more value under ``key`` (CLIENT_OP ``OR_ADD`` with a fresh tag);
``remove(key, value)`` removes every record of ``key`` whose value equals ``value`` (one
``OR_REMOVE`` per tag it observed); ``get(key)`` returns the values (ORMAP_DIFF_REQUEST);
``entries()`` reads the whole map through its ORMap Merkle tree (WIRE.md 9); ``subscribe()``
reports other clients' adds and removes. Every call is routed like ``MapHandle``: by the key's
partition in cluster mode, with the same failover retries and deadline, and raises
``OperationTimeout`` when its deadline passes.

The 2.2.0 OR_REMOVE bug (WIRE.md 5.1): the server replaces the key's whole record set with the
removed tag, so every other value of the key goes too. ``remove`` works around it without
knowing which server it talks to: it reads the key, sends the removes, reads the key again and
re-adds (new tags) the surviving values the server dropped. A server that removes only the tag
(the dev cluster, or a fixed server) loses nothing, so nothing is re-added. The price on
2.2.0: from the remove's ack until the re-adds are acked (about two round trips) readers see
the key without its surviving values, subscribers see them removed and added again, and an add
by another client that lands inside that window is lost.

Two more 2.2.0 facts a user notices: the server re-tags every add (so an add resent after a
lost connection may store the value twice; ``remove`` removes both), and ``entries()`` in a
2.2.0 cluster sees only the data of the nodes it can reach (each node keeps what it took).

Not in here: the wire shapes (``topgun.protocol.messages``), connections and retries
(``topgun.engine``), LWW maps (``topgun.maps``).
"""
from __future__ import annotations

import logging
import uuid
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Set, Tuple

from . import threads
from .delivery import Delivery, SubscriptionSet, attach_everywhere, send_unsubscribe
from .engine.ormap_reads import ORRecord, read_keys, walk
from .errors import ClientClosed, ConfigurationError, OperationTimeout, RemoteProtocolError, TopGunError
from .maps import RuntimeSource, _check_key, _check_value
from .protocol import messages as m
from .protocol.hlc import Timestamp
from .runtime import Runtime
from .transport.connection import Connection

log = logging.getLogger(__name__)

__all__ = ["ORMapHandle", "ORRecord", "ORChange", "ORMapSubscription"]


class ORChange(NamedTuple):
    """One change seen by an OR-map subscription: ``kind`` is ``"ADD"`` or ``"REMOVE"``."""

    key: str
    value: Any
    kind: str
    tag: str


def _same_values(values: List[Any], value: Any) -> int:
    return sum(1 for v in values if v == value)


class ORMapHandle:
    """A named OR-map. Obtain it with ``client.ormap(name)``."""

    def __init__(self, client: RuntimeSource, name: str) -> None:
        if not isinstance(name, str) or not name:
            raise ConfigurationError(f"map names must be non-empty str, got {name!r}")
        self._client = client
        self.name = name

    @property
    def runtime(self) -> Runtime:
        """The client's current runtime (looked up per call: a forked child gets a new one)."""
        return self._client.runtime

    # ------------------------------------------------------------------ helpers

    def _send_op(self, runtime: Runtime, op: m.ClientOp, deadline: float) -> None:
        def attempt(conn: Connection, remaining: float) -> None:
            reply = conn.request(op, remaining)
            if not isinstance(reply, m.OpAck):
                raise RemoteProtocolError(f"expected OP_ACK, got {reply.TYPE}")
        runtime.requests.call(attempt, key=op.key, timeout=self._left(runtime, deadline))

    def _add_op(self, runtime: Runtime, key: str, value: Any) -> m.ClientOp:
        millis, counter, node = runtime.hlc.now()
        tag = f"{millis}:{counter}:{node}"
        record = m.ORMapRecord(value, Timestamp(millis, counter, node), tag)
        return m.ClientOp(self.name, key, id=f"or-{uuid.uuid4().hex[:16]}", op_type="OR_ADD", or_record=record)

    def _read(self, runtime: Runtime, key: str, deadline: float) -> List[ORRecord]:
        return runtime.requests.call(  # type: ignore[no-any-return]
            lambda conn, remaining: read_keys(conn, self.name, [key], remaining)[key],
            key=key, timeout=self._left(runtime, deadline))

    @staticmethod
    def _left(runtime: Runtime, deadline: float) -> float:
        left = deadline - runtime.clock.monotonic()
        if left <= 0:
            raise OperationTimeout("the call's deadline passed")
        return left

    @staticmethod
    def _deadline(runtime: Runtime, timeout: Optional[float]) -> float:
        return runtime.clock.monotonic() + (runtime.request_timeout if timeout is None else timeout)

    # ------------------------------------------------------------------ API

    @threads.blocking()
    def add(self, key: str, value: Any, *, timeout: Optional[float] = None) -> str:
        """Add ``value`` under ``key`` (other values of the key stay) and wait for the ack.

        Returns:
            The tag the client sent (2.2.0 replaces it with one of its own; see :meth:`records`).

        Raises:
            ConfigurationError: bad key or value.
            OperationTimeout: not acknowledged within ``timeout`` (default: request_timeout).
        """
        _check_key(key)
        _check_value(value)
        runtime = self._client.runtime
        op = self._add_op(runtime, key, value)
        self._send_op(runtime, op, self._deadline(runtime, timeout))
        assert op.or_record is not None
        return op.or_record.tag

    @threads.blocking()
    def remove(self, key: str, value: Any, *, timeout: Optional[float] = None) -> int:
        """Remove every record of ``key`` whose value equals ``value``; the other values stay.

        Returns:
            How many records were removed (0 if the value was not there).

        Raises:
            OperationTimeout: the removes (and the repair of values the server dropped, see the
                module docstring) were not all acknowledged within ``timeout``.
        """
        _check_key(key)
        runtime = self._client.runtime
        deadline = self._deadline(runtime, timeout)
        before = self._read(runtime, key, deadline)
        doomed = [r for r in before if r.value == value]
        if not doomed:
            return 0
        survivors = [r.value for r in before if r.value != value]
        for rec in doomed:
            self._send_op(runtime, m.ClientOp(self.name, key, id=f"or-{uuid.uuid4().hex[:16]}",
                                              op_type="OR_REMOVE", or_tag=rec.tag), deadline)
        if survivors:
            self._repair(runtime, key, survivors, deadline)
        return len(doomed)

    def _repair(self, runtime: Runtime, key: str, survivors: List[Any], deadline: float) -> None:
        # Re-add what the server dropped with the removed tag. Counted by value, not by tag (2.2.0
        # re-tags), so running it again after a lost connection adds nothing twice.
        def attempt(conn: Connection, remaining: float) -> int:
            present = [r.value for r in read_keys(conn, self.name, [key], remaining)[key]]
            missing: List[Any] = []
            for value in survivors:
                wanted = _same_values(survivors, value)
                if _same_values(present, value) + _same_values(missing, value) < wanted:
                    missing.append(value)
            for value in missing:
                reply = conn.request(self._add_op(runtime, key, value), max(0.0, deadline - runtime.clock.monotonic()))
                if not isinstance(reply, m.OpAck):
                    raise RemoteProtocolError(f"expected OP_ACK, got {reply.TYPE}")
            return len(missing)

        readded = runtime.requests.call(attempt, key=key, timeout=self._left(runtime, deadline))
        if readded:
            log.debug("re-added %d values of %s/%r that the server's OR_REMOVE dropped", readded, self.name, key)

    @threads.blocking()
    def get(self, key: str, *, timeout: Optional[float] = None) -> List[Any]:
        """The values stored under ``key`` (``[]`` if none), in the server's order."""
        return [r.value for r in self.records(key, timeout=timeout)]

    @threads.blocking()
    def records(self, key: str, *, timeout: Optional[float] = None) -> List[ORRecord]:
        """The records of ``key``: each value with its tag and timestamp."""
        _check_key(key)
        runtime = self._client.runtime
        return self._read(runtime, key, self._deadline(runtime, timeout))

    @threads.blocking()
    def entries(self, *, timeout: Optional[float] = None) -> Dict[str, List[Any]]:
        """Every key with its values (keys without values are left out)."""
        return {k: [r.value for r in recs] for k, recs in self._entries(timeout).items()}

    def _entries(self, timeout: Optional[float]) -> Dict[str, List[ORRecord]]:
        runtime = self._client.runtime
        deadline = self._deadline(runtime, timeout)
        provider = runtime.provider
        conns = provider.open_connections()
        if len(conns) <= 1:
            return runtime.requests.call(  # type: ignore[no-any-return]
                lambda conn, remaining: walk(conn, self.name, remaining), timeout=self._left(runtime, deadline))
        # Cluster: every node's share; for a key more than one node reports, the owner's answer wins.
        found: Dict[str, Tuple[bool, List[ORRecord]]] = {}
        for conn in conns:
            for key, recs in walk(conn, self.name, self._left(runtime, deadline)).items():
                try:
                    owner = provider.connection_for_key(key) is conn
                except TopGunError:
                    owner = False
                if owner or key not in found:
                    found[key] = (owner, recs)
        return {k: recs for k, (_, recs) in found.items()}

    def keys(self) -> List[str]:
        return list(self.entries())

    @threads.blocking()
    def subscribe(self, on_change: Optional[Callable[[ORChange], None]] = None, *,
                  timeout: Optional[float] = None) -> "ORMapSubscription":
        """Live changes of this OR-map (adds and removes by other clients).

        With ``on_change`` they are passed to it (on the client's reader greenlet: keep it quick);
        without, iterate the subscription or call ``.get(timeout)``. ``.results`` holds every key's
        values, starting from a snapshot taken once the subscription is in place. After a lost
        connection it subscribes again and reports what changed meanwhile as ordinary changes.
        """
        runtime = self._client.runtime
        registry: ORMapRegistry = runtime.service("ormaps", ORMapRegistry)
        return registry.open(self, on_change, timeout if timeout is not None else runtime.request_timeout)

    def __repr__(self) -> str:
        return f"<ORMapHandle {self.name}>"


class ORMapRegistry(SubscriptionSet):
    """The OR-map subscriptions of one runtime; a listener of its provider (``runtime.service``)."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.home = runtime.home
        self.request_timeout = runtime.request_timeout
        self._subs: Dict[str, "ORMapSubscription"] = {}
        self.closed = False

    def open(self, handle: ORMapHandle, on_change: Optional[Callable[[ORChange], None]],
             timeout: float) -> "ORMapSubscription":
        if self.closed:
            raise ClientClosed("the client is closed")
        sub = ORMapSubscription(self, handle, on_change)
        self._subs[sub.sub_id] = sub
        try:
            sub._open(timeout)
        except BaseException:
            self._subs.pop(sub.sub_id, None)
            raise
        return sub

    def forget(self, sub: "ORMapSubscription") -> None:
        self._subs.pop(sub.sub_id, None)

    # ProviderListener
    def on_connected(self, conn: Connection) -> None:
        for sub in list(self._subs.values()):
            self.runtime.group.spawn(sub._attach_and_resync, conn)

    def on_disconnected(self, conn: Connection, exc: Optional[BaseException]) -> None:
        for sub in self._subs.values():
            sub._attached.pop(conn.cid, None)

    def on_map_updated(self, version: int) -> None:
        for sub in list(self._subs.values()):
            self.runtime.group.spawn(sub._resync)

    def on_message(self, conn: Connection, msg: m.Message) -> None:
        if isinstance(msg, m.ServerEvent) and msg.event_type in ("OR_ADD", "OR_REMOVE"):
            for sub in list(self._subs.values()):
                if sub.map_name == msg.map_name:
                    sub._event(msg)

    def __repr__(self) -> str:
        return f"<ORMapRegistry subscriptions={len(self._subs)}{' closed' if self.closed else ''}>"


def _registry(sub: "ORMapSubscription") -> ORMapRegistry:
    return sub._registry


class _Reread:
    """One re-read under way: its key (None: every key) and the (key, tag) removed meanwhile."""

    __slots__ = ("scope", "removed")

    def __init__(self, scope: Optional[str]) -> None:
        self.scope = scope
        self.removed: Set[Tuple[str, Optional[str]]] = set()


class ORMapSubscription(Delivery[ORChange]):
    """Adds and removes of one OR-map. Iterate it, or pass ``on_change``; always ``close()`` it."""

    def __init__(self, registry: ORMapRegistry, handle: ORMapHandle,
                 on_change: Optional[Callable[[ORChange], None]]) -> None:
        self._registry = registry
        self._handle = handle
        self.map_name = handle.name
        self.sub_id = uuid.uuid4().hex
        self._init_delivery(on_change)
        self._records: Dict[str, Dict[str, Any]] = {}   # key -> tag -> value
        self._attached: Dict[int, Tuple[Connection, str]] = {}  # connection id -> (conn, queryId)
        self._rereads: List[_Reread] = []   # re-reads under way (see _reread)
        self.closed = False
        self.resyncs = 0

    @property
    def results(self) -> Dict[str, List[Any]]:
        """Every key's values as this subscription last saw them."""
        return {k: list(tags.values()) for k, tags in self._records.items() if tags}

    # -- setting up (QUERY_SUB on a map is what makes 2.2.0 send its SERVER_EVENTs)

    def _attach(self, conn: Connection, timeout: float) -> None:
        if conn.cid in self._attached or not conn.is_open:
            return
        qid = uuid.uuid4().hex
        reply = conn.request(m.QuerySub(qid, self.map_name, {}), timeout)
        if not isinstance(reply, m.QueryResp):
            raise RemoteProtocolError(f"expected QUERY_RESP, got {reply.TYPE}")
        self._attached[conn.cid] = (conn, qid)
        if self.closed:
            self._detach_all()

    def _open(self, timeout: float) -> None:
        runtime = self._registry.runtime
        deadline = attach_everywhere(runtime.requests, self._attach, timeout)
        self._records = self._snapshot(max(0.001, deadline - runtime.clock.monotonic()))

    def _snapshot(self, timeout: float) -> Dict[str, Dict[str, Any]]:
        return {k: {r.tag: r.value for r in recs} for k, recs in self._handle._entries(timeout).items()}

    def _attach_and_resync(self, conn: Connection) -> None:
        try:
            self._attach(conn, self._registry.request_timeout)
        except TopGunError as exc:
            log.info("OR-map subscription %s could not subscribe on %r: %s", self.sub_id[:8], conn, exc)
            return
        self._resync()

    def _resync(self) -> None:
        """Take a new snapshot and report its differences as changes (after a reconnect or a new map)."""
        if self.closed:
            return
        try:
            done = self._reread(None, lambda: self._snapshot(self._registry.request_timeout))
        except TopGunError as exc:
            log.info("OR-map subscription %s could not resync: %s", self.sub_id[:8], exc)
            return
        if done:
            self.resyncs += 1

    def _reread(self, scope: Optional[str], read: Callable[[], Dict[str, Dict[str, Any]]]) -> bool:
        """Fold what ``read()`` returns (key -> tag -> value; every key, or only ``scope``) into the view.

        The reply may be older than events handled while it was on its way (the reader goes on
        dispatching them before this greenlet resumes): it decides only about the tags known
        before the read was sent (gone from it: removed), and it adds none that an event
        removed meanwhile; tags added meanwhile stay. False if the subscription closed meanwhile.
        """
        known = {k: set(tags) for k, tags in self._records.items() if scope is None or k == scope}
        watch = _Reread(scope)
        self._rereads.append(watch)
        try:
            server = read()
        finally:
            self._rereads.remove(watch)
        if self.closed:
            return False
        for key in (set(self._records) | set(server)) if scope is None else {scope}:
            before, theirs = known.get(key, set()), server.get(key, {})
            now = {t: v for t, v in self._records.get(key, {}).items() if t in theirs or t not in before}
            now.update((t, v) for t, v in theirs.items() if t not in now and (key, t) not in watch.removed)
            self._diff(key, now)
        return True

    def _diff(self, key: str, now: Dict[str, Any]) -> None:
        old = self._records.get(key, {})
        self._records[key] = dict(now)
        for tag, value in old.items():
            if tag not in now:
                self._emit(ORChange(key, value, "REMOVE", tag))
        for tag, value in now.items():
            if tag not in old:
                self._emit(ORChange(key, value, "ADD", tag))
        if not now:
            self._records.pop(key, None)

    # -- events

    def _event(self, ev: m.ServerEvent) -> None:
        if self.closed:
            return
        tags = self._records.setdefault(ev.key, {})
        if ev.event_type == "OR_ADD" and ev.or_record is not None:
            if ev.or_record.tag not in tags:  # in a cluster several nodes may report one add
                tags[ev.or_record.tag] = ev.or_record.value
                self._emit(ORChange(ev.key, ev.or_record.value, "ADD", ev.or_record.tag))
            return
        if ev.or_tag in tags:
            self._emit(ORChange(ev.key, tags.pop(ev.or_tag), "REMOVE", ev.or_tag))
        for watch in self._rereads:
            if watch.scope is None or watch.scope == ev.key:
                watch.removed.add((ev.key, ev.or_tag))
        # 2.2.0 drops more than the tag on a remove (WIRE.md 5.1): ask the server what is left.
        self._registry.runtime.group.spawn(self._refresh, ev.key)

    def _refresh(self, key: str) -> None:
        try:
            self._reread(key, lambda: {key: {r.tag: r.value for r in
                                             self._handle.records(key, timeout=self._registry.request_timeout)}})
        except TopGunError as exc:
            log.info("OR-map subscription %s could not re-read %r: %s", self.sub_id[:8], key, exc)

    def _emit(self, change: ORChange) -> None:
        self._hand_over(change)

    # -- public

    def _detach_all(self) -> None:
        attached, self._attached = self._attached, {}
        for conn, qid in attached.values():
            send_unsubscribe(conn, m.QueryUnsub(qid))

    def _release(self) -> None:
        """Stop receiving changes and unsubscribe on the server (QUERY_UNSUB on every node)."""
        self._detach_all()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "live"
        return f"<ORMapSubscription {self.map_name} {self.sub_id[:8]} {state} keys={len(self._records)}>"
