"""``python -m topgun.server``: run dev-server nodes until interrupted.

Whole cluster in this process::

    python -m topgun.server --nodes 3 --port 0

One node in this process, joining the cluster of the given seed(s)::

    python -m topgun.server --node-id n2 --port 0 --seeds ws://127.0.0.1:PORT/ws

Serve ``wss://`` (for tests of TLS clients; the certificate must cover ``--host``)::

    python -m topgun.server --nodes 3 --certfile cert.pem --keyfile key.pem

Once listening (and part of the cluster's map) each node prints one flushed line
``READY <node-id> <ws-url>`` (with ``--host 0.0.0.0`` the URL names the machine's hostname, or
127.0.0.1 if it does not resolve, and a note on stderr says so). SIGINT or SIGTERM stops every
node and exits 0; so does EOF on ``--parent-fd`` (how
:class:`~topgun.server.process.ProcessCluster` makes nodes die with it).
"""
from __future__ import annotations

import argparse
import gc
import logging
import os
import signal
import sys
import threading
from typing import List, Optional, Sequence

import gevent
from gevent.event import Event

from .node import WILDCARD_HOSTS, Node

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m topgun.server",
                                description="Embedded TopGun dev cluster (development and tests only).")
    p.add_argument("--nodes", type=int, default=1, help="nodes to run in this process (default 1)")
    p.add_argument("--node-id", help="id of the (first) node; default n1 (n1..nN with --nodes)")
    p.add_argument("--port", type=int, default=0,
                   help="port of the first node, then port+1, ...; 0 lets the OS choose (default)")
    p.add_argument("--host", default="127.0.0.1",
                   help="listen address (default 127.0.0.1); 0.0.0.0 listens on every interface and "
                        "announces this machine's hostname (127.0.0.1 if it does not resolve)")
    p.add_argument("--seeds", default="", help="comma-separated ws URLs of nodes to join")
    p.add_argument("--jwt-secret", help="require HS256 JWTs signed with this secret")
    p.add_argument("--strict", action="store_true",
                   help="answer writes for partitions a node does not own with NOT_OWNER")
    p.add_argument("--certfile", help="serve wss:// with this PEM certificate chain (for tests of TLS clients)")
    p.add_argument("--keyfile", help="the certificate's private key (default: inside --certfile)")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for joining")
    p.add_argument("--parent-fd", type=int, help="exit when this descriptor reads EOF (the read end of a "
                   "pipe whose write end the parent holds: the node dies with its parent)")
    p.add_argument("-v", "--verbose", action="count", default=0, help="-v info, -vv debug")
    return p


_PARENT_GONE_GRACE_S = 10.0


def _exit_with_parent(fd: int) -> None:
    """Watch ``fd`` on a daemon thread: at EOF send ourselves SIGTERM, and exit hard if that hangs.

    A thread, not a greenlet, so a busy hub cannot delay it; it only reads and signals.
    """
    def watch() -> None:
        try:
            while os.read(fd, 4096):
                pass
        except OSError:
            pass
        os.kill(os.getpid(), signal.SIGTERM)    # the normal, clean way out (see main)
        threading.Event().wait(_PARENT_GONE_GRACE_S)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=[logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)],
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if args.keyfile and not args.certfile:
        print("error: --keyfile needs --certfile", file=sys.stderr)
        return 2
    if args.nodes < 1:
        print("error: --nodes must be >= 1", file=sys.stderr)
        return 2
    seeds: List[str] = [s.strip() for s in args.seeds.split(",") if s.strip()]
    if args.node_id and args.nodes > 1:
        ids = [f"{args.node_id}-{i}" for i in range(1, args.nodes + 1)]
    else:
        ids = [args.node_id] if args.node_id else [f"n{i}" for i in range(1, args.nodes + 1)]
    # A server process allocates and drops many small containers per write; collecting the
    # young generation every 50 000 allocations instead of 700 cuts its CPU per write by a third.
    gc.set_threshold(50_000, 20, 100)
    stop = Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        gevent.signal_handler(sig, stop.set)
    if args.parent_fd is not None:
        _exit_with_parent(args.parent_fd)
    nodes: List[Node] = []
    try:
        for i, node_id in enumerate(ids):
            port = args.port + i if args.port else 0
            node = Node(node_id, host=args.host, port=port, seeds=seeds, jwt_secret=args.jwt_secret,
                        strict=args.strict, certfile=args.certfile, keyfile=args.keyfile)
            nodes.append(node)
            node.start(timeout=args.timeout)
            if i == 0 and args.host in WILDCARD_HOSTS:
                print(f"note: listening on every interface ({args.host or '*'}); announcing {node.url}, which "
                      "clients on other machines can use only if that name resolves to this machine there "
                      "(cluster mode elsewhere: ClusterConfig(endpoint_map=...))", file=sys.stderr, flush=True)
            print(f"READY {node.node_id} {node.url}", flush=True)
            if not seeds:
                seeds = [node.url]
        gc.freeze()  # startup objects live forever: keep them out of every later collection
        stop.wait()
    except (TimeoutError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        for node in reversed(nodes):
            node.stop()
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # Every node is stopped; skip tearing down a heap of millions of records, which can take
    # seconds and makes a SIGTERM look ignored.
    os._exit(code)
