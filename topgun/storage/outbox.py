"""The durable outbox: every write is on disk before it can be sent, and leaves only on its ack.

Runs when the storage is durable (``storage=SQLiteStorage(...)`` or a path); with the default
memory storage there is no outbox and the write path is exactly what it was.

**Hooks** (the whole contract with the write engine, so it can be re-applied to a restructured
engine): the engine holds ``outbox`` (None without durable storage) and calls

- ``outbox.added(w)`` for every new ``PendingWrite`` *before* it is queued: the row is committed
  before this returns (or, inside ``with outbox.deferred():``, when the block ends: ``put_all``
  wraps each window in one, one transaction per window). A write is therefore durable before
  the call that made it returns, and before it can be sent, let alone acknowledged. If the
  row cannot be written, ``added`` raises and the write is not queued.
- ``outbox.acked(writes)`` with the writes of every OP_ACK (also writes whose caller gave up):
  their rows go, in one transaction per ack, together with any *older* row of the same key (a
  later write of this client to a key supersedes the earlier ones under last-writer-wins).

Nothing else: failures need no hook. A write that fails without an ack keeps its row, and the
outbox's sweeper (every ``sweep_interval`` seconds) sends it again as a new ``PendingWrite``
with the original HLC timestamp, if it is still the newest row of its key (an older one waits
for the newer one's ack, which supersedes it) and younger than ``max_age``. So with durable
storage an ``OperationTimeout`` on a write means "not delivered yet": the outbox keeps trying,
until the ack or ``max_age``. A value the server can never take (``ConfigurationError``) is
dropped and reported; writes failed by ``close()`` stay for the next start.

**Replay.** ``replay()`` runs when a runtime starts, before the constructor returns and before
any new write can be queued: every row left by an earlier process (crashed, killed, closed with
writes pending) is queued again in ``seq`` order, so per key the old writes go out first and in
order (the engine sends one write per key at a time). Rows past ``max_age`` are dropped instead,
logged as a WARNING, counted, and passed to ``on_dropped``.

What a replayed write does depends on the server (WIRE.md 4.4):

- the **dev server** merges by the write's own HLC timestamp, kept in the row: a replayed write
  that is older than what the key holds now (another client wrote it since) changes nothing,
  and a write delivered twice (acked, then the process died before the row was removed)
  changes nothing the second time;
- the **real 2.2.0 server** re-stamps every write on arrival and the last arrival wins: a
  replayed write *overwrites* whatever the key holds, including a newer value another client
  wrote while this one was down, and one delivered twice is applied twice. ``max_age`` is the
  bound on how stale such an overwrite can be; set it to what your data tolerates.

Not in here: storing rows (the adapters), sending and acks (``topgun.engine``).
"""
from __future__ import annotations

import contextlib
import logging
from collections import deque
from typing import Any, Callable, Deque, Dict, Iterator, List, Optional, Tuple

import gevent
import msgpack
from gevent.pool import Group

from ..clock import Clock
from ..engine.writes import MapKey, PendingWrite
from ..errors import ClientClosed, ConfigurationError, TopGunError
from .base import OutboxRow, StorageAdapter

log = logging.getLogger(__name__)

__all__ = ["Outbox", "decode_value"]

Submit = Callable[[str, str, Any, Tuple[int, int, str], str, float], PendingWrite]
_YIELD_EVERY = 1000


def encode_value(op_type: str, value: Any) -> bytes:
    if op_type == "REMOVE":
        return b""
    try:
        return msgpack.packb(value, use_bin_type=True)  # type: ignore[no-any-return]
    except (TypeError, ValueError, OverflowError) as exc:
        raise ConfigurationError(f"value cannot be stored: {exc}") from exc


def decode_value(row: OutboxRow) -> Any:
    """The value a row holds (None for a REMOVE)."""
    return None if row.op_type == "REMOVE" else msgpack.unpackb(row.value, raw=False)


class Outbox:
    """Rows for the writes of one runtime (see the module docstring).

    Args:
        adapter: where rows live; must be ``durable`` for the outbox to mean anything.
        clock: the client's clock (``now_ms`` dates rows, ``sleep`` paces the sweeper).
        submit: ``submit(map, key, value, ts, op_type, timeout)`` queues a write on the engine
            (it calls :meth:`added` again, which then binds the write to the row being sent).
        max_age: seconds; older rows are dropped instead of sent again (None: never).
        resend_timeout: the deadline given to each write the outbox queues again.
        on_dropped: called with the dropped rows.
    """

    def __init__(self, adapter: StorageAdapter, *, clock: Clock, submit: Submit, max_age: Optional[float],
                 resend_timeout: float, on_dropped: Optional[Callable[[List[OutboxRow]], None]] = None,
                 sweep_interval: float = 1.0) -> None:
        self.adapter = adapter
        self.clock = clock
        self._submit = submit
        self.max_age = max_age
        self.resend_timeout = resend_timeout
        self.on_dropped = on_dropped
        self.sweep_interval = sweep_interval
        self._next = 1
        self._seq_of: Dict[PendingWrite, int] = {}          # every write sent for a row -> its seq
        self._writes: Dict[int, List[PendingWrite]] = {}    # seq -> the writes sent for it, newest last
        self._by_key: Dict[MapKey, Deque[int]] = {}         # rows held per key, oldest first
        self._created: Dict[int, int] = {}                  # seq -> created_ms
        self._binding: Optional[int] = None
        self._deferred: Optional[List[OutboxRow]] = None
        self._group = Group()
        self._closed = False
        self._detached = False
        self.stats = {"written": 0, "acked": 0, "replayed": 0, "resent": 0, "dropped": 0}

    # ------------------------------------------------------------------ engine hooks

    def added(self, w: PendingWrite) -> None:
        """Engine hook: ``w`` is about to be queued; its row is durable when this returns."""
        if self._binding is not None:  # the outbox itself is queueing a row again
            self._bind(self._binding, w)
            return
        seq = self._next
        created = self.clock.now_ms()
        row = OutboxRow(seq, w.map_name, w.key, w.op_type, encode_value(w.op_type, w.value),
                        w.ts[0], w.ts[1], w.ts[2], created)
        if self._deferred is not None:
            self._deferred.append(row)
        else:
            self.adapter.append([row])
        self._next = seq + 1
        self._created[seq] = created
        self._by_key.setdefault(w.mk, deque()).append(seq)
        self._bind(seq, w)
        self.stats["written"] += 1

    def acked(self, writes: List[PendingWrite]) -> None:
        """Engine hook: these writes were acknowledged; drop their rows and older ones of their keys."""
        gone: List[int] = []
        for w in writes:
            seq = self._seq_of.get(w)
            if seq is None:
                continue
            queue = self._by_key.get(w.mk)
            while queue and queue[0] <= seq:
                done = queue.popleft()
                gone.append(done)
                self._forget(done, w)
            if queue is not None and not queue:
                del self._by_key[w.mk]
        if gone:
            self.adapter.remove(gone)
            self.stats["acked"] += len(gone)

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        """Write the rows of every ``added`` inside the block in one transaction, at its end.

        Only for code that does not yield to the hub inside the block (nothing can be sent
        before the rows are written). If writing fails, the block's writes fail with the error.
        """
        if self._deferred is not None:  # nested: the outer block writes
            yield
            return
        rows: List[OutboxRow] = []
        self._deferred = rows
        try:
            yield
        finally:
            self._deferred = None
            try:
                self.adapter.append(rows)
            except Exception as exc:
                for row in rows:
                    for w in self._writes.get(row.seq, ()):
                        w.finish(exc=ConfigurationError(f"the outbox could not store the write: {exc}"))
                raise

    # ------------------------------------------------------------------ replay and sweeping

    def replay(self) -> int:
        """Queue every row left in the storage again, in order; drop those past ``max_age``. Returns how many."""
        self._next = max(self._next, self.adapter.next_seq())
        dropped: List[OutboxRow] = []
        replayed = 0
        for chunk in self.adapter.rows():
            for row in chunk:
                if row.seq in self._created:
                    continue
                if self._too_old(row.created_ms):
                    dropped.append(row)
                    continue
                self._created[row.seq] = row.created_ms
                self._by_key.setdefault((row.map_name, row.key), deque()).append(row.seq)
                self._queue_again(row.seq, row.map_name, row.key, decode_value(row), row.ts, row.op_type)
                replayed += 1
        self.stats["replayed"] += replayed
        if replayed:
            log.info("outbox %s: replaying %d queued writes", self.adapter.description, replayed)
        self._drop(dropped, "older than max_age")
        return replayed

    def start(self) -> None:
        self._group.spawn(self._sweeper)

    def _sweeper(self) -> None:
        while not self._closed:
            self.clock.sleep(self.sweep_interval)
            try:
                self.sweep()
            except ClientClosed:
                return
            except Exception:
                log.exception("outbox sweep failed; continuing")

    def sweep(self) -> None:
        """Send again what failed without an ack; drop what is past ``max_age`` or can never be sent."""
        dropped: List[OutboxRow] = []
        for i, (seq, writes) in enumerate(list(self._writes.items())):
            if i and i % _YIELD_EVERY == 0:
                gevent.sleep(0)
            w = writes[-1]
            if seq not in self._created or not w.done or w.error is None or isinstance(w.error, ClientClosed):
                continue  # gone, still on its way, acknowledged, or failed by close(): kept for the next start
            if isinstance(w.error, ConfigurationError) or self._too_old(self._created[seq]):
                dropped.append(self._row(seq, w))
                self._remove_row(seq, w.mk)
            elif self._by_key.get(w.mk, (None,))[-1] == seq:  # the newest row of its key: send it again
                self.stats["resent"] += 1
                self._queue_again(seq, w.map_name, w.key, w.value, w.ts, w.op_type)
        if dropped:
            self.adapter.remove([r.seq for r in dropped])
        self._drop(dropped, "older than max_age or refused", removed=True)

    # ------------------------------------------------------------------ internals

    def _bind(self, seq: int, w: PendingWrite) -> None:
        self._seq_of[w] = seq
        self._writes.setdefault(seq, []).append(w)

    def _queue_again(self, seq: int, map_name: str, key: str, value: Any, ts: Tuple[int, int, str],
                     op_type: str) -> None:
        self._binding = seq
        try:
            self._submit(map_name, key, value, ts, op_type, self.resend_timeout)
        finally:
            self._binding = None

    def _forget(self, seq: int, acked: Optional[PendingWrite]) -> None:
        self._created.pop(seq, None)
        for twin in self._writes.pop(seq, ()):
            self._seq_of.pop(twin, None)
            if acked is not None and twin is not acked and not twin.done:
                twin.finish(acked.level)  # a copy still queued: the ack made it pointless

    def _remove_row(self, seq: int, mk: MapKey) -> None:
        queue = self._by_key.get(mk)
        if queue is not None:
            try:
                queue.remove(seq)
            except ValueError:
                pass
            if not queue:
                del self._by_key[mk]
        self._forget(seq, None)

    def _too_old(self, created_ms: int) -> bool:
        return self.max_age is not None and self.clock.now_ms() - created_ms > self.max_age * 1000

    def _row(self, seq: int, w: PendingWrite) -> OutboxRow:
        value = b"" if w.op_type == "REMOVE" else msgpack.packb(w.value, use_bin_type=True, default=repr)
        return OutboxRow(seq, w.map_name, w.key, w.op_type, value, w.ts[0], w.ts[1], w.ts[2],
                         self._created.get(seq, 0))

    def _drop(self, rows: List[OutboxRow], why: str, removed: bool = False) -> None:
        if not rows:
            return
        if not removed:
            self.adapter.remove([r.seq for r in rows])
        self.stats["dropped"] += len(rows)
        oldest = min(rows, key=lambda r: r.created_ms)
        log.warning("outbox %s: dropped %d queued writes (%s); the oldest, to map %s, was queued %.0fs ago",
                    self.adapter.description, len(rows), why, oldest.map_name,
                    (self.clock.now_ms() - oldest.created_ms) / 1000)
        if self.on_dropped is not None:
            try:
                self.on_dropped(rows)
            except Exception:
                log.exception("on_dropped callback failed")

    @property
    def rows(self) -> int:
        """Rows held (writes not acknowledged yet)."""
        return len(self._created)

    def snapshot(self) -> Dict[str, Any]:
        out: Dict[str, Any] = dict(self.stats, rows=self.rows, storage=self.adapter.description)
        max_commit = getattr(self.adapter, "max_commit_s", None)
        if max_commit is not None:
            out["max_commit_ms"] = round(max_commit * 1000, 3)
        return out

    def detach(self) -> None:
        """In a forked child: stop using the storage, never close it.

        Closing a SQLite connection inherited across ``fork()`` could checkpoint and delete the
        write-ahead log the parent is still writing; the copy is left to die with the child.
        """
        self._closed = True
        self._detached = True

    def close(self) -> None:
        """Stop sweeping and close the storage (rows not acknowledged stay for the next start)."""
        if self._detached:
            return
        if self._closed:
            return
        self._closed = True
        self._group.kill(timeout=1.0)
        try:
            self.adapter.close()
        except TopGunError:
            log.warning("closing outbox %s failed", self.adapter.description, exc_info=True)

    def __repr__(self) -> str:
        return f"<Outbox {self.adapter.description} rows={self.rows} {'closed' if self._closed else 'open'}>"
