"""Failover under load: SIGKILL a node of the embedded 3-node cluster (processes) mid-run, restart it.

Reports recovery time per kill (until every user is writing again), its p95 over users, and
whether every acknowledged write is readable at the end (lost). Median of 3 runs; writes
results/failover.{json,md}.

    python benchmarks/bench_failover.py [--duration 30] [--kills 3] [--rounds 3]
"""
from __future__ import annotations

import argparse

from bench_lib import run_matrix


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--duration", default="30")
    p.add_argument("--kills", default="3")
    p.add_argument("--rounds", type=int, default=3)
    a = p.parse_args()
    common = ["failover", "--embedded", "3", "--users", "50", "--duration", a.duration, "--kills", a.kills,
              "--down-for", "2"]
    run_matrix("failover", [
        ("failover, 50 users, set", [*common, "--keys", "20000"]),
        ("failover, 50 users, put_all 20", [*common, "--keys", "100000", "--batch-size", "20"]),
    ], rounds=a.rounds)


if __name__ == "__main__":
    main()
