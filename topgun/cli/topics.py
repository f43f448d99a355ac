"""``topgun publish TOPIC [JSON]`` and ``topgun subscribe TOPIC``: pub/sub from a terminal.

    topgun subscribe chat/room1 --count 1          # prints {"topic":...,"data":...,"timestamp":...}
    topgun publish chat/room1 '{"text": "hi"}'     # or JSON lines on stdin: one message per line

``publish`` sends each message and exits 0; nobody acknowledges a publication, and the
publishing connection's own subscribers (none here) would not get it. ``subscribe`` prints one
JSON object per message; ``--count N`` exits after N, Ctrl-C exits 0; ``--ready`` prints
SUBSCRIBED to stderr once the server has the subscription. A bare word is taken as a string.
Topic names are 1-256 characters of ``A-Za-z0-9_-.:/`` (exit 2 otherwise).
"""
from __future__ import annotations

import argparse
import sys
from typing import Any, Iterable

import ujson

from .kv import EXIT_OK, add_connection_arguments, connect, print_json_lines, run_command, run_until_interrupted

__all__ = ["register", "run_publish", "run_subscribe"]


def _parse(raw: str) -> Any:
    try:
        return ujson.loads(raw)
    except ValueError:
        return raw


def run_publish(args: argparse.Namespace) -> int:
    lines: Iterable[str] = [args.data] if args.data is not None else (line.rstrip("\n") for line in sys.stdin)

    def body() -> int:
        with connect(args) as client:
            topic = client.topic(args.topic)
            for line in lines:
                if line.strip():
                    topic.publish(_parse(line), timeout=args.timeout)
        return EXIT_OK

    return run_command(body)


def run_subscribe(args: argparse.Namespace) -> int:
    def body() -> int:
        with connect(args) as client:
            with client.topic(args.topic).subscribe(timeout=args.timeout) as messages:
                if args.ready:
                    print("SUBSCRIBED", args.topic, file=sys.stderr, flush=True)
                print_json_lines(messages, lambda msg: {"topic": msg.topic, "data": msg.data,
                                                        "timestamp": msg.timestamp}, args.count)
        return EXIT_OK

    return run_until_interrupted(body)


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("publish", help="publish a JSON message to a topic",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("topic")
    p.add_argument("data", nargs="?", help="the message as JSON (default: JSON lines from stdin)")
    add_connection_arguments(p)
    p.set_defaults(func=run_publish)
    s = subparsers.add_parser("subscribe", help="print a topic's messages as they arrive (JSON lines)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("topic")
    s.add_argument("--count", type=int, default=0, help="exit after this many messages")
    s.add_argument("--ready", action="store_true", help="print SUBSCRIBED to stderr once subscribed")
    add_connection_arguments(s)
    s.set_defaults(func=run_subscribe)
