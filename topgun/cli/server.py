"""``topgun server [--nodes N] [--port P] ...``: run the embedded dev cluster in this process.

The same as ``python -m topgun.server``, with the same options: each node prints ``READY <node-id> <ws-url>`` once it
serves; Ctrl-C or SIGTERM stops every node. ``topgun server --nodes 3 --port 8080`` gives a
3-node cluster on ports 8080-8082. For development and tests only.
"""
from __future__ import annotations

import argparse
import sys
from typing import Any, List

__all__ = ["register", "run", "server_argv"]


def server_argv(args: argparse.Namespace) -> List[str]:
    """The ``python -m topgun.server`` arguments for the parsed options."""
    argv = ["--nodes", str(args.nodes), "--port", str(args.port), "--host", args.host,
            "--timeout", str(args.join_timeout)]
    if args.node_id:
        argv += ["--node-id", args.node_id]
    if args.seeds:
        argv += ["--seeds", args.seeds]
    if args.jwt_secret:
        argv += ["--jwt-secret", args.jwt_secret]
    if args.strict:
        argv.append("--strict")
    if args.certfile:
        argv += ["--certfile", args.certfile]
    if args.keyfile:
        argv += ["--keyfile", args.keyfile]
    return argv + ["-v"] * int(getattr(args, "verbose", 0) or 0)


def run(args: argparse.Namespace) -> int:
    try:
        from ..server.__main__ import main
    except ImportError as exc:  # the dev cluster is an extra: say which, instead of a traceback
        print(f"error: topgun server needs the dev cluster's dependencies ({exc}): "
              "pip install 'topgun[server]'", file=sys.stderr)
        return 2
    return int(main(server_argv(args)) or 0)


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("server", help="run the embedded dev cluster (READY line per node)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nodes", type=int, default=1, help="nodes to run in this process (default 1)")
    p.add_argument("--port", type=int, default=0, help="port of the first node, then +1 ...; 0: any (default)")
    p.add_argument("--host", default="127.0.0.1",
                   help="listen address (default 127.0.0.1); 0.0.0.0 listens on every interface and "
                        "announces this machine's hostname (127.0.0.1 if it does not resolve)")
    p.add_argument("--node-id", help="id of the (first) node; default n1..nN")
    p.add_argument("--seeds", help="comma-separated ws URLs of a cluster to join")
    p.add_argument("--jwt-secret", help="require HS256 JWTs signed with this secret")
    p.add_argument("--strict", action="store_true", help="answer NOT_OWNER for foreign partitions")
    p.add_argument("--certfile", help="serve wss:// with this PEM certificate chain (for tests of TLS clients)")
    p.add_argument("--keyfile", help="the certificate's private key (default: inside --certfile)")
    p.add_argument("--timeout", "--join-timeout", dest="join_timeout", type=float, default=30.0,
                   help="seconds to wait for joining (default 30)")
    p.set_defaults(func=run)
