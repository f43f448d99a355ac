"""The SQLite storage adapter: one file, WAL mode, the standard library's ``sqlite3``.

``storage="outbox.db"``, ``storage="sqlite:///outbox.db"`` (relative; ``sqlite:////abs/path`` is
absolute, as in SQLAlchemy) or ``storage=SQLiteStorage("outbox.db", max_age=3600)`` picks it.

Durability: the file is in WAL mode with ``synchronous=NORMAL`` (the default): a transaction is
in the write-ahead log once ``append`` returns, so a crash of the *process* (SIGKILL, OOM,
redeploy) loses nothing; an OS crash or power cut may lose the last transactions before the
next checkpoint. ``synchronous="FULL"`` fsyncs every commit and survives those too, at the
cost of one fsync per commit.

One owner at a time: an open adapter holds a POSIX lock on ``<file>-lock`` (and the process
remembers the path), so a second client on the same file, in this process or another, gets
:class:`~topgun.errors.StorageLocked` instead of replaying writes the first is still sending.
The lock dies with its process, SIGKILL included. POSIX locks are not inherited by ``fork()``:
a forked child's client cannot open its parent's file while the parent runs (give each
worker a file of its own).

Under gevent: ``sqlite3`` calls block the hub while they run. The outbox keeps them short by
writing in batches (one transaction per ``put_all`` window, per OP_ACK), and this adapter
records the longest one in ``max_commit_s`` (a few milliseconds for 5,000 rows on a laptop).

Not in here: when rows are written and removed (``outbox.py``), locking across machines (a
network file system's locks are not trusted: keep the file on a local disk).
"""
from __future__ import annotations

import logging
import os
import sqlite3
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, List, Optional, Sequence, Set

from ..errors import ConfigurationError, StorageLocked
from .base import OutboxRow

log = logging.getLogger(__name__)

__all__ = ["SQLiteStorage", "SQLiteAdapter", "sqlite_path"]

_SCHEMA_VERSION = 1
_open_paths: Set[str] = set()  # files this process holds (a POSIX lock does not stop the same process)


def sqlite_path(spec: str) -> str:
    """The file a ``storage=`` string names: a plain path or ``sqlite:///path``."""
    path = spec[len("sqlite:///"):] if spec.startswith("sqlite:///") else spec
    if spec.startswith("sqlite:") and not spec.startswith("sqlite:///"):
        raise ConfigurationError(f"storage URLs look like sqlite:///relative.db or sqlite:////abs/path.db, "
                                 f"got {spec!r}")
    if not path or path == ":memory:":
        raise ConfigurationError(f"storage= needs a file (an in-memory SQLite outbox survives nothing), got {spec!r}")
    return path


@dataclass(frozen=True)
class SQLiteStorage:
    """A durable outbox in one SQLite file.

    Args:
        path: the database file (created if missing, with its directory's permissions).
        max_age: seconds; a queued write older than this when it would be replayed is dropped
            (logged as a WARNING, counted in ``client.stats["outbox"]["dropped"]`` and passed to
            ``on_dropped``) instead of sent. None keeps writes for ever.
        synchronous: ``"NORMAL"`` (survives a process crash) or ``"FULL"`` (also an OS crash).
        on_dropped: called with the list of :class:`~topgun.storage.base.OutboxRow` dropped.
    """

    path: str
    max_age: Optional[float] = 24 * 3600.0
    synchronous: str = "NORMAL"
    on_dropped: Optional[Callable[[List[OutboxRow]], None]] = None

    def __post_init__(self) -> None:
        if not isinstance(self.path, (str, os.PathLike)):
            raise ConfigurationError(f"SQLiteStorage path must be a str or os.PathLike, got {self.path!r}")
        object.__setattr__(self, "path", sqlite_path(os.fspath(self.path)))
        if self.max_age is not None and (not isinstance(self.max_age, (int, float)) or isinstance(self.max_age, bool)
                                         or not self.max_age > 0 or self.max_age == float("inf")):
            raise ConfigurationError(f"max_age must be a positive number of seconds or None, got {self.max_age!r}")
        if self.synchronous not in ("NORMAL", "FULL"):
            raise ConfigurationError(f"synchronous must be 'NORMAL' or 'FULL', got {self.synchronous!r}")
        if self.on_dropped is not None and not callable(self.on_dropped):
            raise ConfigurationError("on_dropped= must be a callable(rows) or None")

    def open(self) -> "SQLiteAdapter":
        return SQLiteAdapter(self.path, synchronous=self.synchronous)

    @property
    def url(self) -> str:
        return "sqlite:///" + self.path


class SQLiteAdapter:
    """The open file of one runtime (see the module docstring)."""

    durable = True

    def __init__(self, path: str, *, synchronous: str = "NORMAL", lock: bool = True) -> None:
        self.path = os.path.realpath(path)
        self.description = "sqlite:///" + path
        self._lock_fd: Optional[int] = None
        self.max_commit_s = 0.0
        self.commits = 0
        if lock:
            self._claim()
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=5.0)
            mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise ConfigurationError(f"{self.path}: SQLite refused WAL mode (got {mode!r}); use a local disk")
            self._db.execute(f"PRAGMA synchronous={synchronous}")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS outbox (seq INTEGER PRIMARY KEY, map TEXT NOT NULL, key TEXT NOT NULL,"
                " op TEXT NOT NULL, value BLOB NOT NULL, millis INTEGER NOT NULL, counter INTEGER NOT NULL,"
                " node TEXT NOT NULL, created_ms INTEGER NOT NULL)")
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version == 0:
                self._db.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")
            elif version != _SCHEMA_VERSION:
                raise ConfigurationError(f"{self.path} has outbox schema {version}; "
                                         f"this topgun reads {_SCHEMA_VERSION}")
        except sqlite3.Error as exc:
            self._release()
            raise ConfigurationError(f"cannot open {self.path} as an outbox: {exc}") from exc
        except BaseException:
            self._release()
            raise
        self.closed = False

    def _claim(self) -> None:
        if self.path in _open_paths:
            raise StorageLocked(f"{self.path} is already open in this process (pid {os.getpid()})")
        fd = os.open(self.path + "-lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            import fcntl
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except ImportError:  # no POSIX locks on this platform: only the in-process check holds
            log.warning("no fcntl here: %s is guarded against this process only", self.path)
        except OSError:
            holder = _read_pid(fd)
            os.close(fd)
            raise StorageLocked(f"{self.path} is in use by another process{f' (pid {holder})' if holder else ''}") \
                from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._lock_fd = fd
        _open_paths.add(self.path)

    def _release(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing any descriptor of the file drops our POSIX lock on it
            self._lock_fd = None
            _open_paths.discard(self.path)

    def _write(self, sql: str, params: Iterable[Sequence[Any]]) -> None:
        start = time.perf_counter()
        db = self._db
        db.execute("BEGIN")
        try:
            db.executemany(sql, params)
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
        took = time.perf_counter() - start
        self.commits += 1
        if took > self.max_commit_s:
            self.max_commit_s = took

    def append(self, rows: Sequence[OutboxRow]) -> None:
        if rows:
            self._write("INSERT OR REPLACE INTO outbox VALUES (?,?,?,?,?,?,?,?,?)", rows)

    def remove(self, seqs: Iterable[int]) -> None:
        params = [(s,) for s in seqs]
        if params:
            self._write("DELETE FROM outbox WHERE seq=?", params)

    def rows(self, chunk: int = 2000) -> Iterator[List[OutboxRow]]:
        last = 0
        while True:
            got = self._db.execute("SELECT * FROM outbox WHERE seq>? ORDER BY seq LIMIT ?", (last, chunk)).fetchall()
            if not got:
                return
            batch = [OutboxRow(*r) for r in got]
            last = batch[-1].seq
            yield batch

    def next_seq(self) -> int:
        return int(self._db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM outbox").fetchone()[0])

    def count(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])

    def close(self) -> None:
        if getattr(self, "closed", True):
            return
        self.closed = True
        try:
            self._db.close()
        finally:
            self._release()

    def __repr__(self) -> str:
        return f"<SQLiteAdapter {self.path} {'closed' if self.closed else 'open'} commits={self.commits}>"


def _read_pid(fd: int) -> str:
    try:
        return os.pread(fd, 32, 0).decode(errors="replace").strip()
    except OSError:
        return ""
