"""Headline throughput: the client against the embedded 3-node cluster (one process per node), 50 users.

Baselines in the same rounds: the single scenario against one real topgun-server 2.2.0 node and
against one embedded node. Median of 3 interleaved runs; writes results/throughput.{json,md}.

    python benchmarks/bench_throughput.py [--duration 60] [--rounds 3]
"""
from __future__ import annotations

import argparse

from bench_lib import run_matrix


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--duration", default="60")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--users", default="50")
    a = p.parse_args()
    common = ["--users", a.users, "--duration", a.duration, "--no-default-thresholds"]
    run_matrix("throughput", [
        ("real server, single", ["single", "--real-server", *common]),
        ("embedded 1 node, single", ["single", "--embedded", "1", *common]),
        ("embedded 3 nodes, throughput", ["throughput", "--embedded", "3", *common]),
        ("embedded 3 nodes, throughput, put_all 20", ["throughput", "--embedded", "3", "--batch-size", "20",
                                                      *common]),
        ("embedded 3 nodes, throughput, put_all 100", ["throughput", "--embedded", "3", "--batch-size", "100",
                                                       *common]),
    ], rounds=a.rounds, baseline="real server, single")


if __name__ == "__main__":
    main()
