"""``topgun cluster status``: the cluster as the client sees it, as JSON.

Prints the partition map version, and per node its URL, state, status, how many of the 271
partitions it owns and the client's open connections to it. Always connects in cluster mode
(a standalone server shows as one node owning everything, map version 0).
"""
from __future__ import annotations

import argparse
from typing import Any, Dict

from .kv import EXIT_OK, add_connection_arguments, connect, dump, run_command

__all__ = ["register", "run_status", "status"]


def status(client: Any) -> Dict[str, Any]:
    cluster = client.cluster
    nodes = {}
    for node_id, state in sorted(cluster.node_states().items()):
        nodes[node_id] = {"url": state.url, "state": state.state, "status": state.status,
                          "partitions": state.partitions, "connections": state.open_connections}
        if state.last_error:
            nodes[node_id]["last_error"] = str(state.last_error)
    return {"map_version": cluster.map_version, "partitions": sum(n["partitions"] for n in nodes.values()),
            "nodes": nodes}


def run_status(args: argparse.Namespace) -> int:
    def body() -> int:
        with connect(args, cluster=True) as client:
            client.ping(timeout=args.timeout)
            print(dump(status(client), pretty=not args.compact))
        return EXIT_OK
    return run_command(body)


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("cluster", help="cluster commands (status)", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cluster_command", metavar="COMMAND", required=True)
    st = sub.add_parser("status", help="nodes, partitions per node, map version (JSON)")
    st.add_argument("--compact", action="store_true", help="one line of JSON")
    add_connection_arguments(st)
    st.set_defaults(func=run_status)
