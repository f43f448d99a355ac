"""``topgun watch MAP [--where FIELD=JSON ...]``: print changes to a map as they happen.

One JSON object per line: ``{"kind": "ENTER"|"UPDATE"|"LEAVE", "key": ..., "value": ...}``.
``--initial`` first prints the entries that match now (kind ``INITIAL``); ``--count N`` exits
after N changes; Ctrl-C exits 0. ``--where age=36 --where name='"Ada"'`` is equality on
top-level fields (the value is JSON; a bare word is taken as a string); ``--predicate JSON`` a
predicate tree (see topgun.P). The subscription survives reconnects and node failures.
"""
from __future__ import annotations

import argparse
import sys
from typing import Any, Dict, Optional

import ujson

from .kv import EXIT_OK, EXIT_USAGE, add_connection_arguments, connect, dump, print_json_lines, run_until_interrupted

__all__ = ["register", "run", "parse_where"]


def parse_where(items: Optional[list]) -> Optional[Dict[str, Any]]:
    """``["age=36", "name=Ada"]`` -> ``{"age": 36, "name": "Ada"}``; ValueError on a bad item."""
    if not items:
        return None
    where: Dict[str, Any] = {}
    for item in items:
        field, sep, raw = item.partition("=")
        if not sep or not field:
            raise ValueError(f"--where wants FIELD=VALUE, got {item!r}")
        try:
            where[field] = ujson.loads(raw)
        except ValueError:
            where[field] = raw
    return where


def run(args: argparse.Namespace) -> int:
    predicate = None
    try:
        where = parse_where(args.where)
        if args.predicate:
            predicate = ujson.loads(args.predicate)
    except ValueError as exc:
        print(f"topgun: {exc}" if "--where" in str(exc) else f"topgun: --predicate is not JSON: {exc}",
              file=sys.stderr)
        return EXIT_USAGE

    def emit(kind: str, key: str, value: Any) -> None:
        sys.stdout.write(dump({"kind": kind, "key": key, "value": value}) + "\n")
        sys.stdout.flush()

    def body() -> int:
        with connect(args) as client:
            with client.map(args.map).subscribe(where=where, predicate=predicate, timeout=args.timeout) as sub:
                if args.initial:
                    for key, value in sorted(sub.results.items()):
                        emit("INITIAL", key, value)
                if args.ready:
                    print("WATCHING", args.map, file=sys.stderr, flush=True)
                print_json_lines(sub, lambda change: {"kind": change.kind, "key": change.key,
                                                      "value": change.value}, args.count)
        return EXIT_OK

    return run_until_interrupted(body)


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("watch", help="print changes to a map as they happen (JSON lines)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("map")
    p.add_argument("--where", action="append", metavar="FIELD=JSON", help="equality on a field (repeatable)")
    p.add_argument("--predicate", metavar="JSON", help="a predicate tree, e.g. '{\"op\":\"gte\",...}'")
    p.add_argument("--initial", action="store_true", help="print the current matches first")
    p.add_argument("--count", type=int, default=0, help="exit after this many changes")
    p.add_argument("--ready", action="store_true", help="print WATCHING to stderr once subscribed")
    add_connection_arguments(p)
    p.set_defaults(func=run)
