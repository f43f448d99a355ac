"""Measure cluster failover: SIGKILL a node under steady write load, time until its keys accept writes.

Runs the system test ``tests/system/cluster/test_cluster_processes.py::test_sigkill_under_steady_load_loses_no_write``
(3 dev-server processes on 127.0.0.1, default client settings, 45 keys with pipelined writes)
for each owner-down policy, ``--rounds`` kills per run (a different node each round, restarted
after), and prints a Markdown summary. For each kill and each key the killed node owned, the
time is from the SIGKILL to the first acknowledgement of a write submitted after it.

    python benchmarks/failover.py --rounds 10 > benchmarks/failover_results.md

``--real`` runs ``REAL_TEST`` (tests/system/realcluster, the steady-load kill test) instead: a real
2-node TopGun 2.2.0 cluster (``topgun.testing.realcluster``), 40 keys, smart routing, default client
settings, ``--rounds`` SIGKILLs alternating r1/r2, the victim rejoining after each.

    python benchmarks/failover.py --real --rounds 8
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, List

ROOT = Path(__file__).resolve().parents[1]
TEST = "tests/system/cluster/test_cluster_processes.py::test_sigkill_under_steady_load_loses_no_write"
REAL_TEST = ("tests/system/realcluster/test_real_cluster.py::"
             "test_steady_writes_through_a_kill_none_failed_none_lost_on_the_survivor")


def pct(values: List[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, int(round(p / 100.0 * (len(s) - 1)))))]


def run(policy: str, rounds: int, test: str = TEST) -> List[Dict]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "results.jsonl"
        env = dict(os.environ, TOPGUN_FAILOVER_RESULTS=str(out), TOPGUN_FAILOVER_ROUNDS=str(rounds),
                   TOPGUN_OWNER_DOWN=policy)
        proc = subprocess.run([sys.executable, "-m", "pytest", test, "-q", "-p", "no:cacheprovider"],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
        if proc.returncode != 0:
            sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-2000:])
            raise SystemExit(f"the failover test failed for owner_down={policy}")
        return [json.loads(line) for line in out.read_text().splitlines()]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10, help="kills per configuration (default 10)")
    parser.add_argument("--real", action="store_true", help="a real 2-node TopGun 2.2.0 cluster (smart/wait only)")
    args = parser.parse_args()
    ms = lambda xs: " / ".join(f"{pct(xs, p) * 1000:.0f}" for p in (50, 95, 100))  # noqa: E731
    if args.real:
        rows = run("wait", args.rounds, REAL_TEST)
        first = [r["first"] for r in rows]
        every = [r["all"] for r in rows]
        per_key = [t for r in rows for t in r["per_key"]]
        print("| cluster | kills (victims) | first write after kill: p50 / p95 / max | "
              "every key of the node: p50 / p95 / max | all per-key times: p95 |")
        print("|---|---|---|---|---|")
        print(f"| real TopGun 2.2.0, 2 nodes, smart/wait | {len(rows)} ({' '.join(r['victim'] for r in rows)}) "
              f"| {ms(first)} ms | {ms(every)} ms | {pct(per_key, 95) * 1000:.0f} ms ({len(per_key)} key-kills) |")
        return 0
    print("| routing | owner down | kills | first write after kill: p50 / p95 / max | "
          "every key of the node: p50 / p95 / max | all per-key times: p95 |")
    print("|---|---|---|---|---|---|")
    for policy in ("wait", "forward"):
        results = run(policy, args.rounds)
        for smart in (True, False):
            rows = [r for r in results if r["smart"] is smart]
            first = [r["first"] for r in rows]
            every = [r["all"] for r in rows]
            per_key = [t for r in rows for t in r["per_key"]]
            print(f"| {'smart' if smart else 'dumb'} | {policy} | {len(rows)} | {ms(first)} ms | {ms(every)} ms "
                  f"| {pct(per_key, 95) * 1000:.0f} ms ({len(per_key)} key-kills) |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
