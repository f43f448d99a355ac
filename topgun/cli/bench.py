"""``topgun bench SCENARIO``: load and chaos tests through the real client (also ``python -m topgun.loadtest.bench``).

Scenarios: throughput, failover, rebalance (cluster) and single (one node). Prints a progress
line per second and a final table; ``--json FILE`` writes every figure; ``--threshold`` makes
the exit code 1 when a figure misses its budget (2 for bad arguments or a target that does
not start). This entry point monkey-patches the process with gevent (the library never does).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, List

from ..protocol.fastpath import WRITE_CONCERNS

__all__ = ["register", "run", "build_options"]

EXIT_OK, EXIT_THRESHOLDS, EXIT_ERROR = 0, 1, 2


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ..loadtest.scenarios import SCENARIOS
    p.add_argument("scenario", choices=SCENARIOS, help="what to run")
    where = p.add_argument_group("target (give one)")
    where.add_argument("--url", help="one server, ws://host:port[/ws]")
    where.add_argument("--seeds", action="append", default=[], metavar="URL[,URL...]",
                       help="a running cluster's seed URLs (repeat or comma-separate)")
    where.add_argument("--embedded", type=int, default=0, metavar="N",
                       help="start an embedded dev cluster of N nodes, one process per node")
    where.add_argument("--in-process", action="store_true",
                       help="with --embedded: run the nodes inside this process instead")
    where.add_argument("--real-server", action="store_true",
                       help="start one real topgun-server 2.2.0 node (single-server baseline)")
    load = p.add_argument_group("load")
    load.add_argument("--users", type=int, default=50, help="concurrent users (greenlets), default 50")
    load.add_argument("--duration", type=float, default=30.0, help="seconds of load, default 30")
    load.add_argument("--ramp-up", type=float, default=0.0, help="seconds over which users start, default 0")
    load.add_argument("--keys", type=int, default=100_000, help="key space, default 100000 (split between users)")
    load.add_argument("--value-size", type=int, default=100, help="approximate value size in bytes, default 100")
    load.add_argument("--batch-size", type=int, default=1,
                      help="keys per call: 1 = set(), N = put_all() of N keys (counted as N ops)")
    load.add_argument("--pacing", default="none",
                      help="pause between a user's calls: none, constant:S, between:LOW:HIGH, rate:N")
    load.add_argument("--map", dest="map_name", default="bench", help="map name, default bench")
    load.add_argument("--seed", type=int, default=1, help="random seed of the users")
    client = p.add_argument_group("client")
    client.add_argument("--write-concern", choices=WRITE_CONCERNS,
                        help="default: the client's (APPLIED on one server, REPLICATED on a cluster)")
    routing = client.add_mutually_exclusive_group()
    routing.add_argument("--smart", dest="smart_routing", action="store_true", default=True,
                         help="route each key to its owner (default)")
    routing.add_argument("--dumb", dest="smart_routing", action="store_false",
                         help="send everything through any node (the server forwards)")
    client.add_argument("--connections-per-node", type=int, default=1)
    client.add_argument("--timeout", dest="request_timeout", type=float, default=10.0,
                        help="deadline of each call in seconds, default 10")
    client.add_argument("--ca-file", metavar="PATH",
                        help="a PEM bundle of the CA certificates wss:// trusts, for a private CA "
                             "(default: $TOPGUN_CA_FILE; else the system trust store)")
    chaos = p.add_argument_group("chaos")
    chaos.add_argument("--kills", type=int, default=1, help="failover: how many kills, evenly spaced")
    chaos.add_argument("--down-for", type=float, default=2.0, help="failover: seconds a node stays down")
    chaos.add_argument("--add-at", type=float, help="rebalance: when the node joins (s; default 25%% of duration)")
    verify = chaos.add_mutually_exclusive_group()
    verify.add_argument("--verify", dest="verify", action="store_true", default=None,
                        help="read every acknowledged key back at the end (default for failover, rebalance)")
    verify.add_argument("--no-verify", dest="verify", action="store_false")
    report = p.add_argument_group("report")
    report.add_argument("--threshold", dest="thresholds", action="append", default=[], metavar="EXPR",
                        help="e.g. 'ops_per_s>50000', 'p95_ms<50' (repeatable); exit 1 when not met")
    report.add_argument("--no-default-thresholds", dest="default_thresholds", action="store_false",
                        help="drop the scenario's k6 budgets; keep only --threshold ones")
    report.add_argument("--json", metavar="FILE", help="write every figure to FILE ('-' for stdout)")
    report.add_argument("--label", default="", help="a free-form label stored in the JSON")
    report.add_argument("--tick", type=float, default=1.0, help="seconds between progress lines")
    report.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    report.add_argument("--server-pid", dest="server_pids", type=int, action="append", default=[], metavar="PID",
                        help="also report the CPU use of this server process (repeatable)")


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("bench", help="load and chaos tests through the real client",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    p.set_defaults(func=run)


def build_options(args: argparse.Namespace) -> Any:
    from ..loadtest.scenarios import BenchOptions
    from ..transport import trust
    seeds: List[str] = [s for chunk in args.seeds for s in chunk.split(",") if s]
    ca_file = args.ca_file or os.environ.get(trust.CA_FILE_ENV) or None
    if ca_file:  # a bad file is a bad argument: say so before any target starts
        trust.ca_file_context(ca_file, source="--ca-file" if args.ca_file else trust.CA_FILE_ENV)
    return BenchOptions(
        scenario=args.scenario, url=args.url, seeds=tuple(seeds), embedded=args.embedded,
        in_process=args.in_process, real_server=args.real_server, users=args.users, duration=args.duration,
        keys=args.keys, value_size=args.value_size, batch_size=args.batch_size, write_concern=args.write_concern,
        smart_routing=args.smart_routing, connections_per_node=args.connections_per_node, map_name=args.map_name,
        ramp_up=args.ramp_up, pacing=args.pacing, request_timeout=args.request_timeout, verify=args.verify,
        kills=args.kills, down_for=args.down_for, add_at=args.add_at, thresholds=tuple(args.thresholds),
        default_thresholds=args.default_thresholds, tick=args.tick, seed=args.seed, label=args.label,
        server_pids=tuple(args.server_pids), ca_file=ca_file)


def run(args: argparse.Namespace) -> int:
    from gevent import monkey
    if not monkey.is_module_patched("socket"):
        # Allowed here (a load-tester entry point): node processes are spawned and waited for
        # while the users run, and nothing in the process may block the hub.
        monkey.patch_all()
    from ..errors import ConfigurationError
    from ..loadtest.report import format_table
    from ..loadtest.scenarios import run_bench
    try:
        opts = build_options(args)
        doc = run_bench(opts, out=None if args.quiet else sys.stderr)
    except ConfigurationError as exc:
        print(f"topgun bench: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except Exception as exc:  # a target that would not start, a client that could not connect
        print(f"topgun bench: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_ERROR
    print(format_table(doc))
    if args.json:
        text = json.dumps(doc, indent=2, sort_keys=False, default=str)
        if args.json == "-":
            print(text)
        else:
            with open(args.json, "w", encoding="utf-8") as f:
                f.write(text + "\n")
    return EXIT_OK if doc["passed"] else EXIT_THRESHOLDS
