"""Record what a load did to a map, then check it: acknowledged writes survive, per key, in order.

A chaos test records every operation it runs against a map as an :class:`Op` in a
:class:`History`: its invocation, then exactly one outcome, ``ok`` (acknowledged; for a read,
with the value returned), ``fail`` (it certainly did not happen: rejected before it could
apply) or ``unknown`` (it may or may not have happened: a timeout, a lost connection). Each
op has a process (the writer or reader that ran it), a key, a value and monotonic start and
end times. Recording is safe from many greenlets and threads at once.

Every key is checked as a register (``set`` writes it, ``get`` reads it, ``None`` is "no
value"). Writes must use unique values (:meth:`History.next_value` gives ``"key#1"``,
``"key#2"``, ...), so a lost write cannot hide behind a rewrite of the same value.
:func:`check` proves per key:

- **never-written**: no read returns a value nobody wrote (or whose write failed), or a value
  before its write began;
- **stale**: no read returns a value older than one whose write was acknowledged before the
  read began (older: that value's write completed before the acknowledged one began, or, with
  ``fifo=True``, the same process wrote it earlier to the same key);
- **lost**: every acknowledged write is visible in the key's last read, or superseded there by
  a write that is not older than it (a later or concurrent one); make the last read start after
  the load stopped and the faults ended, with no rewrite in between;
- **backwards**: a read never returns a value older than one an earlier, finished read saw;
- **reordered** (``fifo=True``): writes of one process to one key are acknowledged in the order
  that process invoked them (the TopGun client promises this for pipelined ``set_async``);
- **not-linearizable**: the key's whole history is linearizable as a register (Wing & Gong's
  search with Lowe's memoisation, as in Knossos): some order of the ops that respects real time
  (and ``fifo``) explains every read. Unknown writes may take effect at any point after their
  start, or never. The search is bounded (``max_ops`` per key, ``max_steps``); a key past
  either bound gets only the checks above, and the summary says which checker ran on how many
  keys.

The result is a :class:`Summary`: counts (ops, ok, fail, unknown, lost, stale), the anomalies
with the first few examples, and ``str(summary)`` prints all of it for a test's output and
assertion message::

    history = History()
    op = history.invoke("writer-1", "write", "k", history.next_value("k"))
    history.track(op, users.set_async("k", op.value))     # ok/unknown when the AsyncResult completes
    ...
    summary = check(history)
    print(summary)
    assert summary.valid, summary

Not in this module: running a load, injecting faults, or any IO; removes, counters and other
data types (the model is a put/get register per key); a check across keys (each key stands
alone, which is what makes the search affordable).
"""
from __future__ import annotations

import itertools
import threading
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Type

from topgun.clock import Clock, GeventClock

__all__ = ["History", "Op", "Anomaly", "Summary", "check", "INVOKE", "OK", "FAIL", "UNKNOWN"]

INVOKE, OK, FAIL, UNKNOWN = "invoke", "ok", "fail", "unknown"
WRITE, READ = "write", "read"
_INF = float("inf")
_EXAMPLES = 5


@dataclass
class Op:
    """One operation; ``status`` moves from ``invoke`` to ``ok``, ``fail`` or ``unknown`` once."""

    index: int                     # invocation order in its history
    process: str
    kind: str                      # "write" or "read"
    key: str
    value: Any                     # the value written, or (once ok) the value read
    start: float
    end: Optional[float] = None    # None until it completes; unknown ops keep their give-up time
    status: str = INVOKE
    done_seq: Optional[int] = None  # completion order in its history (ties in time stay ordered)
    error: Optional[str] = None

    def describe(self) -> str:
        end = "..." if self.end is None else f"{self.end:.3f}"
        return (f"{self.kind} {self.value!r} by {self.process} [{self.start:.3f}-{end} {self.status}"
                f"{': ' + self.error if self.error else ''}]")


@dataclass
class Anomaly:
    kind: str                      # never-written, stale, lost, backwards, reordered, not-linearizable
    key: str
    message: str
    ops: List[Op] = field(default_factory=list)

    def __str__(self) -> str:
        return f"{self.kind} {self.key!r}: {self.message}"


class History:
    """A thread- and greenlet-safe log of operations on one map.

    Args:
        clock: where start and end times come from (``clock.monotonic()``); the real clock by default.
    """

    def __init__(self, clock: Optional[Clock] = None) -> None:
        self._clock: Clock = clock if clock is not None else GeventClock()
        self._lock = threading.Lock()
        self._ops: List[Op] = []
        self._done = itertools.count()
        self._values: Dict[str, int] = defaultdict(int)

    @property
    def ops(self) -> List[Op]:
        with self._lock:
            return list(self._ops)

    def __len__(self) -> int:
        return len(self._ops)

    def next_value(self, key: str) -> str:
        """A value no other write to ``key`` in this history uses: ``"<key>#<n>"``."""
        with self._lock:
            self._values[key] += 1
            return f"{key}#{self._values[key]}"

    # -- recording live

    def invoke(self, process: str, kind: str, key: str, value: Any = None) -> Op:
        """Record the start of an operation; complete it with :meth:`ok`, :meth:`fail` or :meth:`unknown`."""
        if kind not in (WRITE, READ):
            raise ValueError(f"kind must be 'write' or 'read', got {kind!r}")
        with self._lock:
            op = Op(len(self._ops), process, kind, key, value, self._clock.monotonic())
            self._ops.append(op)
            return op

    def ok(self, op: Op, value: Any = None) -> Op:
        """The op was acknowledged; a read's ``value`` is what it returned."""
        return self._complete(op, OK, value if op.kind == READ else op.value, None)

    def fail(self, op: Op, error: Any = None) -> Op:
        """The op certainly did not happen."""
        return self._complete(op, FAIL, op.value, error)

    def unknown(self, op: Op, error: Any = None) -> Op:
        """The op may or may not have happened (timeout, connection lost, client closed)."""
        return self._complete(op, UNKNOWN, op.value, error)

    def _complete(self, op: Op, status: str, value: Any, error: Any) -> Op:
        with self._lock:
            if op.status != INVOKE:
                raise ValueError(f"op {op.index} already completed ({op.status})")
            op.end, op.status, op.value = self._clock.monotonic(), status, value
            op.done_seq = next(self._done)
            op.error = None if error is None else (error if isinstance(error, str) else repr(error))
            return op

    def track(self, op: Op, result: Any, fail_on: Tuple[Type[BaseException], ...] = ()) -> Any:
        """Complete ``op`` when the ``gevent.event.AsyncResult`` ``result`` does; returns ``result``.

        The outcome is taken in the hub's callback, when the result is set, not when some
        greenlet gets round to waiting for it: that is what makes acknowledgement order real.
        An exception is ``unknown`` unless it is an instance of ``fail_on``.
        """
        def settle(res: Any) -> None:
            if res.successful():
                self.ok(op, res.value)
            elif isinstance(res.exception, fail_on):
                self.fail(op, res.exception)
            else:
                self.unknown(op, res.exception)

        result.rawlink(settle)
        return result

    def call(self, process: str, kind: str, key: str, fn: Callable[[], Any], value: Any = None,
             fail_on: Tuple[Type[BaseException], ...] = ()) -> Op:
        """Run ``fn()`` as one op (a read records its return value); its ``Exception`` is recorded, not raised."""
        op = self.invoke(process, kind, key, value)
        try:
            got = fn()
        except fail_on as exc:
            return self.fail(op, exc)
        except Exception as exc:  # recorded: a chaos loop keeps going, the checker judges
            return self.unknown(op, exc)
        return self.ok(op, got)

    # -- replaying a recorded history (tests of the checker, logs of a run)

    def add(self, process: str, kind: str, key: str, value: Any, start: float, end: Optional[float],
            status: str = OK) -> Op:
        """Append a finished op with given times (``end=None`` with status ``unknown``: never returned)."""
        if kind not in (WRITE, READ) or status not in (OK, FAIL, UNKNOWN):
            raise ValueError(f"bad op kind/status {kind!r}/{status!r}")
        if status != UNKNOWN and end is None:
            raise ValueError("only an unknown op may have no end time")
        with self._lock:
            op = Op(len(self._ops), process, kind, key, value, start, end, status)
            self._ops.append(op)
        return op

    def __repr__(self) -> str:
        return f"<History ops={len(self._ops)}>"


# -- the checker ----------------------------------------------------------------------------------


@dataclass
class Summary:
    """What :func:`check` found. ``valid`` is true when there is no anomaly."""

    ops: int = 0
    ok: int = 0
    fail: int = 0
    unknown: int = 0
    keys: int = 0
    lost: int = 0
    stale: int = 0
    anomalies: List[Anomaly] = field(default_factory=list)
    checkers: Dict[str, str] = field(default_factory=dict)   # key -> "wgl" (search ran) or "simple: <why>"

    @property
    def valid(self) -> bool:
        return not self.anomalies

    def by_kind(self) -> Dict[str, List[Anomaly]]:
        out: Dict[str, List[Anomaly]] = defaultdict(list)
        for a in self.anomalies:
            out[a.kind].append(a)
        return dict(out)

    def __repr__(self) -> str:
        return f"<Summary {str(self).splitlines()[0]}>"

    def __str__(self) -> str:
        wgl = sum(1 for c in self.checkers.values() if c == "wgl")
        simple = [c for c in self.checkers.values() if c != "wgl"]
        lines = [f"history: {self.ops} ops ({self.ok} ok, {self.fail} fail, {self.unknown} unknown) "
                 f"on {self.keys} keys; "
                 f"lost {self.lost}, stale {self.stale}, anomalies {len(self.anomalies)}; "
                 f"checked: linearizability search on {wgl} keys, simple checks only on {len(simple)}"
                 + (f" ({simple[0]})" if simple else "")]
        for kind, found in sorted(self.by_kind().items()):
            lines.append(f"  {kind}: {len(found)}")
            lines += [f"    {a}" for a in found[:_EXAMPLES]]
        return "\n".join(lines)


def check(history: History | Iterable[Op], *, fifo: bool = True, max_ops: int = 10_000,
          max_steps: int = 200_000) -> Summary:
    """Check every key of ``history`` as a register; see the module docstring for what is proved.

    Args:
        history: a :class:`History` (ops still in flight count as ``unknown``) or its ops.
        fifo: writes of one process to one key take effect, and are acknowledged, in invocation order.
        max_ops: keys with more ops than this get only the simple checks.
        max_steps: the linearizability search gives up on a key (simple checks only) after this many steps.

    Raises:
        ValueError: two writes to one key used the same value (the checks would be unsound).
    """
    ops = history.ops if isinstance(history, History) else list(history)
    summary = Summary(ops=len(ops))
    per_key: Dict[str, List[Op]] = defaultdict(list)
    for op in ops:
        status = UNKNOWN if op.status == INVOKE else op.status
        if status == OK:
            summary.ok += 1
        elif status == FAIL:
            summary.fail += 1
        else:
            summary.unknown += 1
        per_key[op.key].append(op)
    summary.keys = len(per_key)
    for key in sorted(per_key):
        _check_key(key, per_key[key], summary, fifo, max_ops, max_steps)
    return summary


class _Key:
    """One key's ops, normalised: unknown ops end at infinity, failed reads dropped."""

    def __init__(self, key: str, ops: Sequence[Op]) -> None:
        self.key = key
        self.writes: Dict[Any, Op] = {}
        self.reads: List[Op] = []
        self.end: Dict[int, float] = {}
        for op in ops:
            status = UNKNOWN if op.status == INVOKE else op.status
            if op.kind == WRITE:
                if op.value is None:
                    raise ValueError(f"write to {key!r} of None: the register model has no removes")
                if op.value in self.writes:
                    raise ValueError(f"two writes to {key!r} of {op.value!r}: values must be unique per key")
                self.writes[op.value] = op
            elif status == OK:
                self.reads.append(op)
            self.end[op.index] = op.end if status == OK and op.end is not None else _INF

    def status(self, op: Op) -> str:
        return UNKNOWN if op.status == INVOKE else op.status


def _check_key(key: str, ops: Sequence[Op], summary: Summary, fifo: bool, max_ops: int, max_steps: int) -> None:
    k = _Key(key, ops)
    found: List[Anomaly] = []

    def older(a: Optional[Op], b: Op) -> bool:
        """Write ``a`` (None: the initial empty register) certainly took effect before write ``b``."""
        if a is None:
            return True
        if k.end[a.index] < b.start:
            return True
        return fifo and a.process == b.process and a.index < b.index

    # What each ok read returned: a write (or None for "no value"), or an anomaly.
    source: Dict[int, Optional[Op]] = {}
    for r in k.reads:
        if r.value is None:
            source[r.index] = None
            continue
        w = k.writes.get(r.value)
        if w is None or k.status(w) == FAIL:
            why = "nobody wrote it" if w is None else f"its write failed ({w.describe()})"
            found.append(Anomaly("never-written", key, f"{r.describe()} returned {r.value!r}, but {why}", [r]))
        elif k.end[r.index] < w.start:
            found.append(Anomaly("never-written", key, f"{r.describe()} returned {r.value!r} before its "
                                                       f"write began ({w.describe()})", [r, w]))
        else:
            source[r.index] = w
    acked = [w for w in k.writes.values() if k.status(w) == OK]
    last_read = max((r for r in k.reads if r.index in source), key=lambda r: r.start, default=None)

    # stale and backwards: sweep the reads in start order over what had finished before each began.
    finished = sorted(acked, key=lambda w: k.end[w.index])
    seen = sorted((r for r in k.reads if r.index in source), key=lambda r: r.end or 0.0)
    fi = si = 0
    newest_acked: Optional[Op] = None          # the acked write with the latest start among those done
    newest_acked_by: Dict[str, Op] = {}        # per process, its latest-invoked acked write done
    newest_seen: Optional[Tuple[Op, Op]] = None  # (read, its write) with the latest write start seen
    seen_by: Dict[str, Tuple[Op, Op]] = {}
    for r in sorted((x for x in k.reads if x.index in source), key=lambda x: x.start):
        while fi < len(finished) and k.end[finished[fi].index] < r.start:
            w = finished[fi]
            if newest_acked is None or w.start > newest_acked.start:
                newest_acked = w
            if w.process not in newest_acked_by or w.index > newest_acked_by[w.process].index:
                newest_acked_by[w.process] = w
            fi += 1
        while si < len(seen) and (seen[si].end or 0.0) < r.start:
            r0 = seen[si]
            w0 = source[r0.index]
            if w0 is not None:
                if newest_seen is None or w0.start > newest_seen[1].start:
                    newest_seen = (r0, w0)
                if fifo and (w0.process not in seen_by or w0.index > seen_by[w0.process][1].index):
                    seen_by[w0.process] = (r0, w0)
            si += 1
        got = source[r.index]
        newer = [w for w in [newest_acked, *(newest_acked_by.values() if fifo else ())]
                 if w is not None and w is not got and older(got, w)]
        if newer:
            if r is last_read:
                continue  # counted below, as lost writes
            summary.stale += 1
            found.append(Anomaly("stale", key, f"{r.describe()} returned {_name(got)}, older than "
                                               f"{newer[0].describe()}, acknowledged before the read began",
                                 [r, newer[0]]))
            continue
        earlier = [(r0, w0) for r0, w0 in [*([newest_seen] if newest_seen else []),
                                           *(seen_by.values() if fifo else ())]
                   if w0 is not got and older(got, w0)]
        if earlier:
            r0, w0 = earlier[0]
            found.append(Anomaly("backwards", key, f"{r.describe()} returned {_name(got)} after "
                                                   f"{r0.describe()} had returned the newer {w0.value!r}",
                                 [r, r0]))

    if last_read is not None:
        got = source[last_read.index]
        for w in acked:
            if w is not got and k.end[w.index] < last_read.start and older(got, w):
                summary.lost += 1
                found.append(Anomaly("lost", key, f"acknowledged {w.describe()}, but the last read "
                                                  f"{last_read.describe()} returned the older {_name(got)}",
                                     [w, last_read]))

    if fifo:
        by_process: Dict[str, List[Op]] = defaultdict(list)
        for w in acked:
            by_process[w.process].append(w)
        for ws in by_process.values():
            ws.sort(key=lambda w: w.index)
            for a, b in zip(ws, ws[1:]):
                if a.done_seq is not None and b.done_seq is not None and b.done_seq < a.done_seq:
                    found.append(Anomaly("reordered", key, f"{b.describe()} was acknowledged before "
                                                           f"{a.describe()}, which its process invoked first",
                                         [a, b]))
                    break

    if len(ops) > max_ops:
        summary.checkers[key] = f"simple: {len(ops)} ops > max_ops {max_ops}"
    else:
        verdict = _linearizable(k, fifo, max_steps)
        if verdict is None:
            summary.checkers[key] = f"simple: search passed max_steps {max_steps}"
        else:
            summary.checkers[key] = "wgl"
            ok, stuck = verdict
            if not ok and not found:
                found.append(Anomaly("not-linearizable", key, "no order of the ops explains every read; "
                                                              f"the search got stuck at {stuck.describe()}", [stuck]))
    summary.anomalies += found


def _name(w: Optional[Op]) -> str:
    return "no value" if w is None else repr(w.value)


def _linearizable(k: _Key, fifo: bool, max_steps: int) -> Optional[Tuple[bool, Op]]:
    """Wing & Gong's search, memoised on (ops linearized, register value).

    Returns (True, any op) if linearizable, (False, first op the deepest attempt could not place),
    or None if ``max_steps`` ran out.
    """
    ops = sorted([w for w in k.writes.values() if k.status(w) != FAIL] + list(k.reads), key=lambda o: o.start)
    if not ops:
        return True, next(iter(k.writes.values()))
    n = len(ops)
    start = [o.start for o in ops]
    end = [k.end[o.index] for o in ops]
    is_read = [o.kind == READ for o in ops]
    value = [o.value for o in ops]
    required = 0
    for i, o in enumerate(ops):
        if end[i] != _INF:
            required |= 1 << i
    # fifo: a write waits for the previous write of its process (an unknown one may be skipped).
    prev_write: List[int] = [-1] * n
    if fifo:
        last: Dict[str, int] = {}
        for i in sorted(range(n), key=lambda i: ops[i].index):
            if not is_read[i]:
                p = ops[i].process
                prev_write[i] = last.get(p, -1)
                last[p] = i
    seen = set()
    stack: List[Tuple[int, Any, int]] = [(0, None, 0)]   # (ops linearized, register, first not linearized)
    steps = 0
    best, best_count = 0, -1
    while stack:
        done, reg, i = stack.pop()
        if done & required == required:
            return True, ops[0]
        steps += 1
        if steps > max_steps:
            return None
        count = bin(done).count("1")
        if count > best_count:
            best, best_count = done, count
        # Candidates: not yet linearized, and no unlinearized op finished before they started.
        while done >> i & 1:
            i += 1
        first = i
        min_end = _INF
        window = []
        while i < n and start[i] <= min_end:
            if not done >> i & 1:
                window.append(i)
                if end[i] < min_end:
                    min_end = end[i]
            i += 1
        for j in window:
            if start[j] > min_end:
                continue
            pw = prev_write[j]
            skip = 0
            if pw >= 0 and not done >> pw & 1:
                if end[pw] != _INF:
                    continue                   # its process's earlier write goes first
                skip = 1 << pw                 # an unknown earlier write: it never happened
            if is_read[j]:
                if value[j] != reg:
                    continue
                nxt = (done | skip | 1 << j, reg)
            else:
                nxt = (done | skip | 1 << j, value[j])
            if nxt not in seen:
                seen.add(nxt)
                stack.append((nxt[0], nxt[1], first))
    stuck = next(ops[i] for i in range(n) if not best >> i & 1 and end[i] != _INF)
    return False, stuck
