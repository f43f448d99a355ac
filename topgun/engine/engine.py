"""WriteEngine: every write is tracked until its own ack, whatever happens to the connection.

Writes:
- ``submit_put`` queues an LWW write (PUT or REMOVE, with a unique id) and returns a ``PendingWrite``;
  ``submit_many`` queues many checked PUTs sharing one deadline (put_all), with the per-call work once.
  One flusher greenlet drains the queue: it asks the provider for each key's connection,
  groups the writes per connection and sends one OP_BATCH per group (at most
  ``batch_size`` ops). Writes that pile up while a batch is in flight go out together in
  the next one, so concurrency becomes batching without any timer.
- Coalescing (a Kafka-style linger, bounded): while a connection has
  ``frames_per_connection`` small frames (under ``SMALL_FRAME_OPS`` ops) unacknowledged,
  new writes for it wait and go out together after its next ack. A frame stops holding
  writes back once it is ``LINGER_MAX_S`` old (the reaper's next tick wakes the flusher),
  and larger frames never do, so bulk writes stay pipelined. The flusher runs after the callers an ack completed
  have queued their next writes, so those join the next frame.
- A batch is acknowledged by the OP_ACK carrying its last op's id; only the writes of that
  batch are completed (never cumulatively, never across connections).
- At most one write per key is in flight at a time: the server applies concurrent frames in
  any order, so this is what keeps each key's writes in order. Later writes to a busy key
  wait in the queue, behind it.
- A batch that fails with a retryable error (connection lost, overload, not owner) or
  gets no ack within ``attempt_timeout`` goes back to the front of the queue, in order,
  and is sent again once routing allows; resending is harmless under last-writer-wins.
  A write gives up only at its own deadline (``OperationTimeout``); a write whose
  deadline passed before it was sent is withdrawn, never sent later.
- While no connection is usable, writes stay queued (the offline queue) and go out on
  reconnect.

With durable storage the engine has an ``outbox`` (see :mod:`topgun.storage.outbox`, which states
the hook contract): ``outbox.added(w)`` runs before a write is queued, ``outbox.acked(writes)``
on each OP_ACK. Without it (``outbox`` None, the default) nothing else changes.
Metrics (``metrics=``, see :mod:`topgun.metrics`) are reported once per OP_BATCH sent or
acknowledged and once per failed write, never per successful write.

The engine is one of the provider's listeners (it wakes on connects, disconnects and new
maps, and reads the server's ERROR 429/500 frames); the client starts the provider.

Not in here: requests (reads, queries, map requests: ``requests.py``), the wire shape of ops
and frames (``topgun.protocol.fastpath``), choosing connections (the provider).
"""
from __future__ import annotations

import heapq
import itertools
import logging
from typing import Any, Dict, List, Optional, Protocol, Tuple

import gevent
from gevent.event import AsyncResult, Event
from gevent.pool import Group

from ..clock import Clock
from ..errors import (
    AuthError,
    ClientClosed,
    ConfigurationError,
    LocalProtocolError,
    OperationTimeout,
    ServerOverloaded,
    TokenProviderError,
    TopGunError,
    timed_out,
)
from ..metrics import Metrics
from ..protocol import codec, fastpath
from ..protocol import messages as m
from ..protocol.hlc import HLC
from ..transport.connection import Connection
from .provider import ConnectionProvider
from .writes import PendingWrite, WriteQueue

log = logging.getLogger(__name__)

__all__ = ["WriteEngine", "PendingWrite", "FRAMES_PER_CONNECTION", "SMALL_FRAME_OPS", "LINGER_MAX_S", "WriteHooks"]

#: Small frames of one connection that may be unacknowledged at once before new writes for
#: it wait (and so join fuller frames): per-frame costs dominate one-write-per-call traffic
#: on both sides.
FRAMES_PER_CONNECTION = 1
#: Frames of at least this many ops never hold writes back: their per-frame cost is spread
#: thin already, and bulk writes (put_all) stay pipelined.
SMALL_FRAME_OPS = 64
#: A frame older than this no longer holds writes back, so a write lingers for a slow ack
#: at most this plus one reaper tick (a lost frame is the reaper's business, not the linger's).
LINGER_MAX_S = 0.02


class WriteHooks(Protocol):
    """What the engine tells a durable outbox (``topgun.storage.outbox.Outbox``)."""

    def added(self, w: PendingWrite) -> None: ...
    def acked(self, writes: List[PendingWrite]) -> None: ...


class _Batch:
    __slots__ = ("conn", "writes", "key", "seq", "sent_at", "retry_at", "suspect", "waiter", "first_deadline")

    def __init__(self, conn: Connection, writes: List[PendingWrite], seq: int, sent_at: float,
                 retry_at: float) -> None:
        self.conn = conn
        self.writes = writes
        self.key = fastpath.ack_key(writes[-1].id)
        self.seq = seq            # send order on this engine
        self.sent_at = sent_at
        self.retry_at = retry_at  # when the reaper next asks whether the frame was lost
        self.suspect = False      # the server reported dropping frames after this one was sent
        self.waiter: Optional[AsyncResult] = None
        self.first_deadline = min(w.deadline for w in writes)


class WriteEngine:
    """Queues, batches, sends and tracks writes (a ``ProviderListener`` of its provider)."""

    def __init__(self, provider: ConnectionProvider, *, clock: Clock, write_concern: str = "APPLIED",
                 batch_size: int = 500, max_in_flight: int = 2000, request_timeout: float = 10.0,
                 attempt_timeout: Optional[float] = None, metrics: Optional[Metrics] = None,
                 frames_per_connection: int = FRAMES_PER_CONNECTION) -> None:
        self.provider = provider
        self.metrics = metrics
        self.clock = clock
        self.write_concern = write_concern
        self.batch_size = batch_size
        self.max_in_flight = max_in_flight
        self.request_timeout = request_timeout
        self.attempt_timeout = attempt_timeout or max(0.5, min(2.0, request_timeout / 4))
        self.frames_per_connection = frames_per_connection  # 0: no cap
        self._queue = WriteQueue()
        # Writes are queued in deadline order as long as every write gets the same timeout, and
        # the reaper then only looks at queue fronts. A write with an earlier deadline than one
        # queued before it also goes into this heap, so it still expires on time.
        self._deadlines: List[Tuple[float, int, PendingWrite]] = []
        self._latest_deadline = 0.0
        self._seq = itertools.count()
        # map name -> key -> writes of it in flight (nested, so no tuple per write is kept alive)
        self._busy: Dict[str, Dict[str, int]] = {}
        self._inflight: Dict[int, _Batch] = {}
        self._inflight_ops = 0
        self._wake = Event()
        self._group = Group()
        self._closed = False
        self._pause_until = 0.0
        # Writes wait for a busy connection: they go out with its next ack, or on the reaper's
        # next tick once its frames are older than LINGER_MAX_S (no timer per flush).
        self._lingering = False
        self._ack_latency = 0.05                # moving average of ack latency, seconds
        self._acked_seq: Dict[int, int] = {}    # connection id -> newest acknowledged send order
        self._ids = itertools.count(1)
        self._batch_ids = itertools.count(1)
        self.outbox: Optional[WriteHooks] = None  # set by the runtime with durable storage
        self.stats = {"batches": 0, "ops_sent": 0, "resent": 0, "acked": 0, "timeouts": 0, "server_errors": 0}

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Start the flusher and the reaper (the provider is started by whoever owns it)."""
        self._group.spawn(self._flusher)
        self._group.spawn(self._reaper)

    def close(self, timeout: float = 2.0) -> None:
        if self._closed:
            return
        self._closed = True
        self._wake.set()
        closed = ClientClosed("the client was closed")
        for w in self._queue.drain():
            w.finish(exc=closed)
        for _, _, w in self._deadlines:
            w.finish(exc=closed)
        for batch in list(self._inflight.values()):
            for w in batch.writes:
                w.finish(exc=closed)
        self._inflight.clear()
        self.provider.close()
        self._group.kill(timeout=timeout)

    @property
    def closed(self) -> bool:
        return self._closed

    # ------------------------------------------------------------------ provider listener

    def on_connected(self, conn: Connection) -> None:
        self._wake.set()

    def on_disconnected(self, conn: Connection, exc: Optional[BaseException]) -> None:
        self._wake.set()

    def on_map_updated(self, version: int) -> None:
        self._wake.set()

    def on_message(self, conn: Connection, msg: m.Message) -> None:
        if isinstance(msg, m.Error) and msg.code in (429, 500):
            self.stats["server_errors"] += 1
            self._server_dropped_frames(conn, msg)

    def _server_dropped_frames(self, conn: Connection, msg: m.Error) -> None:
        # The real server's ERROR names no request, and the frame it answers is dropped
        # (possibly half applied). Frames of that connection still unacknowledged a little
        # after their usual ack latency are the dropped ones: resend those, not all.
        now = self.clock.monotonic()
        soon = now + max(0.05, 3 * self._ack_latency)
        for batch in self._inflight.values():
            if batch.conn is conn:
                batch.suspect = True
                batch.retry_at = min(batch.retry_at, soon)
        if msg.code == 429:
            self._pause_until = now + 0.02

    # ------------------------------------------------------------------ writes

    def submit_put(self, map_name: str, key: str, value: Any, ts: Tuple[int, int, str], *,
                   ttl_ms: Optional[int] = None, timeout: Optional[float] = None,
                   op_type: str = "PUT", deadline: Optional[float] = None) -> PendingWrite:
        """Queue one LWW write (``op_type`` PUT or REMOVE); the fast path used by maps.

        ``deadline`` (a ``clock.monotonic()`` value) instead of ``timeout``: many writes that
        share one deadline stay in deadline order, so none of them needs the deadline heap.
        """
        return self._enqueue(PendingWrite(map_name, key, self._deadline(timeout, deadline), op_type, value, ts, ttl_ms))

    def submit_many(self, map_name: str, pairs: List[Tuple[str, Any]], hlc: HLC, deadline: float) -> List[PendingWrite]:
        """Queue a PUT of each (key, value) pair, already checked, all with one ``deadline``.

        What ``submit_put`` does per write is done once per call here: one range of HLC
        timestamps (:meth:`HLC.now_range`), one deadline-order check, one wake-up of the flusher.
        The writes are queued in ``pairs`` order (a key written twice keeps its order).
        """
        if self._closed:
            raise ClientClosed("the client is closed")
        n = len(pairs)
        if not n:
            return []
        first = hlc.now_range(n)
        millis, node_id = hlc.last_millis, hlc.node_id
        outbox = self.outbox
        ids = self._ids
        out: List[PendingWrite] = []
        add = out.append
        try:
            for i, (key, value) in enumerate(pairs):
                w = PendingWrite(map_name, key, deadline, "PUT", value, (millis, first + i, node_id))
                if outbox is not None:
                    outbox.added(w)  # durable before it is queued; raises (and the rest is not queued) if it cannot be
                w.id = str(next(ids))
                add(w)
        finally:
            self._queue.extend(out)
            if out:
                if deadline < self._latest_deadline:
                    for w in out:
                        heapq.heappush(self._deadlines, (deadline, next(self._seq), w))
                else:
                    self._latest_deadline = deadline
                self._wake.set()
        return out

    def _deadline(self, timeout: Optional[float], deadline: Optional[float] = None) -> float:
        if self._closed:
            raise ClientClosed("the client is closed")
        if deadline is not None:
            return deadline
        return self.clock.monotonic() + (timeout if timeout is not None else self.request_timeout)

    def _enqueue(self, w: PendingWrite) -> PendingWrite:
        if self.outbox is not None:
            self.outbox.added(w)  # durable before it is queued; raises (and nothing is queued) if it cannot be
        w.id = str(next(self._ids))
        self._queue.append(w)
        if w.deadline < self._latest_deadline:
            heapq.heappush(self._deadlines, (w.deadline, next(self._seq), w))
        else:
            self._latest_deadline = w.deadline
        self._wake.set()
        return w

    def wait(self, writes: List[PendingWrite]) -> List[Any]:
        """Block until every write is acknowledged; raise the first failure (after its deadline).

        No timer per write: the reaper finishes every write by its deadline (within one tick)
        and ``close()`` finishes the rest, so waiting on the result itself cannot outlive it.
        """
        out = []
        for w in writes:
            if not w.done:
                w.wait_done()
            if w.error is not None:
                raise w.error
            out.append(w.level)
        return out

    def settle(self, writes: List[PendingWrite]) -> None:
        """Wait for every write to finish, ignoring their errors."""
        for w in writes:
            try:
                self.wait([w])
            except TopGunError:
                pass

    def _expire(self, w: PendingWrite) -> None:
        if not w.done:
            self.stats["timeouts"] += 1
            cause = self.provider.last_error
            offline = cause is not None and not self.provider.open_connections()
            what = f"write {w.map_name}/{w.key!r} not acknowledged before its deadline"
            exc: TopGunError
            if offline and isinstance(cause, AuthError) and not isinstance(cause, TokenProviderError):
                exc = AuthError(f"{what}: the server refused the token ({cause})", code=cause.code)
                exc.__cause__ = cause
            else:
                exc = timed_out(what, cause if offline else None)
            self._failed_write(w, exc)

    def _failed_write(self, w: PendingWrite, exc: BaseException) -> None:
        if self.metrics is not None:
            self.metrics.count("topgun.writes.failed", 1, error=type(exc).__name__)
        w.finish(exc=exc)

    def _flusher(self) -> None:
        while not self._closed:
            self._wake.wait()
            # Acks wake us before the callers they complete have run: let those callers
            # queue their next writes first, so they join this frame, not the next one.
            gevent.sleep(0)
            self._wake.clear()
            if self._closed:
                return
            pause = self._pause_until - self.clock.monotonic()
            if pause > 0:
                self.clock.sleep(pause)
            version = self.provider.routing_version
            blocked, self._lingering = self._flush_once()
            if blocked:
                # No connection for some key: wait for routing to change, but not forever,
                # so deadlines keep being checked and a missed event is not fatal.
                self.provider.wait_for_change(version, 0.25)
                self._wake.set()

    def _young_frames(self, now: float) -> Dict[int, int]:
        """connection id -> its unacknowledged small frames sent less than ``LINGER_MAX_S`` ago."""
        young = now - LINGER_MAX_S
        full = min(self.batch_size, SMALL_FRAME_OPS)
        frames: Dict[int, int] = {}
        for batch in self._inflight.values():
            if batch.sent_at > young and len(batch.writes) < full:
                cid = batch.conn.cid
                frames[cid] = frames.get(cid, 0) + 1
        return frames

    def _flush_once(self) -> Tuple[bool, bool]:
        """Send what room allows, partition by partition.

        Returns (blocked, lingering): some key had no connection; some writes wait for a
        connection with ``frames_per_connection`` young frames unacknowledged.
        """
        groups: Dict[int, Tuple[Connection, List[PendingWrite]]] = {}
        blocked = lingering = False
        cap = self.frames_per_connection
        frames = self._young_frames(self.clock.monotonic()) if cap and self._inflight else {}
        room = self.max_in_flight - self._inflight_ops
        busy = self._busy
        queue = self._queue
        route = self.provider.connection_for_key
        batch_size = self.batch_size
        for pid, bucket in queue.partitions():
            if room <= 0:
                break
            held: List[PendingWrite] = []
            popped = 0
            popleft = bucket.popleft
            while bucket and room > 0 and len(held) < batch_size:
                w = popleft()
                popped += 1
                if w.done:
                    continue
                key = w.key
                in_flight = busy.get(w.map_name)
                if in_flight is not None and key in in_flight:  # an earlier write to it is in flight: keep order
                    held.append(w)
                    continue
                try:
                    conn = route(key)
                except TopGunError:
                    held.append(w)  # the partition has no usable owner: try it again later
                    blocked = True
                    break
                group = groups.get(id(conn))
                if group is None:
                    if cap and frames.get(conn.cid, 0) >= cap:
                        held.append(w)  # it joins the frame sent after the next ack
                        lingering = True
                        break
                    groups[id(conn)] = (conn, [w])
                else:
                    group[1].append(w)
                if in_flight is None:
                    busy[w.map_name] = {key: 1}
                else:
                    in_flight[key] = in_flight.get(key, 0) + 1
                room -= 1
            if held:
                bucket.extendleft(reversed(held))
            queue.taken(pid, popped - len(held), bucket, stop_here=room <= 0)
        for conn, writes in groups.values():
            for i in range(0, len(writes), self.batch_size):
                self._send_batch(conn, writes[i:i + self.batch_size])
        return blocked, lingering

    def _encode(self, writes: List[PendingWrite]) -> bytes:
        return codec.encode_op_batch(fastpath.lww_ops(writes), len(writes), self.write_concern)

    def _send_batch(self, conn: Connection, writes: List[PendingWrite]) -> None:
        # Values are first encoded here, once: a value msgpack cannot encode fails its own
        # write only, and a frame over the server's 16 MiB limit is split, not dropped.
        try:
            frame = self._encode(writes)
        except LocalProtocolError:
            self._send_valid(conn, writes)
            return
        if len(frame) > codec.MAX_FRAME_BYTES - 1024:
            if len(writes) == 1:
                self._reject(writes[0], f"the write is {len(frame)} bytes encoded; the server takes "
                                        f"at most {codec.MAX_FRAME_BYTES} per frame")
            else:
                half = len(writes) // 2
                self._send_batch(conn, writes[:half])
                self._send_batch(conn, writes[half:])
            return
        now = self.clock.monotonic()
        bid = next(self._batch_ids)
        batch = _Batch(conn, writes, bid, now, now + self.attempt_timeout)
        try:
            batch.waiter = conn.expect(batch.key)
            self._inflight[bid] = batch
            self._inflight_ops += len(writes)
            conn.send_raw(frame)
        except TopGunError as exc:
            self._batch_failed(bid, exc)
            return
        self.stats["batches"] += 1
        self.stats["ops_sent"] += len(writes)
        if self.metrics is not None:
            self.metrics.gauge("topgun.writes.in_flight", self._inflight_ops)
        batch.waiter.rawlink(lambda result, bid=bid: self._batch_done(bid, result))

    def _send_valid(self, conn: Connection, writes: List[PendingWrite]) -> None:
        good = []
        for w in writes:
            try:
                codec.encode_wire(w.wire())
            except LocalProtocolError as exc:
                self._reject(w, f"value of {w.map_name}/{w.key!r} cannot be stored: {exc}")
            else:
                good.append(w)
        if good:
            self._send_batch(conn, good)

    def _reject(self, w: PendingWrite, message: str) -> None:
        self._unbusy(w)
        self._failed_write(w, ConfigurationError(message))

    def _unbusy(self, w: PendingWrite) -> None:
        in_flight = self._busy.get(w.map_name)
        if in_flight is None:
            return
        n = in_flight.get(w.key, 0) - 1
        if n > 0:
            in_flight[w.key] = n
        else:
            in_flight.pop(w.key, None)

    def _release(self, bid: int) -> Optional[_Batch]:
        batch = self._inflight.pop(bid, None)
        if batch is None:
            return None
        self._inflight_ops -= len(batch.writes)
        busy = self._busy
        for w in batch.writes:  # _unbusy(w), inlined: this runs for every write acknowledged
            in_flight = busy.get(w.map_name)
            if in_flight is not None:
                n = in_flight.get(w.key, 0) - 1
                if n > 0:
                    in_flight[w.key] = n
                else:
                    in_flight.pop(w.key, None)
        self._wake.set()
        return batch

    def _batch_done(self, bid: int, result: AsyncResult) -> None:
        if not result.successful():
            self._batch_failed(bid, result.exception)
            return
        batch = self._release(bid)
        if batch is None:
            return
        took = self.clock.monotonic() - batch.sent_at
        self._ack_latency += 0.1 * (took - self._ack_latency)
        if batch.seq > self._acked_seq.get(batch.conn.cid, 0):
            self._acked_seq[batch.conn.cid] = batch.seq
        level = getattr(result.value, "achieved_level", None) or self.write_concern
        for w in batch.writes:
            w.finish(level)
        if self.outbox is not None:
            try:
                self.outbox.acked(batch.writes)
            except Exception:  # the rows stay: delivered again on the next start (harmless on the dev server)
                log.exception("the outbox could not remove %d acknowledged writes", len(batch.writes))
        self.stats["acked"] += len(batch.writes)
        if self.metrics is not None:
            self.metrics.count("topgun.writes.acked", len(batch.writes))
            self.metrics.observe("topgun.write.batch.duration", took)
            self.metrics.gauge("topgun.writes.in_flight", self._inflight_ops)

    def _batch_failed(self, bid: int, exc: Optional[BaseException]) -> None:
        batch = self._release(bid)
        if batch is None:
            return
        if batch.waiter is not None:
            batch.conn.forget(batch.key, batch.waiter)
        if getattr(exc, "stale_routing", False):
            self.provider.request_refresh()
        if isinstance(exc, ServerOverloaded):
            self._pause_until = self.clock.monotonic() + 0.05
        alive = [w for w in batch.writes if not w.done]
        if exc is not None and not getattr(exc, "retryable", False) and not isinstance(exc, OperationTimeout):
            for w in alive:
                self._failed_write(w, exc)
            return
        log.debug("resending %d writes after %s", len(alive), exc)
        self.stats["resent"] += len(alive)
        if self.metrics is not None:
            self.metrics.count("topgun.writes.resent", len(alive))
        self.provider.note_resent(len(alive))
        # New ids: a late ack of the failed frame must not complete the frame that replaces
        # it, which may hold other writes and end with the same op.
        for w in alive:
            w.id = str(next(self._ids))
        self._queue.push_front(alive)
        self._wake.set()

    def _reaper(self) -> None:
        # The one place deadlines are enforced (``wait`` has no timer of its own), so a bug in
        # one pass must not end it: it is logged and the next pass runs.
        tick = 0.05
        while not self._closed:
            self.clock.sleep(tick)
            try:
                self._reap(self.clock.monotonic())
            except Exception:
                log.exception("write reaper pass failed; continuing")
            if self._lingering:
                self._wake.set()

    def _reap(self, now: float) -> None:
        for bid, batch in list(self._inflight.items()):
            if batch.first_deadline <= now:  # in flight at its deadline: the caller is told now
                for w in batch.writes:
                    if w.deadline <= now:
                        self._expire(w)
            if batch.retry_at <= now:
                self._maybe_lost(bid, batch, now)
        self._queue.expire_fronts(now, self._expire)
        heap = self._deadlines
        while heap and (heap[0][0] <= now or heap[0][2].done):
            self._expire(heapq.heappop(heap)[2])  # withdrawn: the flusher skips done writes

    def _maybe_lost(self, bid: int, batch: _Batch, now: float) -> None:
        """Resend an unacknowledged frame only on evidence that the server lost it.

        A busy server is slow, not lossy: resending what it is still working on only adds
        to its load. Evidence is a later frame of the same connection acknowledged (the
        server runs frames out of order, but not one frame for ever), an ERROR 429/500
        after it was sent, or a stall far past the attempt timeout.
        """
        overtaken = self._acked_seq.get(batch.conn.cid, 0) > batch.seq
        if overtaken or batch.suspect or now - batch.sent_at >= 4 * self.attempt_timeout:
            self._batch_failed(bid, OperationTimeout("no ack within the attempt timeout"))
        else:
            batch.retry_at = now + self.attempt_timeout / 2

    @property
    def queued(self) -> int:
        return self._queue.pending()

    @property
    def in_flight(self) -> int:
        return self._inflight_ops

    def __repr__(self) -> str:
        return (f"<WriteEngine queued={len(self._queue)} in_flight={self._inflight_ops} "
                f"batches={len(self._inflight)} {'closed' if self._closed else 'open'}>")
