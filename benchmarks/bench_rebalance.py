"""Rebalance under load: a fourth node joins the embedded 3-node cluster (processes) at 25 % of the run.

Checks success rate and p95 against the k6 budget (98 %, 100 ms) and that every acknowledged
write is readable at the end. Median of 3 runs; writes results/rebalance.{json,md}.

    python benchmarks/bench_rebalance.py [--duration 30] [--rounds 3]
"""
from __future__ import annotations

import argparse

from bench_lib import run_matrix


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--duration", default="30")
    p.add_argument("--rounds", type=int, default=3)
    a = p.parse_args()
    run_matrix("rebalance", [
        ("rebalance, 50 users, set", ["rebalance", "--embedded", "3", "--users", "50", "--duration", a.duration,
                                      "--keys", "20000"]),
    ], rounds=a.rounds)


if __name__ == "__main__":
    main()
