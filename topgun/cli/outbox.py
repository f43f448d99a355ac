"""``topgun outbox show FILE`` / ``topgun outbox replay FILE``: what a storage file holds, and delivering it.

``show`` prints, as JSON, how many writes the SQLite outbox holds, per map, the oldest one's
age, and the first ``--limit`` writes (seq, map, key, op, value, HLC timestamp, age). It reads
without taking the file's lock, so it works while a client owns the file.

``replay`` starts a client on the file (it replays what is left at start, in order per key,
dropping writes older than ``--max-age``) and waits up to ``--wait`` seconds for every write to
be acknowledged. Exit code 0 when the outbox is empty afterwards, 3 when writes are left
(the server was unreachable, or the file is in use: ``StorageLocked``).
"""
from __future__ import annotations

import argparse
import os
import time
from typing import Any, Dict, List

from .kv import EXIT_OK, EXIT_UNAVAILABLE, EXIT_USAGE, add_connection_arguments, connect, dump, run_command

__all__ = ["register", "show", "run_show", "run_replay"]


def show(path: str, limit: int = 20) -> Dict[str, Any]:
    """A summary of the outbox in ``path`` (see the module docstring)."""
    from topgun.storage.outbox import decode_value
    from topgun.storage.sqlite import SQLiteAdapter, sqlite_path
    path = sqlite_path(path)
    if not os.path.exists(path):
        from topgun.errors import ConfigurationError
        raise ConfigurationError(f"no such storage file: {path}")
    adapter = SQLiteAdapter(path, lock=False)
    try:
        now_ms = int(time.time() * 1000)
        by_map: Dict[str, int] = {}
        writes: List[Dict[str, Any]] = []
        oldest = None
        total = 0
        for chunk in adapter.rows():
            for row in chunk:
                total += 1
                by_map[row.map_name] = by_map.get(row.map_name, 0) + 1
                oldest = row.created_ms if oldest is None else min(oldest, row.created_ms)
                if len(writes) < limit:
                    writes.append({"seq": row.seq, "map": row.map_name, "key": row.key, "op": row.op_type,
                                   "value": decode_value(row), "timestamp": f"{row.millis}:{row.counter}:{row.node_id}",
                                   "age_s": round((now_ms - row.created_ms) / 1000, 3)})
        return {"storage": path, "writes": total, "maps": by_map,
                "oldest_age_s": None if oldest is None else round((now_ms - oldest) / 1000, 3), "first": writes}
    finally:
        adapter.close()


def run_show(args: argparse.Namespace) -> int:
    def body() -> int:
        print(dump(show(args.file, args.limit), pretty=not args.compact))
        return EXIT_OK
    return run_command(body)


def run_replay(args: argparse.Namespace) -> int:
    from topgun.storage.sqlite import SQLiteStorage, sqlite_path

    def body() -> int:
        if not os.path.exists(sqlite_path(args.file)):
            print(f"topgun: no such storage file: {args.file}")
            return EXIT_USAGE
        storage = SQLiteStorage(args.file, max_age=args.max_age)
        with connect(args, storage=storage) as client:
            deadline = time.monotonic() + args.wait
            while client.stats["outbox"]["rows"] and time.monotonic() < deadline:
                time.sleep(0.05)
            stats = client.stats["outbox"]
        report = {key: stats[key] for key in ("replayed", "acked", "dropped", "rows")}
        print(dump(report, pretty=not args.compact))
        return EXIT_OK if stats["rows"] == 0 else EXIT_UNAVAILABLE
    return run_command(body)


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("outbox", help="a storage file's queued writes (show, replay)", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="outbox_command", metavar="COMMAND", required=True)
    sh = sub.add_parser("show", help="what the outbox holds (JSON)")
    sh.add_argument("file", help="the storage file: a path or sqlite:///path")
    sh.add_argument("--limit", type=int, default=20, help="list at most this many writes (default 20)")
    sh.add_argument("--compact", action="store_true", help="one line of JSON")
    sh.set_defaults(func=run_show)
    rp = sub.add_parser("replay", help="deliver what the outbox holds, then exit")
    rp.add_argument("file", help="the storage file: a path or sqlite:///path")
    rp.add_argument("--wait", type=float, default=30.0, help="seconds to wait for the acks (default 30)")
    rp.add_argument("--max-age", type=float, default=None, help="drop writes older than this many seconds")
    rp.add_argument("--compact", action="store_true", help="one line of JSON")
    add_connection_arguments(rp)
    rp.set_defaults(func=run_replay)
