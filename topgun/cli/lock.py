"""``topgun lock NAME [--ttl S] [--wait S] -- COMMAND ...``: run a command while holding a lock.

    topgun lock nightly-report --wait 0 -- python report.py     # skip if another host runs it

Like ``flock(1)``, but across machines: the lock is acquired (retrying until ``--wait``
seconds, default 10; 0 tries once), the command runs with ``TOPGUN_LOCK_NAME`` and
``TOPGUN_FENCING_TOKEN`` in its environment, and the lock is released when it exits; the exit
code is the command's. If the lock is lost while the command runs (its node died, the
connection dropped, ``--ttl`` ran out), the command is sent SIGTERM and the exit code is 5.
Exit 4: the lock stayed busy for ``--wait`` seconds; 2: bad arguments; 3: no server.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
from typing import Any, List

from .kv import EXIT_USAGE, add_connection_arguments, connect, run_command

__all__ = ["register", "run", "EXIT_BUSY", "EXIT_LOST"]

EXIT_BUSY, EXIT_LOST = 4, 5


def run(args: argparse.Namespace) -> int:
    command: List[str] = list(args.command)
    # REMAINDER takes everything after NAME, options too: parse those before "--" again.
    cut = command.index("--") if "--" in command else len(command)
    options, command = command[:cut], command[cut + 1:]
    if options:
        _options_parser().parse_args(options, namespace=args)
    if not command:
        print("topgun: lock needs a command to run: topgun lock NAME -- COMMAND ...", file=sys.stderr)
        return EXIT_USAGE
    lost = threading.Event()
    child: List[subprocess.Popen[bytes]] = []

    def on_lost(lock: Any) -> None:  # on the client's greenlet: only signal, never block
        lost.set()
        print(f"topgun: lock {lock.name!r} lost: {lock.lost_reason}", file=sys.stderr, flush=True)
        if child and child[0].poll() is None:
            child[0].terminate()

    def body() -> int:
        import topgun
        with connect(args) as client:
            lock = client.lock(args.name, ttl=args.ttl, on_lost=on_lost)
            if not lock.acquire(blocking=args.wait > 0, timeout=args.wait if args.wait > 0 else None):
                print(f"topgun: lock {args.name!r} is busy", file=sys.stderr)
                return EXIT_BUSY
            env = dict(os.environ, TOPGUN_LOCK_NAME=args.name, TOPGUN_FENCING_TOKEN=str(lock.fencing_token))
            try:
                child.append(subprocess.Popen(command, env=env))
            except OSError as exc:
                lock.release()
                print(f"topgun: cannot run {command[0]}: {exc}", file=sys.stderr)
                return 127
            code = child[0].wait()
            try:
                lock.release()
            except topgun.LockLost:
                return EXIT_LOST
            return EXIT_LOST if lost.is_set() else code

    return run_command(body)


def _add_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ttl", type=float, default=None, help="seconds after which the server frees the lock itself")
    p.add_argument("--wait", type=float, default=10.0, help="seconds to wait for a busy lock (0: try once)")
    add_connection_arguments(p)


def _options_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="topgun lock NAME", add_help=False)
    _add_options(p)
    return p


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("lock", help="run a command while holding a distributed lock",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("name")
    _add_options(p)       # options before NAME parse here; after NAME, run() parses them
    p.add_argument("command", nargs=argparse.REMAINDER, help="[OPTIONS] -- COMMAND [ARGS...]")
    p.set_defaults(func=run)
