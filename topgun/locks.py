"""Distributed locks: ``with client.lock(name, ttl=...) as lock:``, shaped like ``threading.Lock``.

The wire is WIRE.md section 13. What the server gives, and what this module adds:

- **No wait queue.** A busy lock is refused at once (LOCK_RELEASED ``success: false``), so
  ``acquire(blocking=True, timeout=t)`` retries with jittered exponential back-off
  (:func:`topgun.retry.retrying`, waking early when the routing changes) until ``t`` runs out
  and then returns False (or raises ``OperationTimeout`` if no server ever answered). No call
  blocks past its deadline: ``timeout=None`` means the client's ``request_timeout``, never
  "for ever".
- **Fencing tokens** (``lock.fencing_token``) grow by one per grant of a name on its node.
  They restart at 1 when the lock's node is replaced (the state is not replicated), so
  compare them only while ``lock.lost`` is False.
- **Held per connection.** The server's holder is a connection and a re-request from it is
  granted again; one client runtime shares connections between its Lock objects, so this
  module also keeps a local claim: a second Lock object of the same name in the same client
  waits like any other contender (locks are not re-entrant, as ``threading.Lock``).
- **Loss is reported, never hidden.** The lock lives only on the node owning its name's
  partition (``topgun.partition_id(name)``) and only as long as the holding connection. The
  lock is *lost* when that connection closes (the server frees it), when ``ttl`` has passed
  since the request was sent (the server frees it then), or when the partition map routes the
  name to another connection (other clients would be granted it there). Then ``lock.lost``
  is True, ``lock.lost_reason`` says why, ``on_lost(lock)`` is called (on a greenlet of the
  client) and ``release()`` raises :class:`~topgun.errors.LockLost`. A lost lock is never
  taken again silently: acquire it again if you still need it.
- A grant that arrives after its request timed out is released at once (the client gave up
  on it, nobody would release it otherwise).

Not in here: routing and failover (``topgun.engine``, ``topgun.cluster``), the dev server's
side (``topgun.server.locks``).
"""
from __future__ import annotations

import logging
import uuid
from typing import Any, Callable, Dict, Optional, Protocol, Set

import gevent

from . import threads
from .config import RetryPolicy
from .engine.requests import RequestRunner
from .errors import (
    ClientClosed,
    ConfigurationError,
    ConnectionLost,
    LockLost,
    LockNotHeld,
    OperationTimeout,
    RemoteProtocolError,
    TopGunError,
)
from .protocol import messages as m
from .retry import retrying
from .topics import check_name
from .transport.connection import Connection

log = logging.getLogger(__name__)

__all__ = ["Lock", "LockRegistry", "BUSY_BACKOFF_S", "BUSY_MAX_BACKOFF_S"]

BUSY_BACKOFF_S = 0.02       # first back-off after a refusal (full jitter, doubling)
BUSY_MAX_BACKOFF_S = 0.5    # the longest back-off between tries of a busy lock


class _Busy(TopGunError):
    retryable = True  # tried again by retrying() until the deadline


class _Routing:
    """The provider's routing version as a :class:`topgun.retry.Versioned`."""

    def __init__(self, provider: Any) -> None:
        self._provider = provider

    @property
    def version(self) -> int:
        return self._provider.routing_version  # type: ignore[no-any-return]

    def wait_for_change(self, since: int, timeout: float) -> bool:
        return self._provider.wait_for_change(since, timeout)  # type: ignore[no-any-return]


class LockRegistry:
    """The locks of one client runtime; a ``ProviderListener`` of its provider.

    Args:
        requests: routes and retries LOCK_REQUEST / LOCK_RELEASE.
        home: where blocking calls run.
        spawn: starts a greenlet owned by the runtime (ttl timers, on_lost callbacks).
    """

    def __init__(self, requests: RequestRunner, *, home: threads.Home,
                 spawn: Callable[..., gevent.Greenlet]) -> None:
        self.requests = requests
        self.home = home
        self._spawn = spawn
        self.claims: Dict[str, "Lock"] = {}     # name -> the Lock of ours holding or acquiring it
        self._abandoned: Set[str] = set()       # request ids whose reply nobody waits for any more
        self._closed = False

    @property
    def clock(self) -> Any:
        return self.requests.clock

    @property
    def request_timeout(self) -> float:
        return self.requests.request_timeout

    def try_acquire(self, lock: "Lock", ttl_ms: Optional[int], remaining: float) -> bool:
        """One LOCK_REQUEST; True if granted. Refused when another Lock of ours claims the name."""
        if self._closed or self.requests.closed:
            raise ClientClosed("the client is closed")
        name = lock.name
        if self.claims.get(name, lock) is not lock:
            return False
        self.claims[name] = lock
        request_id = uuid.uuid4().hex
        where: Dict[str, Any] = {}

        def attempt(conn: Connection, left: float) -> m.Message:
            sent = self.clock.monotonic()
            try:
                reply = conn.request(m.LockRequest(request_id, name, ttl_ms), left)
            except OperationTimeout:
                self._abandoned.add(request_id)  # a late grant is released on arrival
                raise
            where.update(conn=conn, sent=sent)
            return reply

        granted = False
        try:
            reply = self.requests.call(attempt, key=name, timeout=remaining)
            if isinstance(reply, m.LockGranted):
                lock._granted(where["conn"], reply.fencing_token, where["sent"])
                granted = True
            elif not isinstance(reply, m.LockReleased):
                raise RemoteProtocolError(f"expected LOCK_GRANTED or LOCK_RELEASED, got {reply.TYPE}")
            return granted
        finally:
            if not granted and self.claims.get(name) is lock:
                del self.claims[name]

    def release(self, lock: "Lock", conn: Connection, token: int, timeout: float) -> bool:
        """LOCK_RELEASE on the holding connection; True if the server still had it."""
        try:
            reply = conn.request(m.LockRelease(lock.name, token, uuid.uuid4().hex), timeout)
        finally:
            if self.claims.get(lock.name) is lock:
                del self.claims[lock.name]
        return bool(getattr(reply, "success", False))

    def lose(self, lock: "Lock", reason: str) -> None:
        if self.claims.get(lock.name) is lock:
            del self.claims[lock.name]
        if lock._lose(reason):
            self._spawn(lock._notify)

    def spawn_timer(self, fn: Callable[[], None], delay: float) -> None:
        def later() -> None:
            self.clock.sleep(max(0.0, delay))
            fn()
        self._spawn(later)

    def close(self) -> None:
        self._closed = True
        for lock in list(self.claims.values()):
            conn, token = lock._conn, lock.fencing_token
            if conn is not None and token is not None and conn.is_open:
                try:
                    conn.send(m.LockRelease(lock.name, token, uuid.uuid4().hex))
                except TopGunError:
                    pass  # the connection is going away, and the server frees the lock with it
            self.lose(lock, "the client was closed")

    def __len__(self) -> int:
        return len(self.claims)

    # ProviderListener ------------------------------------------------------------------

    def on_connected(self, conn: Connection) -> None:
        self._check_routes()

    def on_map_updated(self, version: int) -> None:
        self._check_routes()

    def _check_routes(self) -> None:
        provider = self.requests.provider
        for lock in list(self.claims.values()):
            held_on = lock._conn
            if held_on is None:
                continue  # still acquiring: the attempt routes afresh
            try:
                now = provider.connection_for_key(lock.name)
            except TopGunError:
                continue  # no route right now; a lost connection is reported by on_disconnected
            if now is not held_on and (now.node_id != held_on.node_id or not held_on.is_open):
                # Another node owns the name now: others get the lock there. Free ours, report it.
                # (Another connection to the same node is harmless: that node still knows our hold.)
                try:
                    if held_on.is_open and lock.fencing_token is not None:
                        held_on.send(m.LockRelease(lock.name, lock.fencing_token, uuid.uuid4().hex))
                except TopGunError:
                    pass
                self.lose(lock, f"the partition map moved lock {lock.name!r} to another node")

    def on_disconnected(self, conn: Connection, exc: Optional[BaseException]) -> None:
        for lock in list(self.claims.values()):
            if lock._conn is conn:
                self.lose(lock, f"the connection to {conn.node_id or conn.url} holding it was lost"
                                + (f" ({exc})" if exc else ""))

    def on_message(self, conn: Connection, msg: m.Message) -> None:
        if isinstance(msg, m.LockGranted) and msg.request_id in self._abandoned:
            self._abandoned.discard(msg.request_id)
            log.info("releasing lock %r granted after its request timed out", msg.name)
            try:
                conn.send(m.LockRelease(msg.name, msg.fencing_token, uuid.uuid4().hex))
            except TopGunError:
                pass  # the server frees it with the connection

    def __repr__(self) -> str:
        return f"<LockRegistry held={len(self.claims)}{' closed' if self._closed else ''}>"


class _Source(Protocol):
    @property
    def runtime(self) -> Any: ...


class Lock:
    """A distributed lock. Obtain it with ``client.lock(name, ttl=..., on_lost=...)``.

    Args:
        name: 1-256 characters of ``[A-Za-z0-9_-.:/]`` (the server's rule, checked here).
        ttl: seconds after which the server frees the lock by itself (None: held until
            released or until the holding connection closes).
        on_lost: ``on_lost(lock)`` when a held lock is lost (see the module docs).

    Raises:
        ConfigurationError: a bad name or ttl.
    """

    def __init__(self, client: _Source, name: str, *, ttl: Optional[float] = None,
                 on_lost: Optional[Callable[["Lock"], None]] = None) -> None:
        self._client = client
        self.name = check_name(name, "lock")
        if ttl is not None and (isinstance(ttl, bool) or not isinstance(ttl, (int, float))
                                or not 0.001 <= ttl < 1e9):
            raise ConfigurationError(f"ttl must be a number of seconds >= 0.001 (or None), got {ttl!r}")
        self.ttl = ttl
        self.on_lost = on_lost
        self.fencing_token: Optional[int] = None
        self.lost = False
        self.lost_reason: Optional[str] = None
        self.lost_at: Optional[float] = None
        self._conn: Optional[Connection] = None
        self._grant = 0  # counts grants, so a ttl timer of an earlier one does nothing

    @property
    def runtime(self) -> Any:
        return self._client.runtime

    # called by the registry ----------------------------------------------------------

    def _granted(self, conn: Connection, token: int, sent: float) -> None:
        self._conn, self.fencing_token = conn, token
        self.lost, self.lost_reason, self.lost_at = False, None, None
        self._grant += 1
        if self.ttl is not None:
            grant, registry = self._grant, self._client.runtime.locks

            def expire() -> None:
                if self._grant == grant and self._conn is not None:
                    registry.lose(self, f"its ttl of {self.ttl:.3g}s ran out")
            # Measured from sending the request: the server's ttl cannot have started earlier.
            registry.spawn_timer(expire, sent + self.ttl - registry.clock.monotonic())

    def _lose(self, reason: str) -> bool:
        if self._conn is None:
            return False
        self._conn = None
        self.lost, self.lost_reason = True, reason
        self.lost_at = self._client.runtime.clock.monotonic()
        log.warning("lock %r lost: %s", self.name, reason)
        return True

    def _notify(self) -> None:
        if self.on_lost is None:
            return
        try:
            self.on_lost(self)
        except Exception:  # user code must not break the client
            log.exception("on_lost callback of lock %r failed", self.name)

    # public --------------------------------------------------------------------------

    def locked(self) -> bool:
        """True while this handle holds the lock and it was not lost."""
        return self._conn is not None

    @threads.blocking()
    def acquire(self, blocking: bool = True, timeout: Optional[float] = None) -> bool:
        """Take the lock; True once granted, False if it stayed busy until ``timeout``.

        Args:
            blocking: False tries once (``timeout`` then bounds that one round trip).
            timeout: seconds to keep trying (default: the client's ``request_timeout``).

        Raises:
            ConfigurationError: a bad timeout.
            ClientClosed: the client is closed.
            OperationTimeout: no answer at all within ``timeout`` (no connection, or the
                server is silent): not "busy", nobody could say.
            ClusterUnavailable: no node for the name was reachable before the deadline.
        """
        runtime = self._client.runtime
        registry: LockRegistry = runtime.locks
        timeout = runtime.request_timeout if timeout is None else timeout
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout < 0:
            raise ConfigurationError(f"timeout must be a number of seconds >= 0, got {timeout!r}")
        ttl_ms = None if self.ttl is None else max(1, int(self.ttl * 1000))
        clock = runtime.clock
        deadline = clock.monotonic() + timeout

        refused = [False]   # once someone said "busy", running out of time means busy, not unreachable

        def attempt() -> bool:
            remaining = deadline - clock.monotonic()
            if remaining <= 0:
                if refused[0]:
                    raise _Busy(f"lock {self.name!r} is held by someone else")
                raise OperationTimeout(f"no answer about lock {self.name!r} within {timeout:.3g}s")
            try:
                granted = registry.try_acquire(self, ttl_ms, remaining)
            except OperationTimeout:
                if refused[0]:
                    raise _Busy(f"lock {self.name!r} is held by someone else") from None
                raise
            if not granted:
                refused[0] = True
                raise _Busy(f"lock {self.name!r} is held by someone else")
            return True

        try:
            if not blocking or timeout == 0:
                return attempt()
            provider = registry.requests.provider
            policy = RetryPolicy(max_attempts=1_000_000_000, backoff_s=BUSY_BACKOFF_S,
                                 max_backoff_s=BUSY_MAX_BACKOFF_S, deadline_s=max(timeout, 0.001))
            return retrying(_Routing(provider), policy, clock, provider.request_refresh,
                            deadline=deadline)(attempt)
        except _Busy:
            return False

    @threads.blocking()
    def release(self, *, timeout: Optional[float] = None) -> None:
        """Give the lock back.

        Raises:
            LockLost: the lock was lost while held (see ``lost_reason``), the server no longer
                had it (its ttl ran out), or the connection dropped around the release; what it
                protected may have had another holder.
            LockNotHeld: this handle does not hold the lock.
            OperationTimeout: no answer within ``timeout``; the lock counts as lost.
        """
        runtime = self._client.runtime
        registry: LockRegistry = runtime.locks
        conn, token = self._conn, self.fencing_token
        if conn is None or token is None:
            if self.lost:
                reason, lost_at = self.lost_reason or "lost", self.lost_at
                self.lost = False  # reported once: the handle can be acquired again
                raise LockLost(f"lock {self.name!r} was lost while held: {reason}", reason=reason, lost_at=lost_at)
            raise LockNotHeld(f"lock {self.name!r} is not held by this handle")
        self._conn, self._grant = None, self._grant + 1
        try:
            success = registry.release(self, conn, token, runtime.request_timeout if timeout is None else timeout)
        except ConnectionLost as exc:
            # The server freed it with the connection, but maybe before release() was called:
            # the protected work may have overlapped another holder's. Say so.
            raise LockLost(f"lock {self.name!r}: its connection was lost around the release",
                           reason="connection lost", lost_at=runtime.clock.monotonic()) from exc
        except OperationTimeout:
            self.lost, self.lost_reason, self.lost_at = True, "no answer to LOCK_RELEASE", runtime.clock.monotonic()
            raise
        if not success:
            raise LockLost(f"the server no longer held lock {self.name!r} (token {token}); its ttl may have run out",
                           reason="the server no longer held it", lost_at=runtime.clock.monotonic())

    def __enter__(self) -> "Lock":
        if not self.acquire():
            raise OperationTimeout(f"lock {self.name!r} stayed busy for {self._client.runtime.request_timeout:.3g}s")
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()

    def __repr__(self) -> str:
        state = "held" if self._conn is not None else ("lost" if self.lost else "free")
        return f"<Lock {self.name} {state} token={self.fencing_token}>"
