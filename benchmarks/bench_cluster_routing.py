"""Smart versus dumb routing: the client against the embedded 3-node cluster (processes).

Smart routing sends each key to its owner; dumb routing sends everything through one node,
which forwards. Median of 3 interleaved runs; writes results/cluster_routing.{json,md}.

    python benchmarks/bench_cluster_routing.py [--duration 30] [--rounds 3]
"""
from __future__ import annotations

import argparse

from bench_lib import run_matrix


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--duration", default="30")
    p.add_argument("--rounds", type=int, default=3)
    a = p.parse_args()
    common = ["throughput", "--embedded", "3", "--users", "50", "--duration", a.duration, "--no-default-thresholds"]
    run_matrix("cluster_routing", [
        ("smart, set", [*common, "--smart"]),
        ("dumb, set", [*common, "--dumb"]),
        ("smart, put_all 100", [*common, "--smart", "--batch-size", "100"]),
        ("dumb, put_all 100", [*common, "--dumb", "--batch-size", "100"]),
    ], rounds=a.rounds, baseline="smart, set")


if __name__ == "__main__":
    main()
