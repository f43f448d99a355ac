"""``topgun counter NAME [--add N | --sub N | --watch]``: a PN counter from a terminal.

    topgun counter page-views               # prints the value
    topgun counter page-views --add 5       # adds 5, prints the new value
    topgun counter page-views --watch       # prints each new value as it changes (Ctrl-C exits 0)

Exit codes: 0 ok, 2 bad arguments, 3 the counter's node did not answer in time.
"""
from __future__ import annotations

import argparse
from typing import Any

from .kv import EXIT_OK, add_connection_arguments, connect, dump, print_json_lines, run_until_interrupted

__all__ = ["register", "run"]


def run(args: argparse.Namespace) -> int:
    def body() -> int:
        with connect(args) as client:
            counter = client.counter(args.name)
            if args.add is not None:
                print(dump(counter.increment(args.add, timeout=args.timeout)))
            elif args.sub is not None:
                print(dump(counter.decrement(args.sub, timeout=args.timeout)))
            elif args.watch:
                with counter.subscribe(timeout=args.timeout) as updates:
                    print(dump(updates.value), flush=True)
                    print_json_lines(updates, lambda value: value, args.count)
            else:
                print(dump(counter.get(timeout=args.timeout)))
        return EXIT_OK

    return run_until_interrupted(body)


def _number(raw: str) -> float:
    value = float(raw)
    return int(value) if value.is_integer() else value  # type: ignore[return-value]


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("counter", help="read, add to or watch a PN counter",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("name")
    what = p.add_mutually_exclusive_group()
    what.add_argument("--add", type=_number, metavar="N", help="add N (may be negative) and print the value")
    what.add_argument("--sub", type=_number, metavar="N", help="subtract N and print the value")
    what.add_argument("--watch", action="store_true", help="print the value, then every new value")
    p.add_argument("--count", type=int, default=0, help="with --watch: exit after this many updates")
    add_connection_arguments(p)
    p.set_defaults(func=run)
