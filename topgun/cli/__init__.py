"""The ``topgun`` command line: ``topgun SUBCOMMAND ...``.

Each subcommand lives in its own module of this package and exposes
``register(subparsers)`` (adds its parser, setting ``func``) and a ``run(args) -> int``.
Add a module name to ``SUBCOMMANDS`` to wire a new one in. ``-v``/``-vv`` map to log levels;
the library itself never configures logging.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Dict, List, Optional

from topgun import __version__

__all__ = ["main", "SUBCOMMANDS"]

# module names under topgun.cli; each has register(subparsers)
SUBCOMMANDS: List[str] = ["bench", "kv", "watch", "cluster", "server", "outbox", "topics", "lock", "counter"]


# the extra that installs a missing module a subcommand imports
_EXTRA_FOR = {"ujson": "cli", "geventwebsocket": "server", "locust": "locust"}


def _available(missing: Optional[Dict[str, List[str]]] = None) -> List[str]:
    """The importable subcommand modules; ``missing`` collects the others under their fix."""
    found = []
    for name in SUBCOMMANDS:
        try:
            importlib.import_module(f"{__name__}.{name}")
            found.append(name)
        except ImportError as exc:  # an optional extra may be missing; say so, keep the rest
            logging.getLogger(__name__).debug("subcommand %s unavailable: %s", name, exc)
            extra = _EXTRA_FOR.get((exc.name or "").split(".")[0])
            if missing is not None:
                missing.setdefault(f"pip install 'topgun[{extra}]'" if extra else str(exc), []).append(name)
    return found


def build_parser() -> argparse.ArgumentParser:
    missing: Dict[str, List[str]] = {}
    found = _available(missing)
    # One line per missing extra, kept as written (argparse would wrap the install command apart).
    epilog = "\n".join(f"not installed: {', '.join(names)}: {fix}" for fix, names in missing.items())
    parser = argparse.ArgumentParser(prog="topgun", description="TopGun data grid command line",
                                     epilog=epilog or None, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="-v info, -vv debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in found:
        importlib.import_module(f"{__name__}.{name}").register(sub)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of the ``topgun`` console script; returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        if exc.code and parser.epilog:  # an unknown command may be one whose extra is missing
            print(parser.epilog, file=sys.stderr)
        raise
    if args.verbose:
        logging.basicConfig(level=logging.DEBUG if args.verbose > 1 else logging.INFO,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    return int(func(args) or 0)
