"""Connection: one transport, one reader greenlet, replies matched to requests by content.

Contract:
- ``open()`` connects and finishes the TopGun handshake before returning: it sends a PING;
  a PONG means the server needs no auth, an ``AUTH_REQUIRED`` (which a JWT server sends the
  moment the socket opens, dropping everything else until AUTH) means we authenticate.
  So no-auth servers cost one round trip, not an ``auth_wait`` guess.
- ``request(msg, timeout)`` returns the reply or raises ``OperationTimeout`` /
  ``ConnectionLost`` / a ``ServerError``; it never waits past its timeout.
- A request given up on (``abandon``: its timeout passed) stays registered until its reply
  comes or ``late_reply_s`` (5 s) passes, so a late reply is taken by it, never by a newer request
  of the same key; ``fresh_request`` waits such a request out first. Replies are matched by
  content (a map name, a Merkle path), so without this a read made after a timed-out one
  could return the older reply, computed before the read began. The late reply also goes to
  ``on_message``, as a push would: the structures act on replies nobody waits for (a lock
  granted too late is released, a counter's state is merged).
- When the reader ends (peer closed, error, ``close()``), every pending request fails with
  ``ConnectionLost`` and ``on_closed(conn, exc)`` is called once.
- Messages that answer no pending request (pushes) go to ``on_message(conn, msg)``; a
  PARTITION_MAP always does, also when it answered a request.
- An optional heartbeat sends PING every ``ping_interval`` seconds and closes the
  connection when no PONG comes back within ``ping_timeout``: that is how a hung peer is
  noticed.
- Each frame sent or received is logged at DEBUG by type and size only (never its content:
  that would put tokens and values in logs); the check costs one ``isEnabledFor`` per frame.
Not in here: reconnecting (the owner of the connection decides), routing, retries.
"""
from __future__ import annotations

import itertools
import logging
from collections import OrderedDict
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple
from urllib.parse import urlsplit

import gevent
from gevent.event import AsyncResult, Event

from ..clock import Clock, GeventClock
from ..errors import (
    AuthError,
    ConnectionLost,
    ConnectTimeout,
    OperationTimeout,
    RemoteProtocolError,
    TokenProviderError,
    TopGunError,
    describe,
    server_error,
)
from ..protocol import codec, correlate, jwtpeek
from ..protocol import messages as m
from .base import Transport
from .websocket import path_hint

log = logging.getLogger(__name__)

__all__ = ["Connection", "TransportFactory"]

TransportFactory = Callable[[str, float], Transport]
TokenSource = Any  # None | str | Callable[[], str | None]

_ids = itertools.count(1)

# How long a timed-out request's reply is still expected (then it is forgotten). Neither server
# answers later than about this after receiving a request, unless its process is paused: 2.2.0
# drops a request after its 5 s operation timeout (WIRE.md 15.1) and a dev-cluster node gives up
# on a forwarded one after 3 s. It is also the most a request the server dropped delays later
# requests of its key on this connection (a fresh request waits it out, then asks anyway).
LATE_REPLY_S = 5.0


def _default_factory(url: str, timeout: float) -> Transport:
    from .websocket import WebSocketTransport
    return WebSocketTransport.connect(url, timeout)


class Connection:
    """A handshaken TopGun connection with its own reader greenlet."""

    def __init__(self, url: str, *, clock: Optional[Clock] = None, token: TokenSource = None,
                 connect_timeout: float = 5.0, node_id: Optional[str] = None,
                 on_message: Optional[Callable[["Connection", m.Message], None]] = None,
                 on_closed: Optional[Callable[["Connection", Optional[BaseException]], None]] = None,
                 spawn: Callable[..., gevent.Greenlet] = gevent.spawn,
                 transport_factory: Optional[TransportFactory] = None,
                 ping_interval: Optional[float] = 5.0, ping_timeout: float = 15.0,
                 late_reply_s: float = LATE_REPLY_S) -> None:
        self.url = url
        self.node_id = node_id
        self.clock = clock or GeventClock()
        self.cid = next(_ids)
        self._token = token
        self._connect_timeout = connect_timeout
        self._on_message = on_message
        self._on_closed = on_closed
        self._spawn = spawn
        self._factory = transport_factory or _default_factory
        self._ping_interval = ping_interval
        self._ping_timeout = ping_timeout
        self._transport: Optional[Transport] = None
        self._pending: Dict[correlate.Key, AsyncResult] = {}
        self._late_reply_s = late_reply_s
        # key -> (result, given up until), oldest first
        self._abandoned: OrderedDict[correlate.Key, Tuple[AsyncResult, float]] = OrderedDict()
        self._auth_required = Event()
        self._closed = Event()
        self._close_reason: Optional[BaseException] = None
        self._reader: Optional[gevent.Greenlet] = None
        self._heart: Optional[gevent.Greenlet] = None
        self.user_id: Optional[str] = None
        self.authenticated = False
        self.last_received = 0.0

    # ------------------------------------------------------------------ lifecycle

    def open(self) -> "Connection":
        """Connect and handshake. Raises ConnectTimeout, ConnectionLost or AuthError."""
        deadline = self.clock.monotonic() + self._connect_timeout
        self._transport = self._factory(self.url, self._connect_timeout)
        self._reader = self._spawn(self._read_loop)
        try:
            self._handshake(deadline)
        except BaseException:
            self.close()
            raise
        if self._ping_interval:
            self._heart = self._spawn(self._heartbeat)
        log.info("connected %r", self)
        return self

    def _handshake(self, deadline: float) -> None:
        ping = m.Ping(self.clock.now_ms())
        pong = self.expect(correlate.request_key(ping))  # type: ignore[arg-type]
        self.send(ping)
        ready = gevent.wait([pong, self._auth_required, self._closed], timeout=self._remaining(deadline),
                            count=1)
        if self._closed.is_set():
            hint = "" if urlsplit(self.url).path in ("/ws", "/") else f" ({path_hint(self.url)})"
            raise ConnectionLost(f"{self.url} closed during the handshake{hint}") from self._close_reason
        if not ready:
            raise ConnectTimeout(f"{self.url}: no answer to the handshake within {self._connect_timeout:.1f}s")
        if not self._auth_required.is_set():
            self.authenticated = True
            return
        token = self._resolve_token()
        try:
            reply = self.request(m.Auth(token, protocol_version=1), timeout=self._remaining(deadline))
        except OperationTimeout:
            raise ConnectTimeout(f"{self.url}: no AUTH_ACK within {self._connect_timeout:.1f}s") from None
        except ConnectionLost as exc:
            raise AuthError("the server closed the connection during authentication") from exc
        if isinstance(reply, m.AuthFail):
            kind, message = jwtpeek.explain_refusal(token, reply.error, self.clock.now_ms() / 1000.0)
            raise AuthError(message, code=reply.code, details={"reason": kind, "server": reply.error})
        self.user_id = getattr(reply, "user_id", None)
        self.authenticated = True

    def _resolve_token(self) -> str:
        token = self._token
        if callable(token):
            try:
                token = token()
            except Exception as exc:  # the user's code: reconnecting must outlive whatever it raises
                name = getattr(self._token, "__qualname__", type(self._token).__name__)
                raise TokenProviderError(f"the token provider {name}() raised {describe(exc)}") from exc
        if not token:
            raise AuthError(f"{self.url} requires authentication and no token was given (token=)")
        if not isinstance(token, str):
            raise AuthError(f"the token provider returned {type(token).__name__}, not str")
        return token

    def _remaining(self, deadline: float) -> float:
        return max(0.0, deadline - self.clock.monotonic())

    def close(self, reason: Optional[BaseException] = None) -> None:
        """Close the transport; pending requests fail with ConnectionLost."""
        if self._close_reason is None:
            self._close_reason = reason
        transport = self._transport
        if transport is not None:
            try:
                transport.close()
            except Exception:  # closing a broken socket may fail again; it is closed either way
                log.debug("error closing %r", self, exc_info=True)
        if self._reader is None or self._reader.dead:
            self._finish()
        if self._heart is not None and self._heart is not gevent.getcurrent():
            self._heart.kill(block=False)

    @property
    def is_open(self) -> bool:
        return self._transport is not None and not self._closed.is_set()

    @property
    def closed_event(self) -> Event:
        return self._closed

    def wait_closed(self, timeout: Optional[float] = None) -> bool:
        return self._closed.wait(timeout)

    # ------------------------------------------------------------------ sending

    def send(self, msg: m.Message) -> None:
        self.send_raw(codec.encode(msg))

    def send_raw(self, data: bytes) -> None:
        self.send_raw_many([data])

    def send_raw_many(self, frames: List[bytes]) -> None:
        """Encoded messages in one write (see ``Transport.send_many``); socket errors become ConnectionLost."""
        transport = self._open_transport()
        if log.isEnabledFor(logging.DEBUG):
            log.debug("#%d -> %d bytes to %s", self.cid, sum(map(len, frames)), self.url)
        try:
            transport.send_many(frames)
        except TopGunError:
            raise
        except Exception as exc:  # socket errors surface as ConnectionLost
            raise ConnectionLost(f"send to {self.url} failed: {exc}") from exc

    def _open_transport(self) -> Transport:
        transport = self._transport
        if transport is None or self._closed.is_set():
            raise ConnectionLost(f"{self.url} is not connected")
        return transport

    def expect(self, key: correlate.Key) -> AsyncResult:
        """Register interest in the reply with ``key`` (before sending the request)."""
        if self._closed.is_set():
            raise ConnectionLost(f"{self.url} is not connected")
        result = self._pending.get(key)
        if result is None:
            result = self._pending[key] = AsyncResult()
        return result

    def forget(self, key: correlate.Key, result: Optional[AsyncResult] = None) -> None:
        """Stop expecting the reply of ``key`` (``result``'s, if given): one that still comes is a push.

        Only for requests whose reply cannot come (the send failed) or cannot be mistaken for
        another's (unique ids); a request that timed out is :meth:`abandon`-ed instead.
        """
        if result is None or self._pending.get(key) is result:
            self._pending.pop(key, None)

    def abandon(self, key: correlate.Key, result: AsyncResult) -> None:
        """Nobody waits for ``result`` any more, but its reply may still come: keep it registered.

        Until that reply comes (``result`` takes it) or ``late_reply_s`` passes, a newer
        request of ``key`` cannot take it: :meth:`fresh_request_async` waits this one out
        first. Each call also forgets requests abandoned longer ago than that.
        """
        now = self.clock.monotonic()
        # Oldest first (each entry is moved to the end when set), so the sweep stops at the
        # first one still due: a walk abandoning 4,096 requests must not look at all the others
        # each time (that was seconds of CPU with the hub blocked). Answered ones left already.
        abandoned = self._abandoned
        while abandoned:
            k, (r, until) = next(iter(abandoned.items()))
            if until > now:
                break
            del abandoned[k]
            if self._pending.get(k) is r:
                del self._pending[k]
        if not result.ready() and self._pending.get(key) is result:
            abandoned[key] = (result, now + self._late_reply_s)
            abandoned.move_to_end(key)

    def request_async(self, msg: m.Message, key: Optional[correlate.Key] = None) -> AsyncResult:
        key = key or correlate.request_key(msg)
        if key is None:
            raise ValueError(f"{msg.TYPE} gets no reply; use send()")
        shared = key in self._pending     # another request's result, which it still waits for
        result = self.expect(key)
        try:
            self.send(msg)
        except BaseException:
            if not shared:
                self.forget(key, result)
            raise
        return result

    def fresh_request_async(self, msg: m.Message, deadline: float) -> AsyncResult:
        """``request_async``, once a request of the same key already in flight is answered.

        For replies matched by their content alone (a Merkle path, a map name): ours would
        share the earlier request's reply, which the server may have computed before this
        call began, i.e. a value older than a write acknowledged meanwhile (a stale read).

        Raises:
            OperationTimeout: that earlier request is still unanswered at ``deadline``
                (``clock.monotonic()``).
        """
        return self.fresh_requests_async([msg], deadline)[0]

    def fresh_requests_async(self, msgs: Sequence[m.Message], deadline: float) -> List[AsyncResult]:
        """:meth:`fresh_request_async` for several requests of distinct keys, sent in one write.

        A point read's four Merkle requests, or a walk's fan-out, then cost one ``send`` (and
        one wake-up of the node) instead of one each. Nothing is sent until every earlier
        request of these keys is answered.

        Raises:
            OperationTimeout: as :meth:`fresh_request_async`; then nothing was sent.
            ConnectionLost: the write failed; nothing stays registered.
        """
        keys = [correlate.request_key(msg) for msg in msgs]
        for msg, key in zip(msgs, keys):
            if key is None:
                raise ValueError(f"{msg.TYPE} gets no reply; use send()")
        # Waiting out one key lets other greenlets run, which may send a request of a key
        # already waited out (or two waiters woken by one reply may both go): check again until
        # none is pending. ``expect`` would hand out that request's result, and the reply to ours
        # would then answer a later request (a stale read). Bounded by ``deadline``: a pass
        # waits; one that starts after it and still finds a request due raises.
        passes = 0
        while busy := [(msg, key) for msg, key in zip(msgs, keys) if key in self._pending]:
            if passes and self.clock.monotonic() >= deadline:
                raise OperationTimeout(f"an earlier {busy[0][0].TYPE} of the same key to {self.url} "
                                       "is still unanswered")
            passes += 1
            for msg, key in busy:
                self._wait_out(msg, key, deadline)
        results = [self.expect(key) for key in keys]  # type: ignore[arg-type]
        try:
            self.send_raw_many([codec.encode(msg) for msg in msgs])
        except BaseException:
            for key, result in zip(keys, results):
                self.forget(key, result)  # type: ignore[arg-type]
            raise
        return results

    def _wait_out(self, msg: m.Message, key: correlate.Key, deadline: float) -> None:
        """Wait once for the request of ``key`` still pending (one given up on: at most until ``late_reply_s``)."""
        earlier = self._pending.get(key)
        if earlier is None:             # answered while another key was waited for
            return
        gave_up = self._abandoned.get(key)
        until = gave_up[1] if gave_up is not None and gave_up[0] is earlier else None
        earlier.wait(max(0.0, min(deadline, until if until is not None else deadline) - self.clock.monotonic()))
        if not earlier.ready():
            if until is None or self.clock.monotonic() < until:
                raise OperationTimeout(f"an earlier {msg.TYPE} of the same key to {self.url} is still unanswered")
            self.forget(key, earlier)   # its reply is no longer expected

    def fresh_request(self, msg: m.Message, timeout: float) -> m.Message:
        """``request``, after any request of the same key in flight (see :meth:`fresh_request_async`)."""
        deadline = self.clock.monotonic() + timeout
        key = correlate.request_key(msg)
        result = self.fresh_request_async(msg, deadline)
        try:
            return result.get(timeout=max(0.0, deadline - self.clock.monotonic()))  # type: ignore[no-any-return]
        except gevent.Timeout:
            self.abandon(key, result)  # type: ignore[arg-type]
            raise OperationTimeout(f"no reply to {msg.TYPE} from {self.url} within {timeout:.3g}s") from None

    def request(self, msg: m.Message, timeout: float, key: Optional[correlate.Key] = None) -> m.Message:
        """Send ``msg`` and wait for its reply. Raises OperationTimeout after ``timeout`` s."""
        key = key or correlate.request_key(msg)
        result = self.request_async(msg, key)
        try:
            return result.get(timeout=timeout)  # type: ignore[no-any-return]
        except gevent.Timeout:
            self.abandon(key, result)  # type: ignore[arg-type]
            raise OperationTimeout(f"no reply to {msg.TYPE} from {self.url} within {timeout:.3g}s") from None

    @property
    def pending_count(self) -> int:
        """Requests somebody still waits for (abandoned ones, whose late reply is only expected, excluded)."""
        return len(self._pending) - sum(1 for k, (r, _) in self._abandoned.items() if self._pending.get(k) is r)

    # ------------------------------------------------------------------ reading

    def _read_loop(self) -> None:
        reason: Optional[BaseException] = None
        transport = self._transport
        assert transport is not None
        try:
            while True:
                data = transport.recv()
                if data is None:
                    break
                self.last_received = self.clock.monotonic()
                try:
                    msg = codec.decode(data)
                except RemoteProtocolError as exc:
                    log.warning("dropping undecodable frame from %s: %s", self.url, exc)
                    continue
                if log.isEnabledFor(logging.DEBUG):
                    log.debug("#%d <- %s, %d bytes from %s", self.cid, msg.TYPE, len(data), self.url)
                self._dispatch(msg)
        except gevent.GreenletExit:
            pass
        except Exception as exc:  # the transport already translated socket errors
            reason = exc
            log.debug("reader of %r ended: %s", self, exc)
        finally:
            if self._close_reason is None:
                self._close_reason = reason
            self._finish()

    def _dispatch(self, msg: m.Message) -> None:
        if isinstance(msg, m.Error):
            self._on_error(msg)
            return
        if isinstance(msg, m.AuthRequired):
            self._auth_required.set()
            return
        key = correlate.reply_key(msg)
        waiter = self._pending.pop(key, None) if key is not None else None
        if waiter is not None:
            waiter.set(msg)
            if not self._late(key, waiter) and not isinstance(msg, m.PartitionMap):
                return
        if self._on_message is not None:
            try:
                self._on_message(self, msg)
            except Exception:  # a buggy callback must not kill the reader
                log.exception("on_message callback failed for %s", msg.TYPE)

    def _on_error(self, msg: m.Error) -> None:
        exc = server_error(msg.code, msg.message or f"server error {msg.code}", msg.details)
        key = correlate.error_key(msg)
        waiter = self._pending.pop(key, None) if key is not None else None
        if waiter is not None:
            waiter.set_exception(exc)
            if not self._late(key, waiter):
                return
        log.warning("server %s sent ERROR %s: %s", self.url, msg.code, msg.message)
        if self._on_message is not None:
            self._on_message(self, msg)

    def _late(self, key: Optional[correlate.Key], waiter: AsyncResult) -> bool:
        """Whether ``waiter`` was abandoned (then its reply is a push as well: nobody waits for it)."""
        if key is None or self._abandoned.get(key, (None, 0.0))[0] is not waiter:
            return False
        del self._abandoned[key]
        return True

    def _finish(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        reason = self._close_reason
        lost = ConnectionLost(f"connection to {self.url} lost" + (f": {reason}" if reason else ""))
        pending, self._pending = self._pending, {}
        self._abandoned.clear()
        for result in pending.values():
            result.set_exception(lost)
        if self._transport is not None:
            try:
                self._transport.close()
            except Exception:
                log.debug("error closing transport of %r", self, exc_info=True)
        log.info("closed %r (%s)", self, reason or "clean")
        if self._on_closed is not None:
            try:
                self._on_closed(self, reason)
            except Exception:
                log.exception("on_closed callback failed")

    def _heartbeat(self) -> None:
        interval = self._ping_interval or 5.0
        while not self._closed.is_set():
            if self._closed.wait(interval):
                return
            try:
                self.request(m.Ping(self.clock.now_ms()), timeout=self._ping_timeout)
            except OperationTimeout:
                log.warning("no PONG from %s within %.1fs: closing", self.url, self._ping_timeout)
                self.close(ConnectionLost("heartbeat timed out"))
                return
            except TopGunError:
                return

    def __repr__(self) -> str:
        state = "open" if self.is_open else "closed"
        node = f" {self.node_id}" if self.node_id else ""
        return f"<Connection #{self.cid}{node} {self.url} {state} pending={len(self._pending)}>"
